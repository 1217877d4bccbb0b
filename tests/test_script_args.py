"""The reference scripts' command lines build the runs they always built (tests/data/script_configs.json)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from script_configs import COMMANDS, FIXTURE, capture

from llmmarl.train.config import TrainConfig
from llmmarl.train.script_args import ALIASES, Alias, ScriptParser, field_info

EXPECTED = json.loads(FIXTURE.read_text())
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("script", "command"), [(s, c) for s, commands in COMMANDS.items() for c in commands])
def test_a_command_line_builds_the_same_configs_as_before(script: str, command: str, tmp_path: Path) -> None:
    got, expected = capture(script, command, tmp_path), EXPECTED[script][command]
    assert got["exit"] == expected["exit"]
    assert len(got["configs"]) == len(expected["configs"])
    for new, old in zip(got["configs"], expected["configs"], strict=True):
        changed = {k: (old.get(k), new.get(k)) for k in old.keys() | new.keys() if old.get(k) != new.get(k)}
        assert not changed, f"(before, now) of the keys that differ: {changed}"


# A script's run is its config file, and each documented flag one change of it: `llmmarl train` on the same file, with
# the same --set changes, runs what the script runs.
SELF_PLAY = ["setting=self_play", "learners=[{name: ttt_self}]", "opponents=[]", "output_dir=runs/train/ttt_self"]
AS_CONFIG_FILE = [
    ("train_kuhn.py", "", "train_kuhn.yaml", []),
    (
        "train_kuhn.py",
        "--opponent kuhn_nash --nash-conv 0",
        "train_kuhn.yaml",
        ["opponents=[kuhn_nash]", "eval_measures=[]"],
    ),
    ("train_signal.py", "", "train_signal.yaml", []),
    ("train_signal.py", "--no-messages", "train_signal_no_messages.yaml", []),
    ("train_tictactoe_selfplay.py", "", "train_tictactoe.yaml", []),
    ("train_tictactoe_selfplay.py", "--opponent self", "train_tictactoe.yaml", SELF_PLAY),
]


@pytest.mark.parametrize(("script", "command", "config", "changes"), AS_CONFIG_FILE)
def test_a_scripts_run_is_its_config_file_and_its_flags_changes(
    script: str, command: str, config: str, changes: list[str], tmp_path: Path
) -> None:
    (got,) = _run(script, command, tmp_path)
    expected = TrainConfig.from_yaml(ROOT / "configs" / config, changes).model_dump(mode="json")
    changed = {k: (expected.get(k), got.get(k)) for k in expected.keys() | got.keys() if expected.get(k) != got.get(k)}
    assert not changed, f"(config file, script) of the keys that differ: {changed}"


def test_a_config_file_that_cannot_be_read_ends_the_script_with_its_name(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"nope\.yaml"):
        ScriptParser("doc", tmp_path / "nope.yaml", aliases="--steps")
    (tmp_path / "list.yaml").write_text("- steps\n")
    with pytest.raises(SystemExit, match="expected a mapping"):
        ScriptParser("doc", tmp_path / "list.yaml", aliases="--steps")


def _run(script: str, command: str, tmp_path: Path) -> list[dict]:
    result = capture(script, command, tmp_path)
    assert result["exit"] == 0, result
    return result["configs"]


@pytest.mark.parametrize("script", ["train_tictactoe_selfplay.py", "train_signal.py", "train_kuhn.py"])
def test_under_smoke_the_flags_given_win_and_set_comes_last(script: str, tmp_path: Path) -> None:
    (cfg,) = _run(script, "--smoke --steps 3 --lr 2e-4 --set learning_rate=3e-4 --set grpo.beta=0.01", tmp_path)
    assert (cfg["steps"], cfg["games_per_update"], cfg["max_new_tokens"]) == (3, 4, 32)  # smoke sizes, but --steps
    assert cfg["learning_rate"] == 3e-4 and cfg["grpo"]["beta"] == 0.01
    assert cfg["output_dir"].endswith("-smoke")


def test_a_smoke_run_starts_afresh_unless_it_is_continued(tmp_path: Path) -> None:
    _run("train_kuhn.py", "--smoke", tmp_path)  # makes the folder, marked as a smoke run's
    old = tmp_path / "runs" / "train" / "kuhn-smoke" / "old.txt"
    old.write_text("x")
    _run("train_kuhn.py", "--smoke --resume", tmp_path)
    assert old.exists()
    _run("train_kuhn.py", "--smoke", tmp_path)
    assert not old.exists()


def test_compare_sends_an_algorithm_block_only_to_that_algorithms_runs(tmp_path: Path) -> None:
    configs = _run(
        "compare_algorithms.py", "--smoke --critic-lr 3e-4 --set ppo.vf_coef=1.0 --set grpo.beta=0.1", tmp_path
    )
    by_dir = {Path(c["output_dir"]).name: c for c in configs}
    assert "ppo" not in by_dir["grpo"] and by_dir["grpo"]["grpo"]["beta"] == 0.1
    for name, critic in (("ppo", "decentralised"), ("ppo_central", "centralised")):
        assert "grpo" not in by_dir[name]
        assert by_dir[name]["ppo"]["critic"] == critic
        assert (by_dir[name]["ppo"]["critic_lr"], by_dir[name]["ppo"]["vf_coef"]) == (3e-4, 1.0)


def test_help_states_the_recipe_and_each_alias_key_with_its_description() -> None:
    recipe = {"env": "kuhn_poker", "learners": [{"name": "kuhn"}], "learning_rate": 1e-4, "output_dir": "runs/x"}
    text = ScriptParser("doc", recipe, aliases="--lr --no-reask --steps --credit").format_help()
    squashed = " ".join(text.split())
    assert "learning_rate (default 0.0001): AdamW learning rate of every adapter (constant)." in squashed
    assert "steps (default 100, --smoke 2): Updates to run." in squashed  # TrainConfig's default: not in the recipe
    assert "Sets reask: false." in squashed and "{group,role,agent}" in squashed
    assert "learning_rate: 0.0001" in text and "output_dir: runs/x" in text  # the recipe itself, in the epilog


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--set", "seed"], "use KEY=VALUE"),
        (["--set", "nope=1"], "nope: Extra inputs are not permitted"),
        (["--steps", "x"], "invalid int value"),
        (["--set", "games_per_update=6"], "must be a multiple of group_size (4)"),
    ],
)
def test_bad_input_is_a_usage_error_that_says_why(argv: list[str], message: str, capsys, tmp_path: Path) -> None:
    parser = ScriptParser("doc", {"env": "kuhn_poker", "learners": [{"name": "kuhn"}]}, aliases="--steps")
    with pytest.raises(SystemExit) as exit_:
        parser.validate(parser.config(parser.parse_args([*argv, "--output-dir", str(tmp_path)])))
    assert exit_.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("alias", list(ALIASES.values()), ids=list(ALIASES))
def test_every_alias_names_a_config_field(alias: Alias) -> None:
    info = field_info(alias.key)
    assert info is not None and info.description


@pytest.mark.parametrize("how", ["--output-dir {dir}", "--set output_dir={dir}"])
def test_a_smoke_run_never_deletes_a_folder_it_did_not_make(how: str, tmp_path: Path) -> None:
    """A real run's folder named by mistake: the script refuses before anything is touched (a real subprocess)."""
    run = tmp_path / "real-run"
    state = run / "checkpoints" / "checkpoint-3" / "state.json"
    state.parent.mkdir(parents=True)
    state.write_text('{"step": 3}')
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    command = [sys.executable, str(ROOT / "scripts" / "train_kuhn.py"), "--smoke", "--model", "tiny"]
    command += how.format(dir=run).split()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    except subprocess.TimeoutExpired:  # it went on to train, in a folder it had no business emptying
        done = None
    assert state.read_text() == '{"step": 3}' and (run / "metrics.jsonl").exists()
    assert done is not None and done.returncode == 2
    assert "was not made by a smoke run" in done.stderr and "nothing was deleted" in done.stderr
