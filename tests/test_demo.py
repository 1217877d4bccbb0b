"""The first run (`llmmarl demo`) and the terminal tables: real games on the tiny model, tables read at 80 columns."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from llmmarl.agents.specs import ScriptedAgentSpec
from llmmarl.cli import app
from llmmarl.demo import OPPONENT, contenders, demo_matches, demo_table, published_eval, run_demo
from llmmarl.records import AgentSummary
from llmmarl.runner import Match, Runner
from llmmarl.terminal import summary_table


@pytest.fixture(scope="module")
def tiny_adapter(tmp_path_factory):
    """A random non-zero LoRA adapter for the tiny model, with a manifest entry as scripts/publish_adapter.py writes."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from llmmarl.models import resolve_model

    root = tmp_path_factory.mktemp("adapters")
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(resolve_model("tiny"))
    cfg = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(base, cfg).save_pretrained(root / "toy")
    entry = {"name": "toy", "path": "toy", "eval": {"toy vs random": {"return": 0.25, "ci95": 0.1, "games": 400.0}}}
    (root / "manifest.json").write_text(json.dumps({"adapters": [entry]}))
    return root / "toy"


def _lines(renderable) -> list[str]:
    console = Console(width=80, record=True, file=open("/dev/null", "w"))  # noqa: SIM115 - closed with the console
    console.print(renderable)
    return console.export_text().splitlines()


def test_every_contender_plays_the_same_games_against_random():
    players = contenders("adapters/x")
    matches = demo_matches(players, games=6, seed=3)
    assert [c.spec.name for c in players] == ["random", "base", "base+grammar", "x"]
    assert len(matches) == 24
    by_player = {c.spec.name: [m for m in matches if str(m.game_id).startswith(f"{c.spec.name}/")] for c in players}
    seeds = {name: [m.seed for m in ms] for name, ms in by_player.items()}
    assert len({tuple(s) for s in seeds.values()}) == 1 and len(set(seeds["base"])) == 6
    for name, ms in by_player.items():  # seats alternate: each contender moves first in half the games
        first = [m.seats["player_1"].name for m in ms]
        assert first.count(name) == 3 and first.count(OPPONENT.name) == 3
    assert by_player["base+grammar"][0].seats["player_1"].constrained  # type: ignore[union-attr]


def test_demo_on_the_tiny_model_gives_one_row_per_contender_in_80_columns(tiny_backend, tiny_adapter):
    rows, episodes = run_demo(tiny_backend, contenders(tiny_adapter), games=2, progress=False)
    assert [r.summary.player for r in rows] == ["random", "base", "base+grammar", "toy"]
    assert all(r.summary.games == 2 for r in rows) and not any(ep.error for ep in episodes)
    grammar = next(r for r in rows if r.summary.player == "base+grammar").summary
    assert grammar.invalid_rate == 0.0  # the grammar only lets legal moves through
    lines = _lines(demo_table(rows, title="demo"))
    assert max(len(line) for line in lines) <= 80
    for name in ("random", "base", "base+grammar", "toy"):  # each row on one line, not wrapped
        assert sum(line.strip().startswith(f"{name} ") for line in lines) == 1


def test_the_demo_warns_about_nothing_it_chose(tiny_backend):
    """The demo's own settings are consistent: no turn line dropped for want of tokens, no other UserWarning."""
    players = [c for c in contenders(None) if c.spec.name == "base+grammar"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        rows, episodes = run_demo(tiny_backend, players, games=1, progress=False)
    assert rows[0].summary.games == 1 and not any(ep.error for ep in episodes)
    mine = [t for ep in episodes for t in ep.turns if t.player == "base+grammar"]
    assert mine and all(t.turn and t.turn.predictions for t in mine)  # the grammar kept the PREDICT line


def test_published_eval_reads_the_manifest_and_is_silent_without_one(tiny_adapter, tmp_path):
    assert published_eval(tiny_adapter) == ("toy at publication: +0.250 [+0.150, +0.350] over 400 games, 0.0% invalid")
    assert published_eval(tmp_path / "nowhere") is None
    # with the report it came from: on a line of its own, so neither line wraps at 80 columns
    (tmp_path / "ad").mkdir()
    entry = {
        "path": "ad",
        "report": "reports/x.txt",
        "eval": {"ad vs random": {"return": 0.2, "ci95": 0.1, "games": 9}},
    }
    (tmp_path / "manifest.json").write_text(json.dumps({"adapters": [entry]}))
    lines = published_eval(tmp_path / "ad").splitlines()
    assert lines[1] == "Details: reports/x.txt" and max(len(line) for line in lines) <= 80


def test_cli_demo_runs_and_refuses_a_folder_that_is_not_an_adapter(tiny_adapter, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["demo", "--model", "tiny", "--games", "2", "--adapter", str(tiny_adapter)])
    assert result.exit_code == 0, result.output
    assert "tic-tac-toe vs random: 2 games each" in result.output and "toy at publication" in result.output
    shipped = Path(__file__).resolve().parent.parent / "adapters" / "ttt-grpo"  # made for the default model
    result = runner.invoke(app, ["demo", "--model", "tiny", "--adapter", str(shipped)])
    assert result.exit_code == 1 and "cannot load model 'tiny' with adapter" in result.output
    result = runner.invoke(app, ["demo", "--model", "tiny", "--adapter", str(tmp_path)])
    text = re.sub(r"[\s│╭╮╰╯─]+", " ", result.output)  # typer's error box wraps long paths
    assert result.exit_code == 2 and "not a LoRA adapter folder" in text


def test_summary_table_fits_80_columns_and_drops_empty_columns():
    full = AgentSummary(
        player="a-long-adapter-name",
        games=400,
        mean_return=-0.125,
        ci95=0.0921,
        wins=180,
        draws=20,
        losses=200,
        llm_turns=1500,
        invalid_rate=0.965,
        fallback_rate=0.5,
        prediction_accuracy=0.5,
        predictions_scored=900,
        messages_sent=1234,
        tokens_generated=123456,
    )
    lines = _lines(summary_table([full, AgentSummary(player="random", games=400)]))
    assert max(len(line) for line in lines) <= 80
    assert sum("a-long-adapter-name" in line for line in lines) == 1
    assert "-0.125 ±0.092" in "\n".join(lines) and "96%/50%" in "\n".join(lines)  # the widest table still fits
    scripted = "\n".join(_lines(summary_table([AgentSummary(player="random", games=4, wins=4)])))
    assert "inv/fb" not in scripted and "msgs" not in scripted and "pred." not in scripted


def test_the_progress_bar_moves_before_any_game_ends(capsys):
    """All games in flight at once finish together; the bar still counts decisions round by round."""
    random_ = ScriptedAgentSpec(name="random", policy="random")
    minimax = ScriptedAgentSpec(name="minimax", policy="minimax")
    matches = [
        Match(game_id=i, env="tictactoe_v3", seats={"player_1": random_, "player_2": minimax}, seed=i) for i in range(4)
    ]
    Runner(None, concurrency=4, progress=True).play(matches)
    err = capsys.readouterr().err
    assert "0/4" in err and "decisions=4" in err and "decisions=8" in err  # rounds 1 and 2: no game over yet
