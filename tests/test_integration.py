"""The real default model (SmolLM2-135M-Instruct) plays every curated game, and the CLI's main job runs.

Slow on CPU (minutes): marked `slow`; `make test-fast` skips them. The model mostly answers in the wrong format,
so these also prove that garbage answers end in re-asks and counted fallbacks, never a crash.
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from llmmarl.agents.specs import LLMAgentSpec, ScriptedAgentSpec
from llmmarl.cli import app
from llmmarl.envs import make
from llmmarl.records import summarise
from llmmarl.runner import Match, Runner, seatings

pytestmark = pytest.mark.slow

GAMES = [
    "tictactoe_v3",
    "connect_four_v3",
    "rps_v2",
    "leduc_holdem_v4",
    "hanabi_v5",
    "kuhn_poker",
    "bargaining",
    "signal_v0",
    "openspiel:tic_tac_toe",
    "pettingzoo.classic.rps_v2:parallel_env",
]


@pytest.fixture(scope="module")
def default_backend():
    from llmmarl.backends.transformers import TransformersBackend

    return TransformersBackend("default", seed=0)


def test_every_curated_game_plays_full_games_with_the_real_model(default_backend):
    llm = LLMAgentSpec(name="llm", max_new_tokens=24, temperature=1.0)
    rnd = ScriptedAgentSpec(name="random", policy="random")
    matches = []
    for name in GAMES:
        env = make(name)
        cooperative = len(set(env.teams.values())) == 1
        for i, seats in enumerate(seatings(env, [llm] if cooperative else [llm, rnd], 2)):
            matches.append(Match(game_id=f"{name}/{i}", env=name, seats=seats, seed=i))
    episodes = Runner(default_backend, concurrency=len(matches), progress=False).play(matches)
    assert len(episodes) == len(matches)
    assert [e.game_id for e in episodes if e.error] == []
    for e in episodes:
        assert set(e.returns) == set(make(e.env).possible_agents)
    llm_turns = [t for e in episodes for t in e.turns if t.player == "llm"]
    assert llm_turns and all(t.attempts and t.attempts[0].completion_ids for t in llm_turns)
    s = {x.player: x for x in summarise(episodes)}["llm"]
    assert 0.0 <= s.invalid_rate <= 1.0 and s.decisions == len(llm_turns)


def test_constrained_decoding_with_the_real_model_is_always_legal(default_backend):
    llm = LLMAgentSpec(name="llm", constrained=True, max_new_tokens=96)
    env = make("tictactoe_v3")
    rnd = ScriptedAgentSpec(name="random", policy="random")
    matches = [Match(game_id=i, env="tictactoe_v3", seats=s, seed=i) for i, s in enumerate(seatings(env, [llm, rnd], 4))]
    episodes = Runner(default_backend, progress=False).play(matches)
    s = {x.player: x for x in summarise(episodes)}["llm"]
    assert s.fallback_rate == 0.0 and s.invalid_rate < 0.25  # only a plan longer than the budget can fail
    turns = [t for e in episodes for t in e.turns if t.player == "llm" and t.turn]
    assert sum(bool(t.turn.predictions) for t in turns) == len(turns)


def test_cli_play_main_job(tmp_path):
    out = tmp_path / "play.jsonl"
    result = CliRunner().invoke(
        app, ["play", "tictactoe_v3", "--agents", "llm,random", "--games", "4", "--max-new-tokens", "32", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "Summary" in result.output or "tictactoe_v3: 4 games" in result.output
    assert len(out.read_text().splitlines()) == 4


def test_cli_errors_are_messages_not_tracebacks():
    r = CliRunner().invoke(app, ["play", "no_such_game"])
    assert r.exit_code != 0 and "unknown environment" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(app, ["play", "tictactoe_v3", "--agents", "gpt9"])
    assert r.exit_code != 0 and "unknown agent" in r.output
    r = CliRunner().invoke(app, ["play", "tictactoe_v3", "--model", "/nonexistent/model", "--games", "1"])
    assert r.exit_code == 1 and "cannot load model" in r.output
