"""Monte-Carlo Q values by branching a cloned game (llmmarl.eval.q_values), against values known or enumerated."""

from __future__ import annotations

import itertools
import math
import random

import pyspiel
import pytest

from llmmarl.envs import NotCloneableError, make
from llmmarl.envs.base import Observation, TextEnv
from llmmarl.envs.games.kuhn_poker import KuhnNash, KuhnPokerEnv, nash_bet_probability
from llmmarl.envs.games.probes.bandit.game import Bandit
from llmmarl.eval.q_values import q_values


def _uniform(env: TextEnv, obs: Observation, rng: random.Random) -> int:
    return rng.choice(obs.action_ids)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bandit_q_is_one_for_the_paying_word_and_zero_for_the_others(seed: int) -> None:
    env = make("probe_bandit", arms=4, seed=seed)
    assert isinstance(env, Bandit)
    env.reset(seed=5)
    q = q_values(env, "player_0", None, _uniform, m=8)
    assert set(q) == set(env.labels)
    assert {label: e.mean for label, e in q.items()} == env.optimal()  # 1 for the paying word, 0 for the rest
    assert all(e.stderr == 0.0 and e.n == 8 for e in q.values())  # one decision: no noise
    assert not env.done and env.choices == []  # the game itself was never stepped
    only = q_values(env, "player_0", [env.paying], _uniform, m=2)
    assert list(only) == [env.paying] and only[env.paying].mean == 1.0


def _exact_value(state: pyspiel.State, seat: int, power: int = 1) -> float:
    """E[return ** power] of ``seat`` from ``state`` when both players play kuhn_nash: the OpenSpiel game tree
    walked with the equilibrium's own table, chance outcomes enumerated (no clone, no text environment)."""
    if state.is_terminal():
        return float(state.returns()[seat] ** power)
    if state.is_chance_node():
        return sum(p * _exact_value(state.child(a), seat, power) for a, p in state.chance_outcomes())
    info = state.information_state_string(state.current_player())  # card digit + public moves
    bet = nash_bet_probability(int(info[0]), info[1:])
    return (1 - bet) * _exact_value(state.child(0), seat, power) + bet * _exact_value(state.child(1), seat, power)


def test_the_enumeration_gives_kuhn_poker_its_known_value() -> None:
    """The reference below is right: the equilibrium pays the first player -1/18 (Kuhn, 1950)."""
    assert _exact_value(pyspiel.load_game("kuhn_poker").new_initial_state(), 0) == pytest.approx(-1 / 18)


def _deals() -> dict[tuple[int, int], int]:
    """A reset seed for each of the six deals."""
    env = make("kuhn_poker")
    assert isinstance(env, KuhnPokerEnv)
    seeds: dict[tuple[int, int], int] = {}
    for seed in itertools.count():
        env.reset(seed=seed)
        seeds.setdefault((env.state.history()[0], env.state.history()[1]), seed)
        if len(seeds) == 6:
            return seeds
    raise AssertionError("unreachable")


@pytest.mark.parametrize("opening", ["", "check"])  # the first player's decision, or the second's after a check
def test_kuhn_q_values_match_the_enumerated_ones(opening: str) -> None:
    labels = {"check": 0, "bet": 1}  # both decisions: no bet yet
    for (c0, c1), seed in sorted(_deals().items()):
        env = make("kuhn_poker")
        assert isinstance(env, KuhnPokerEnv)
        env.reset(seed=seed)
        if opening:
            env.step({"player_0": env.observe("player_0").action_id(opening)})
        seat = env.pending()[0]
        player = env.player(seat)
        history = env.state.history()
        q = q_values(env, seat, None, KuhnNash(), m=300, seed=seed)
        assert set(q) == set(labels) and env.state.history() == history
        for label, action in labels.items():
            exact = _exact_value(env.state.child(action), player)
            estimate = q[label]
            # Within 4 standard errors of the enumerated value; exact where the rest of the hand is forced.
            assert abs(estimate.mean - exact) <= 4 * estimate.stderr + 1e-12, (c0, c1, opening, label, estimate, exact)
            # The standard error is the return's spread over sqrt(m): 300 rollouts read the spread within 25%.
            spread = math.sqrt(max(0.0, _exact_value(env.state.child(action), player, 2) - exact**2))
            assert estimate.stderr == pytest.approx(spread / math.sqrt(300), rel=0.25, abs=1e-9)
        # The holder of the king never loses when it bets or calls; the estimates tell the labels apart.
        if (c0, c1)[player] == 2:
            assert q["bet"].mean > 0


def test_kuhn_q_values_are_not_the_sign_flipped_or_swapped_ones() -> None:
    """The tolerance above is tight enough to catch a wrong sign or swapped labels."""
    seeds = _deals()
    env = make("kuhn_poker")
    assert isinstance(env, KuhnPokerEnv)
    env.reset(seed=seeds[(1, 2)])  # the first player holds Q, the second K
    q = q_values(env, "player_0", None, KuhnNash(), m=300)
    exact = {label: _exact_value(env.state.child(a), 0) for label, a in (("check", 0), ("bet", 1))}
    assert exact["check"] != exact["bet"]
    for label in exact:
        assert abs(q[label].mean - exact[label]) <= 4 * q[label].stderr + 1e-12
        assert abs(-q[label].mean - exact[label]) > 4 * q[label].stderr
    assert abs(q["check"].mean - exact["bet"]) > 4 * q["check"].stderr


def test_bad_input_is_named() -> None:
    env = make("kuhn_poker")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="not to act"):
        q_values(env, "player_1", None, KuhnNash(), m=4)
    with pytest.raises(ValueError, match="not legal"):
        q_values(env, "player_0", ["fold"], KuhnNash(), m=4)
    with pytest.raises(ValueError, match="at least 1"):
        q_values(env, "player_0", None, KuhnNash(), m=0)
    with pytest.raises(ValueError, match="no policy for seat 'player_1'"):
        q_values(env, "player_0", None, {"player_0": KuhnNash()}, m=4)
    rps = make("rps_v2")
    rps.reset(seed=0)
    with pytest.raises(NotCloneableError, match="rps_v2"):
        q_values(rps, "player_0", None, _uniform, m=4)
