"""The three extension points of docs/architecture.md, each run from its worked example in examples/."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

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


def test_an_algorithm_registered_by_name_trains_through_the_shared_loop(tmp_path):
    import toy_algorithm  # noqa: F401 - registers toy_reinforce

    from llmmarl.train import TrainConfig, algorithms, train

    assert {"grpo", "ppo", "toy_reinforce"} <= set(algorithms())
    cfg = TrainConfig.model_validate(
        {
            "env": "toy_nim",
            "model": "tiny",
            "algorithm": "toy_reinforce",
            "learners": [{"name": "nimmer", "lora": {"r": 4}}],
            "setting": "fixed_opponents",
            "opponents": ["random"],
            "games_per_update": 2,
            "group_size": 1,
            "steps": 1,
            "max_new_tokens": 16,
            "learning_rate": 1e-2,
            "eval_games": 0,
            "output_dir": str(tmp_path / "run"),
            "threads": 1,
        }
    )
    trainer = train(cfg, progress=False)
    assert type(trainer).__name__ == "ToyReinforce" and trainer.step == 1
    (line,) = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    logged = json.loads(line)["learners"]["nimmer"]
    assert logged["samples"] > 0 and logged["loss"] != 0.0
    manifest = json.loads((tmp_path / "run" / "adapters" / "manifest.json").read_text())
    assert manifest["adapters"][0]["algorithm"] == "toy_reinforce"


def test_an_unknown_algorithm_is_a_one_line_error():
    from llmmarl.train import TrainConfig

    with pytest.raises(ValueError, match=r"unknown algorithm 'a2c'; registered: .*grpo.*ppo"):
        TrainConfig.model_validate({"env": "tictactoe_v3", "algorithm": "a2c", "learners": [{"name": "ann"}]})
