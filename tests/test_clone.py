"""``TextEnv.clone``: an independent, exact copy of a game in play, for the games that declare it."""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest

from llmmarl.envs import NotCloneableError, TextEnv, make
from llmmarl.envs.games.kuhn_poker import KuhnPokerEnv

# Every game that declares clone, with keywords that give it chance after the first move where it has any.
CLONEABLE: dict[str, dict[str, Any]] = {
    "tictactoe_v3": {},
    "connect_four_v3": {},
    "signal_v0": {"rounds": 3},  # a goal is drawn each round: chance after the first moves
    "kuhn_poker": {},
    "openspiel:leduc_poker": {},  # the public card is dealt mid-game
    "bargaining": {},
    "hanabi_v5": {},
    "openspiel:tic_tac_toe": {},
    "probe_bandit": {},
    "probe_contextual": {},
    "probe_delayed": {},
    "probe_coordination": {},
    "probe_pennies": {},
    "probe_speaker_listener": {},
}


def _view(env: TextEnv) -> tuple[object, ...]:
    """Everything a player or a scorer can read of the game now."""
    pending = env.pending()
    seen = {a: (o.text, tuple(o.legal_actions), tuple(o.action_ids)) for a in pending for o in [env.observe(a)]}
    truths = {a: env.forecast_truth(a) for a in env.possible_agents} if not env.done else {}
    return env.done, tuple(pending), seen, env.returns(), truths


def _random_step(env: TextEnv, rng: random.Random) -> dict[str, float]:
    return env.step({a: rng.choice(env.observe(a).action_ids) for a in env.pending()})


def _play(env: TextEnv, rng: random.Random, moves: int | None = None) -> list[tuple[object, ...]]:
    """Random legal moves (all of the game when ``moves`` is None); the rewards and view after each."""
    trace = []
    while not env.done and (moves is None or len(trace) < moves):
        rewards = _random_step(env, rng)
        trace.append((rewards, _view(env)))
    return trace


@pytest.mark.parametrize("name", sorted(CLONEABLE))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_clone_is_independent_and_replays_alike(name: str, seed: int) -> None:
    env = make(name, **CLONEABLE[name])
    assert env.cloneable
    env.reset(seed=seed)
    _play(env, random.Random(seed), moves=seed % 2 + 1)
    if env.done:  # a one-decision game: clone it before its move instead
        env.reset(seed=seed)
    before = _view(env)

    clone = env.clone()
    assert type(clone) is type(env) and clone is not env and _view(clone) == before
    # The clone plays other moves to the end; the original does not move.
    assert _play(clone, random.Random(f"other/{seed}"))
    assert clone.done and _view(env) == before

    # The same moves from the same state give the same game in the original and a second clone, chance included.
    twin = env.clone()
    original_trace = _play(env, random.Random(f"same/{seed}"))
    assert original_trace and _view(twin) == before  # the original moving leaves the twin where it was
    assert _play(twin, random.Random(f"same/{seed}")) == original_trace


@pytest.mark.parametrize("seed", range(6))
def test_kuhn_clone_keeps_the_dealt_cards(seed: int) -> None:
    env = make("kuhn_poker")
    assert isinstance(env, KuhnPokerEnv)
    env.reset(seed=seed)
    dealt = env.state.history()[:2]
    clone = env.clone()
    assert isinstance(clone, KuhnPokerEnv)
    assert clone.state is not env.state and clone.state.history() == env.state.history()
    # Card for card, through the whole hand, whatever the clone's betting.
    _play(clone, random.Random(seed))
    assert clone.state.history()[:2] == dealt == env.state.history()[:2]
    assert len(env.state.history()) == 2  # only the deal: the clone's bets are its own


def test_signal_clone_draws_the_rounds_goals_as_the_original() -> None:
    env = make("signal_v0", rounds=4)
    env.reset(seed=7)
    clone = env.clone()
    goals: list[list[str]] = [[], []]
    for game, seen in zip((env, clone), goals, strict=True):
        rng = random.Random(0)
        while not game.done:
            (agent,) = game.pending()
            if agent.startswith("speaker"):
                seen.append(game.observe(agent).text.splitlines()[-2])  # "The secret goal is: ..."
            _random_step(game, rng)
    assert len(goals[0]) == 4 and goals[0] == goals[1]
    assert len(set(goals[0])) > 1  # drawn anew each round, so a re-seeded or frozen generator would show


def test_games_that_cannot_clone_say_so() -> None:
    rps = make("rps_v2")  # a PettingZoo Parallel conversion: its state is not copied exactly, so not declared
    rps.reset(seed=0)
    assert not rps.cloneable
    with pytest.raises(NotCloneableError, match="'rps_v2' cannot clone"):
        rps.clone()
    # OpenSpiel games whose chance is sampled by the game object itself: a clone would share its generator.
    negotiation = make("openspiel:negotiation")
    assert not negotiation.cloneable
    with pytest.raises(NotCloneableError, match="openspiel:negotiation"):
        negotiation.clone()


def test_a_plain_deep_copy_is_not_a_clone() -> None:
    """Why clone copies PettingZoo envs layer by layer: the library's own copy rebuilds a fresh game."""
    env = make("tictactoe_v3")
    env.reset(seed=0)
    _play(env, random.Random(0), moves=3)
    assert _view(env.clone()) == _view(env)
    assert _view(copy.deepcopy(env)) != _view(env)
