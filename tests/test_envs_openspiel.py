"""OpenSpiel games as text: the contract, exact payoffs (no shimmy double count), and hidden information."""

from __future__ import annotations

import random
import re
from types import SimpleNamespace

import pyspiel
import pytest

from llmmarl.envs import registry
from llmmarl.envs.base import check_text_env
from llmmarl.envs.games.bargaining import ITEMS, BargainingRenderer
from llmmarl.envs.openspiel import OpenSpielTextEnv


def play_random(env: OpenSpielTextEnv, seed: int) -> dict[str, float]:
    """Play one random game; return the sum of the per-step rewards."""
    env.reset(seed=seed)
    rng = random.Random(seed)
    totals = dict.fromkeys(env.possible_agents, 0.0)
    while not env.done:
        (agent,) = env.pending()
        for a, r in env.step({agent: rng.choice(env.observe(agent).action_ids)}).items():
            totals[a] += r
    return totals


def replayed_returns(env: OpenSpielTextEnv) -> list[float]:
    """Returns of a fresh pyspiel state after the same chance outcomes and moves."""
    state = env.game.new_initial_state()
    for action in env.state.history():
        state.apply_action(action)
    assert state.is_terminal()
    return state.returns()


@pytest.mark.parametrize(
    "name", ["kuhn_poker", "bargaining", "hanabi_v5", "openspiel:tic_tac_toe", "openspiel:goofspiel(num_cards=4)"]
)
def test_check_text_env(name: str) -> None:
    check_text_env(registry.make(name), episodes=5)


@pytest.mark.parametrize("name", ["kuhn_poker", "openspiel:tic_tac_toe", "hanabi_v5"])
def test_returns_are_the_games_payoffs(name: str) -> None:
    # shimmy 2.0.1 re-pays a final reward on its dead steps (and truncates kuhn_poker after one move); the
    # returns must be exactly what OpenSpiel says, game after game.
    env = registry.make(name)
    assert isinstance(env, OpenSpielTextEnv)
    for seed in range(200):
        rewards = play_random(env, seed)
        assert env.state.is_terminal(), f"seed {seed}: the game stopped before OpenSpiel's end"
        expected = dict(zip(env.possible_agents, replayed_returns(env), strict=True))
        assert env.returns() == expected, f"seed {seed}"
        assert rewards == expected, f"seed {seed}: per-step rewards do not add up to the returns"


def test_openspiel_prefix_takes_names_and_params() -> None:
    env = registry.make("openspiel:hanabi", players=2, colors=2, ranks=3, hand_size=3)
    assert env.name == "openspiel:hanabi"
    assert isinstance(env, OpenSpielTextEnv)
    env.reset(seed=0)
    assert env.game.get_parameters() == {"players": 2, "colors": 2, "ranks": 3, "hand_size": 3, "seed": 0}
    assert env.teams == {"player_0": "team", "player_1": "team"}  # identical payoffs: one team
    env = registry.make("openspiel:kuhn_poker(players=3)")
    assert env.possible_agents == ["player_0", "player_1", "player_2"]
    assert len(set(env.teams.values())) == 3
    with pytest.raises(registry.UnknownEnvError, match="no_such_game"):
        registry.make("openspiel:no_such_game")


def test_generic_text_is_the_seats_observation_string() -> None:
    env = registry.make("openspiel:tic_tac_toe")
    env.reset(seed=0)
    obs = env.observe("player_0")
    assert obs.text == "...\n...\n..."
    assert obs.legal_actions[0] == "x(0,0)" and obs.action_ids == list(range(9))


# ---- kuhn poker ------------------------------------------------------------------------------------------


def test_kuhn_poker_text_never_shows_the_opponents_card() -> None:
    env = registry.make("kuhn_poker")
    assert isinstance(env, OpenSpielTextEnv)
    seen: dict[tuple[int, int, str], str] = {}
    for seed in range(200):
        env.reset(seed=seed)
        rng = random.Random(seed)
        while not env.done:
            (agent,) = env.pending()
            player = env.player(agent)
            history = env.state.history()  # [card of player 0, card of player 1, moves...]
            mine, theirs = "JQK"[history[player]], "JQK"[history[1 - player]]
            obs = env.observe(agent)
            assert f"Your card: {mine}." in obs.text
            assert theirs not in obs.text
            # The text is a function of what the seat knows: its card and the moves, not the opponent's card.
            key = (player, history[player], "".join(map(str, history[2:])))
            assert seen.setdefault(key, obs.text) == obs.text
            env.step({agent: rng.choice(obs.action_ids)})
    assert len(seen) == 4 * 3  # 3 cards x the 4 betting states a seat can face ("", "p", "b", "pb")


def test_kuhn_poker_labels_follow_the_betting() -> None:
    env = registry.make("kuhn_poker")
    env.reset(seed=0)
    assert env.observe("player_0").legal_actions == ["check", "bet"]
    env.step({"player_0": 1})  # bet
    obs = env.observe("player_1")
    assert obs.legal_actions == ["fold", "call"]
    assert "your opponent bet" in obs.text and "Pot: 3 chips" in obs.text
    env.step({"player_1": obs.action_id("call")})
    assert env.done and sorted(env.returns().values()) == [-2.0, 2.0]


# ---- bargaining ------------------------------------------------------------------------------------------


def test_bargaining_labels_are_offers_and_accept() -> None:
    env = registry.make("bargaining")
    assert isinstance(env, OpenSpielTextEnv)
    for seed in range(30):
        env.reset(seed=seed)
        first = env.observe("player_0")
        assert "accept" not in first.legal_actions  # nothing to accept yet
        assert all(re.fullmatch(r"take \d+ books?, \d+ hats?, \d+ basketballs?", x) for x in first.legal_actions)
        env.step({"player_0": first.action_ids[seed % len(first.action_ids)]})
        reply = env.observe("player_1")
        env.step({"player_1": reply.action_id("accept")})
        # An offer is what its maker takes: player 0 scores exactly the value of the items it asked for.
        taken = env.state.offers()[0].quantities
        values = env.state.instance().values[0]
        assert env.returns()["player_0"] == sum(q * v for q, v in zip(taken, values, strict=True))


def test_bargaining_text_hides_the_other_players_values() -> None:
    game = pyspiel.load_game("bargaining")
    instances = game.all_instances()
    by_view: dict[tuple, list[int]] = {}
    for i, inst in enumerate(instances):
        by_view.setdefault((tuple(inst.pool), tuple(inst.values[0])), []).append(i)
    first, second = next(ids for ids in by_view.values() if len({tuple(instances[i].values[1]) for i in ids}) > 1)[:2]
    renderer = BargainingRenderer()
    texts = []
    for instance in (first, second):
        state = game.new_initial_state()
        state.apply_action(instance)  # the chance node picks instance number `instance`
        state.apply_action(state.legal_actions()[1])
        seat = SimpleNamespace(state=state, game=game, player=lambda agent: 0)  # player_0's view
        texts.append(renderer.observation(seat, "player_0", None))  # type: ignore[arg-type]
    assert instances[first].values[1] != instances[second].values[1]
    assert texts[0] == texts[1]
    assert all(name in game.action_to_string(0, 0).lower() for name in ITEMS)  # OpenSpiel's item names


# ---- hanabi ----------------------------------------------------------------------------------------------


def _hands(text: str) -> tuple[list[str], list[str]]:
    """(own hand lines, other hand lines) of a native hanabi observation string, without 'Cur player'."""
    block = text.split("Hands:\n", 1)[1].split("Deck size:", 1)[0]
    own, other = block.split("-----\n")
    clean = lambda part: [line for line in part.splitlines() if line and line != "Cur player"]  # noqa: E731
    return clean(own), clean(other)


def test_hanabi_text_hides_the_seats_own_cards() -> None:
    env = registry.make("hanabi_v5")
    assert isinstance(env, OpenSpielTextEnv)
    assert env.message_rules.mode == "off"
    assert env.teams == {"player_0": "team", "player_1": "team"}
    checked = 0
    for seed in range(20):
        env.reset(seed=seed)
        rng = random.Random(seed)
        while not env.done:
            (agent,) = env.pending()
            player = env.player(agent)
            obs = env.observe(agent)
            own, other = _hands(obs.text)
            # The full state (never shown to a seat) lists player 0's hand, then player 1's.
            truth = _hands(str(env.state))
            assert len(own) == 3 and all(line.startswith("XX || ") for line in own)
            assert [line[:2] for line in other] == [line[:2] for line in truth[1 - player]]
            assert all(re.fullmatch(r"[RY][1-3]", line[:2]) for line in other)
            checked += 1
            env.step({agent: rng.choice(obs.action_ids)})
    assert checked > 100


def test_hanabi_small_configuration_and_labels() -> None:
    env = registry.make("hanabi_v5")
    assert isinstance(env, OpenSpielTextEnv)
    env.reset(seed=0)
    assert env.game.get_parameters() == {
        "players": 2,
        "colors": 2,
        "ranks": 3,
        "hand_size": 3,
        "max_life_tokens": 3,
        "max_information_tokens": 8,
        "seed": 0,
    }
    labels = env.observe("player_0").legal_actions
    assert "play card 0" in labels and "hint color R" in labels
