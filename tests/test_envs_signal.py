"""signal_v0: a valid PettingZoo env, a valid text env, and a listener that cannot see the goal."""

from __future__ import annotations

import random

import numpy as np
import pytest
from pettingzoo.test import api_test, seed_test

from llmmarl.envs import registry
from llmmarl.envs.base import check_text_env
from llmmarl.envs.games.signal import LISTENER, SPEAKER, SignalEnv, env
from llmmarl.envs.pettingzoo import AECTextEnv


# api_test's advice that does not fit masked observations (a dict per agent, mask sizes per role).
@pytest.mark.filterwarnings("ignore:Observation is not a NumPy array", "ignore:Agents have different observation")
@pytest.mark.filterwarnings("ignore:Observation space for each agent probably should be")
@pytest.mark.parametrize(("num_items", "rounds"), [(4, 1), (2, 3), (10, 2)])
def test_pettingzoo_api(num_items: int, rounds: int) -> None:
    api_test(SignalEnv(num_items=num_items, rounds=rounds), num_cycles=100)
    api_test(env(num_items=num_items, rounds=rounds), num_cycles=100)
    seed_test(lambda: env(num_items=num_items, rounds=rounds))


@pytest.mark.parametrize("kwargs", [{}, {"num_items": 3, "rounds": 4}])
def test_text_env_contract(kwargs: dict[str, int]) -> None:
    text_env = registry.make("signal_v0", **kwargs)
    check_text_env(text_env, episodes=5)
    assert text_env.teams == {SPEAKER: "team", LISTENER: "team"}
    assert text_env.message_rules.mode == "broadcast" and text_env.message_rules.max_tokens == 16


def test_listener_sees_nothing_of_the_goal() -> None:
    # Several rounds, the listener always picking item 0: whatever the current goal, the listener's raw
    # observation and text depend only on the round and the previous rounds.
    text_env = registry.make("signal_v0", num_items=4, rounds=3)
    assert isinstance(text_env, AECTextEnv)
    views: dict[bytes, dict[int, tuple[bytes, str]]] = {}
    for seed in range(200):
        text_env.reset(seed=seed)
        while not text_env.done:
            speaker = text_env.observe(SPEAKER)
            goal = int(np.argmax(text_env.pz.observe(SPEAKER)["observation"][:4]))
            assert f"The secret goal is: {('red', 'green', 'blue', 'yellow')[goal]}." in speaker.text
            text_env.step({SPEAKER: 0})
            raw = text_env.pz.observe(LISTENER)
            assert not raw["observation"][:4].any()  # the goal block is empty for the listener
            listener = text_env.observe(LISTENER)
            assert listener.legal_actions == ["red", "green", "blue", "yellow"]
            by_goal = views.setdefault(raw["observation"][4:].tobytes(), {})
            by_goal[goal] = (raw["observation"].tobytes(), listener.text)
            text_env.step({LISTENER: 0})
    for by_goal in views.values():
        assert len(set(by_goal.values())) == 1, "the listener's view changed with the goal"
    assert any(len(by_goal) == 4 for by_goal in views.values())  # every goal occurred for some view


def test_team_reward_counts_correct_picks() -> None:
    raw_env = SignalEnv(num_items=3, rounds=5)
    raw_env.reset(seed=1)
    rng = random.Random(1)
    for _ in range(5):
        goal = int(np.argmax(raw_env.observe(SPEAKER)["observation"][:3]))
        raw_env.step(0)
        pick = rng.randrange(3)
        raw_env.step(pick)
        assert raw_env.rewards == dict.fromkeys([SPEAKER, LISTENER], float(pick == goal))
    assert all(raw_env.terminations.values())
    text_env = registry.make("signal_v0", num_items=3, rounds=5)
    text_env.reset(seed=7)
    totals = 0.0
    while not text_env.done:
        (agent,) = text_env.pending()
        rewards = text_env.step({agent: 0})
        assert rewards[SPEAKER] == rewards[LISTENER]
        totals += rewards[SPEAKER]
    assert text_env.returns() == {SPEAKER: totals, LISTENER: totals}


def test_render_and_bad_arguments() -> None:
    raw_env = SignalEnv(num_items=2, render_mode="ansi")
    raw_env.reset(seed=0)
    rendered = raw_env.render()
    assert isinstance(rendered, str) and "Goal (seen by the speaker only)" in rendered
    with pytest.raises(ValueError, match="num_items"):
        SignalEnv(num_items=1)
    with pytest.raises(ValueError, match="rounds"):
        SignalEnv(rounds=0)
    with pytest.raises(ValueError, match="illegal action"):
        raw_env.step(1)  # the speaker's only move is 0 ("ready")
