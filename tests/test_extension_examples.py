"""The three extension points of docs/architecture.md, each run from its worked example in examples/."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
sys.path.insert(0, str(EXAMPLES))

import toy_game  # noqa: E402
from toy_backend import FirstLegalBackend  # noqa: E402

from llmmarl.agents.scripted import scripted_policies  # noqa: E402
from llmmarl.agents.specs import LLMAgentSpec, ScriptedAgentSpec  # noqa: E402
from llmmarl.envs import check_text_env, list_envs, make, register_game  # noqa: E402
from llmmarl.records import summarise  # noqa: E402
from llmmarl.runner import Match, Runner, seatings  # noqa: E402

register_game(toy_game.GAME)  # the one line that adds a game of your own: its env and its bots
RANDOM = ScriptedAgentSpec(name="random", policy="random")


def _matches(env: str, agents, games: int) -> list[Match]:
    probe = make(env)
    return [Match(game_id=i, env=env, seats=s, seed=i) for i, s in enumerate(seatings(probe, agents, games))]


def test_a_game_registered_by_name_passes_the_checker_and_is_played():
    assert "toy_nim" in {spec.name for spec in list_envs()}
    env = make("toy_nim", stones=7)
    assert isinstance(env, toy_game.Nim) and env.start == 7
    check_text_env(env, episodes=5)
    episodes = Runner(progress=False).play(
        _matches("toy_nim", [RANDOM, ScriptedAgentSpec(name="r2", policy="random")], 8)
    )
    assert not any(ep.error for ep in episodes)
    assert all(sorted(ep.returns.values()) == [-1.0, 1.0] for ep in episodes)  # Nim has no draw


def test_a_game_package_brings_its_bots():
    assert scripted_policies()["perfect_nim"] == "perfect one-pile Nim (toy_nim only)"
    perfect = ScriptedAgentSpec(name="perfect", policy="perfect_nim")
    # From 5 stones the first player wins by leaving 3: the perfect player wins every game it opens.
    matches = [
        Match(game_id=i, env="toy_nim", seats={"player_0": perfect, "player_1": RANDOM}, seed=i) for i in range(8)
    ]
    episodes = Runner(progress=False).play(matches)
    assert all(ep.returns == {"player_0": 1.0, "player_1": -1.0} for ep in episodes)


def test_a_backend_answers_llm_agents_in_batches():
    backend = FirstLegalBackend()
    llm = LLMAgentSpec(name="first-legal")
    episodes = Runner(backend, concurrency=8, progress=False).play(_matches("toy_nim", [llm, RANDOM], 8))
    summary = {s.player: s for s in summarise(episodes)}["first-legal"]
    assert summary.games == 8 and summary.invalid_rate == 0.0  # prompts rendered, answers parsed, all legal
    llm_turns = sum(t.player == "first-legal" for ep in episodes for t in ep.turns)
    assert sum(backend.calls) == llm_turns and len(backend.calls) < llm_turns  # a round's decisions in one call
    turn = next(t for ep in episodes for t in ep.turns if t.player == "first-legal")
    assert turn.action == "1" and "stones left" in turn.attempts[0].messages[-1]["content"]


def test_the_example_backend_is_a_kind_by_its_module_name(tmp_path):
    from typer.testing import CliRunner

    from llmmarl.cli import app

    out = tmp_path / "games.jsonl"
    args = ["play", "tictactoe_v3", "--agents", "llm,random", "--games", "2", "--show", "0", "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--backend", "toy_backend:build"])
    assert result.exit_code == 0, result.output
    games = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(games) == 2 and not any(g.get("error") for g in games)


TOY_RUN = """
env: tictactoe_v3
model: tiny
algorithm: toy_algorithm:ToyReinforce
toy_reinforce: {baseline: none}
learners: [{name: toe, lora: {r: 4}}]
setting: fixed_opponents
opponents: [random]
games_per_update: 2
group_size: 1
steps: 1
max_new_tokens: 16
learning_rate: 0.01
eval_games: 0
threads: 1
"""


def test_llmmarl_train_loads_an_algorithm_from_outside_the_package_and_trains_with_it(tmp_path):
    """examples/toy_algorithm.py, named as module:Class in a config, trains through the command line in a process
    of its own that finds it on PYTHONPATH only."""
    from safetensors.torch import load_file

    config = tmp_path / "toy.yaml"
    config.write_text(TOY_RUN + f"output_dir: {tmp_path / 'run'}\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(EXAMPLES), str(EXAMPLES.parent)]), "OMP_NUM_THREADS": "1"}
    env["TRL_EXPERIMENTAL_SILENCE"] = "1"
    proc = subprocess.run(
        [sys.executable, "-m", "llmmarl.cli", "train", str(config)], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (line,) = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    row = json.loads(line)
    logged = row["learners"]["toe"]
    assert row["step"] == 1 and logged["toy/advantage_abs"] > 0 and logged["grad_norm"] > 0
    assert logged["toy/answer_logp"] < 0 and logged["loss"] != 0.0
    manifest = json.loads((tmp_path / "run" / "adapters" / "manifest.json").read_text())
    entry = manifest["adapters"][0]
    assert entry["algorithm"] == "toy_algorithm:ToyReinforce"
    assert entry["config"]["toy_reinforce"] == {"baseline": "none"}  # its block, under its name
    # LoRA starts with B = 0: a B that moved is an adapter the step trained.
    weights = load_file(tmp_path / "run" / "adapters" / "toe" / "adapter_model.safetensors")
    trained = [k for k, w in weights.items() if "lora_B" in k and bool(w.abs().sum() > 0)]
    assert trained, sorted(weights)


def test_an_algorithm_from_outside_the_package_brings_its_settings_block():
    import toy_algorithm

    from llmmarl.train import TrainConfig

    base = yaml.safe_load(TOY_RUN)
    cfg = TrainConfig.model_validate({k: v for k, v in base.items() if k != "toy_reinforce"})
    assert cfg.algorithm_settings() == toy_algorithm.ToySettings(baseline="mean")  # its defaults, recorded
    assert yaml.safe_load(cfg.to_yaml())["toy_reinforce"] == {"baseline": "mean"}
    for bad, message in (
        ({"toy_reinforce": {"baseline": "median"}}, r"toy_reinforce\.baseline: Input should be 'mean' or 'none'"),
        ({"toy_reinforce": {"gamma": 1}}, r"toy_reinforce\.gamma: Extra inputs are not permitted"),
        ({"ppo": {}}, "ppo: settings are for algorithm: ppo"),
        ({"algorithm": "toy_algorithm:Nope"}, "cannot load algorithm 'toy_algorithm:Nope': AttributeError"),
        ({"algorithm": "toy_algorithm:seat_mean"}, "not a MultiAgentTrainer subclass"),
        ({"algorithm": "no_such_module:X"}, "cannot load algorithm 'no_such_module:X': ModuleNotFoundError"),
    ):
        with pytest.raises(ValueError, match=message):
            TrainConfig.model_validate({**base, **bad})


def test_an_unknown_algorithm_is_a_one_line_error():
    from llmmarl.train import TrainConfig

    with pytest.raises(ValueError, match=r"unknown algorithm 'a2c'; registered: .*grpo.*ppo"):
        TrainConfig.model_validate({"env": "tictactoe_v3", "algorithm": "a2c", "learners": [{"name": "ann"}]})
