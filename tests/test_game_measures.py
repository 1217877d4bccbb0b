"""Games declare their own measures of a policy (llmmarl.envs.measures); the evaluator asks for them by name.

Kuhn poker declares ``nash_conv``; tic-tac-toe declares none, and asking it for one is a clear error. A game
registered from outside the package declares its own measure the same way, and a training config may then ask
for it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from conftest import CannedBackend

from llmmarl.agents.specs import LLMAgentSpec, ScriptedAgentSpec
from llmmarl.envs import make
from llmmarl.envs import registry as env_registry
from llmmarl.envs.games.kuhn_poker import make_kuhn_poker
from llmmarl.envs.games.kuhn_poker.exploitability import BET, decision_points
from llmmarl.envs.measures import GameMeasure, PolicyReader, UnknownMeasureError
from llmmarl.envs.registry import EnvSpec, game_measure, game_measures
from llmmarl.eval.policy import measure_agent
from llmmarl.train.config import TrainConfig


def test_kuhn_poker_declares_nash_conv_and_tictactoe_declares_none():
    kuhn = game_measures("kuhn_poker")
    assert list(kuhn) == ["nash_conv"] and isinstance(kuhn["nash_conv"], GameMeasure)
    assert game_measures("tictactoe_v3") == {}
    assert game_measures("openspiel:kuhn_poker") == {}  # a family's games declare nothing
    with pytest.raises(UnknownMeasureError, match="'tictactoe_v3' has no measure 'nash_conv': it declares no measures"):
        game_measure("tictactoe_v3", "nash_conv")
    with pytest.raises(UnknownMeasureError, match="'kuhn_poker' has no measure 'brier': it declares nash_conv"):
        game_measure("kuhn_poker", "brier")


def test_measuring_a_game_without_the_measure_fails_before_reading():
    backend = CannedBackend(lambda r: "ACTION: 0")
    with pytest.raises(UnknownMeasureError, match="no measure"):
        measure_agent("tictactoe_v3", ["nash_conv"], LLMAgentSpec(name="a", temperature=0.0), backend)
    assert backend.requests == []


def test_kuhns_nash_conv_of_its_equilibrium_bot_through_the_measure():
    m = measure_agent("kuhn_poker", ["nash_conv"], ScriptedAgentSpec(name="n", policy="kuhn_nash"), None, 100)[
        "nash_conv"
    ]
    assert set(m) == {"nash_conv", "nash_conv_lo", "nash_conv_hi"}
    assert m["nash_conv_lo"] <= m["nash_conv"] <= m["nash_conv_hi"]
    assert m["nash_conv"] < 0.2  # sampling noise only: the bot is an equilibrium
    greedy_bettor = CannedBackend(
        lambda r: "ACTION: bet" if "check or bet" in r.messages[-1]["content"] else "ACTION: call"
    )
    always_bet = measure_agent("kuhn_poker", ["nash_conv"], LLMAgentSpec(name="b", temperature=0.0), greedy_bettor)
    assert always_bet["nash_conv"]["nash_conv"] == pytest.approx(2 / 3, abs=1e-12)  # the hand value, exact


@dataclass(frozen=True)
class OpeningBets:
    """A measure of a game registered outside the package: how often the policy bets when it may open."""

    name: str = "opening_bets"
    summary: str = "P(bet) at the openings"

    def __call__(self, read: PolicyReader, seed: int) -> dict[str, float]:
        openings: Sequence = [p for p in decision_points() if "b" not in p.key]
        reading = read(openings)
        return {"opening_bet": sum(s.mean(BET) for s in reading.states.values()) / len(reading.states)}


def test_a_game_registered_outside_declares_its_own_measure(monkeypatch):
    env_registry.list_envs()  # the built-ins first
    spec = EnvSpec("my_kuhn", make_kuhn_poker, "Kuhn poker, measured", kind="competitive", measures=(OpeningBets(),))
    monkeypatch.setitem(env_registry._REGISTRY, "my_kuhn", spec)
    bettor = CannedBackend(lambda r: "ACTION: bet" if "check or bet" in r.messages[-1]["content"] else "ACTION: fold")
    out = measure_agent("my_kuhn", ["opening_bets"], LLMAgentSpec(name="b", temperature=0.0), bettor)
    assert out == {"opening_bets": {"opening_bet": 1.0}}
    assert len(bettor.requests) == 6  # the six openings, once each (greedy), and nothing else
    cfg = TrainConfig(
        env="my_kuhn", model="tiny", learners=[{"name": "ann"}], eval_games=0, eval_measures=["opening_bets"]
    )
    cfg.check_env(make("my_kuhn"))
    with pytest.raises(ValueError, match="eval_measures: game 'my_kuhn' has no measure 'nash_conv'"):
        cfg.model_copy(update={"eval_measures": ["nash_conv"]}).check_env(make("my_kuhn"))


def test_the_earlier_key_eval_nash_conv_still_reads():
    base = {"env": "kuhn_poker", "model": "tiny", "learners": [{"name": "ann"}], "eval_games": 0}
    on = TrainConfig.model_validate({**base, "eval_nash_conv": 3})
    assert on.eval_measures == ["nash_conv"] and on.eval_measure_samples == 3
    off = TrainConfig.model_validate({**base, "eval_measures": ["nash_conv"], "eval_nash_conv": 0})
    assert off.eval_measures == []
    assert "eval_nash_conv" not in on.model_dump()
    with pytest.raises(ValueError, match="eval_nash_conv must be a whole number"):
        TrainConfig.model_validate({**base, "eval_nash_conv": "yes"})
