"""The probe games: each keeps the text-env contract, its optimal bot scores the known optimum, and which word pays
is drawn by the game's seed keyword (so a base model's liking for one word cannot pass a probe)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from llmmarl.agents.specs import ScriptedAgentSpec
from llmmarl.envs import make
from llmmarl.envs.base import check_text_env
from llmmarl.envs.bots import policy_probabilities
from llmmarl.envs.games.probes.common import CUES, SYMBOLS, WORDS
from llmmarl.runner import Match, Runner

PROBES = {
    "probe_bandit": ({}, "probe_bandit_optimal"),
    "probe_contextual": ({"cues": 4}, "probe_contextual_optimal"),
    "probe_delayed": ({}, "probe_delayed_optimal"),
    "probe_coordination": ({}, "probe_coordination_optimal"),
    "probe_speaker_listener": ({"goals": 3}, None),  # its bot is the speaker; the listener is scripted below
    "probe_pennies": ({}, "probe_pennies_optimal"),
}


@pytest.mark.parametrize("name", sorted(PROBES))
@pytest.mark.parametrize("seed", [0, 3])
def test_contract(name: str, seed: int) -> None:
    kwargs, _ = PROBES[name]
    env = make(name, seed=seed, **kwargs)
    check_text_env(env, episodes=6)
    for agent in env.possible_agents:
        vocab = env.action_vocabulary(agent)
        assert vocab and all(w in WORDS or w == "ready" for w in vocab)  # neutral words only


def _play(name: str, seats: dict[str, str], games: int, seed: int = 0, **kwargs: object) -> list[dict[str, float]]:
    specs = {seat: ScriptedAgentSpec(name=f"{policy}-{seat}", policy=policy) for seat, policy in seats.items()}
    matches = [
        Match(game_id=g, env=name, env_kwargs={"seed": seed, **kwargs}, seats=specs, seed=g) for g in range(games)
    ]
    episodes = Runner(None, concurrency=8).play(matches, desc=name)
    assert all(ep.error is None for ep in episodes)
    return [ep.returns for ep in episodes]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_optimal_bots_score_the_optimum_and_random_does_not(seed: int) -> None:
    for name in ("probe_bandit", "probe_contextual", "probe_delayed"):
        kwargs, bot = PROBES[name]
        assert bot is not None
        best = _play(name, {"player_0": bot}, 24, seed, **kwargs)
        assert all(r["player_0"] == 1.0 for r in best)
        rand = _play(name, {"player_0": "random"}, 60, seed, **kwargs)
        assert 0 < sum(r["player_0"] for r in rand) < 50  # chance: 1/3 or 1/4
    pair = _play("probe_coordination", dict.fromkeys(("player_0", "player_1"), "probe_coordination_optimal"), 12, seed)
    assert all(r == {"player_0": 1.0, "player_1": 1.0} for r in pair)


def test_the_speaker_bot_carries_the_goal_and_nothing_else_does() -> None:
    env = make("probe_speaker_listener", goals=3, seed=5)
    listener_views = set()
    for s in range(30):
        env.reset(seed=s)
        assert env.pending() == ["speaker_0"]
        assert env.goal in env.observe("speaker_0").text  # type: ignore[attr-defined]
        env.step({"speaker_0": 0})
        listener_views.add(env.observe("listener_0").text)
        env.step({"listener_0": 0})
    assert len(listener_views) == 1  # the listener's observation never shows the goal
    assert set(env.message_rules.vocabulary or ()) <= set(SYMBOLS)
    rand = _play(
        "probe_speaker_listener", {"speaker_0": "probe_speaker_optimal", "listener_0": "random"}, 60, 5, goals=3
    )
    assert 5 < sum(r["listener_0"] for r in rand) < 40  # without reading the symbol: chance, 1/3


def test_pennies_is_zero_sum_and_its_bot_is_the_equilibrium() -> None:
    env = make("probe_pennies", seed=2)
    for a in (0, 1):
        for b in (0, 1):
            env.reset(seed=0)
            env.step({"player_0": a, "player_1": b})
            r = env.returns()
            assert r["player_0"] == -r["player_1"] == (1.0 if a == b else -1.0)
    env.reset(seed=0)
    from llmmarl.agents.scripted import make_policy

    obs = env.observe("player_0")
    assert policy_probabilities(make_policy("probe_pennies_optimal"), env, obs) == [0.5, 0.5]


def test_the_paying_word_is_drawn_by_the_seed() -> None:
    envs = [make("probe_bandit", seed=s) for s in range(40)]
    paying = Counter(e.paying for e in envs)  # type: ignore[attr-defined]
    assert len(paying) >= 6 and max(paying.values()) < 15  # not one word every time
    places = Counter(e.labels.index(e.paying) for e in envs)  # type: ignore[attr-defined]
    assert len(places) == 3 and max(places.values()) < 25  # nor one place in the list
    assert make("probe_bandit", seed=7).paying == make("probe_bandit", seed=7).paying  # type: ignore[attr-defined]
    mappings = {tuple(sorted(make("probe_contextual", seed=s).mapping.items())) for s in range(10)}  # type: ignore[attr-defined]
    assert len(mappings) > 5
    env = make("probe_contextual", cues=4)
    seen = set()
    for s in range(40):
        env.reset(seed=s)
        seen.add(env.cue)  # type: ignore[attr-defined]
    assert seen == set(CUES)  # the reset seed draws the cue
    with pytest.raises(ValueError, match="cues must be"):
        make("probe_contextual", cues=9)


def test_delayed_pays_only_at_the_end_and_only_for_the_first_choice() -> None:
    env = make("probe_delayed", seed=1)
    paying = env.paying  # type: ignore[attr-defined]
    labels = env.observe("player_0").legal_actions
    other = next(w for w in labels if w != paying)
    env.reset(seed=0)
    assert env.step({"player_0": labels.index(paying)}) == {"player_0": 0.0}
    assert "At step 1 you chose" in env.observe("player_0").text
    assert env.step({"player_0": labels.index(other)}) == {"player_0": 1.0}
    env.reset(seed=0)
    env.step({"player_0": labels.index(other)})
    assert env.step({"player_0": labels.index(paying)}) == {"player_0": 0.0}


def test_a_bot_refuses_another_game() -> None:
    from llmmarl.agents.scripted import make_policy

    env = make("probe_contextual")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="plays Bandit only"):
        make_policy("probe_bandit_optimal")(env, env.observe("player_0"), __import__("random").Random(0))


def test_contextual_offers_extra_words_and_takes_a_named_mapping() -> None:
    from llmmarl.studies.probes import HARD_MAPPING
    from llmmarl.studies.probes import PROBES as SUITE

    wide: Any = make("probe_contextual", words=8)
    assert len(wide.labels) == 8 and set(wide.mapping.values()) < set(wide.labels)
    probe = SUITE["contextual_hard"]
    hard: Any = make(probe.game, **probe.env_kwargs)
    assert hard.mapping == HARD_MAPPING and len(hard.labels) == 8
    best = _play(probe.game, {"player_0": "probe_contextual_optimal"}, 12, 0, **probe.env_kwargs)
    assert all(r["player_0"] == 1.0 for r in best)
    for cue, word in HARD_MAPPING.items():
        hard.reset(seed=0)
        hard.cue = cue
        hard.choices = [word]
        assert hard.payoff() == 1.0
        hard.choices = [wide.mapping[cue]] if wide.mapping[cue] != word else ["amber"]
        assert hard.payoff() == 0.0
    with pytest.raises(ValueError, match="words must be"):
        make("probe_contextual", cues=3, words=2)
    with pytest.raises(ValueError, match="a paying word for each cue"):
        make("probe_contextual", mapping={"north": "olive"})
    with pytest.raises(ValueError, match="its own word"):
        make("probe_contextual", mapping={"north": "olive", "south": "olive", "east": "slate"})
