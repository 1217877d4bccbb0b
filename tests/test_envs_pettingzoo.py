"""PettingZoo games as text: the contract, payoffs, hidden information and readable text (fast, no model).

Outcomes are recomputed here from the moves played (our own board, our own judge), so a wrapper that double
counts, drops or misattributes a reward fails these tests instead of agreeing with itself.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from typing import Any

import numpy as np
import pytest

from llmmarl.envs import TextEnv, check_text_env, list_envs, make
from llmmarl.envs.games.leduc_holdem import RANKS
from llmmarl.envs.pettingzoo import PettingZooTextEnv

GAMES = 100  # random games per payoff test

Board = dict[tuple[int, int], str]  # (row, col) -> the agent whose mark is there


def _n_in_a_row(board: Board, n: int) -> str | None:
    """The agent owning ``n`` marks in a row, column or diagonal, if any (independent of PettingZoo's check)."""
    for (r, c), who in board.items():
        for dr, dc in ((0, 1), (1, 0), (1, 1), (1, -1)):
            if all(board.get((r + i * dr, c + i * dc)) == who for i in range(n)):
                return who
    return None


def _expected(winner: str | None, agents: list[str]) -> dict[str, float]:
    if winner is None:
        return dict.fromkeys(agents, 0.0)
    return {a: 1.0 if a == winner else -1.0 for a in agents}


def _grid(text: str, first_row: int, rows: int) -> list[list[str]]:
    """Cells of a drawn board: ``rows`` text lines from ``first_row``, split on spaces and '|'."""
    lines = text.splitlines()[first_row : first_row + rows]
    return [line.replace("|", " ").split() for line in lines]


def _pz(env: TextEnv) -> Any:
    assert isinstance(env, PettingZooTextEnv)
    return env.pz


def _rlcard(env: TextEnv) -> Any:
    """The RLCard env under a PettingZoo Leduc game."""
    return _pz(env).unwrapped.env


def _perfect_info(env: TextEnv) -> dict[str, Any]:
    """RLCard's full state of a Leduc hand (both cards): only the test looks at it, never a seat."""
    return _rlcard(env).get_perfect_information()


def _rank(card: str) -> int:
    return "JQK".index(card[1])  # RLCard cards are suit + rank, e.g. "SJ", "HK"


# ---- the contract ---------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # PettingZoo's *_vN shims warn on import
@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("tictactoe_v3", {}),
        ("connect_four_v3", {}),
        ("rps_v2", {}),
        ("leduc_holdem_v4", {}),
        ("pettingzoo:classic.go_v5", {"board_size": 5}),  # generic fallback renderer, AEC
        ("pettingzoo.classic.rps_v2:parallel_env", {}),  # generic fallback renderer, Parallel
    ],
)
def test_check_text_env(name: str, kwargs: dict) -> None:
    env = make(name, **kwargs)
    check_text_env(env, episodes=3)
    env.close()


def test_curated_games_are_registered_with_descriptions() -> None:
    specs = {s.name: s for s in list_envs()}
    for name in ("tictactoe_v3", "connect_four_v3", "rps_v2", "leduc_holdem_v4"):
        assert specs[name].source == "pettingzoo"
        assert specs[name].kind == "competitive"
        env = make(name)
        assert env.name == name
        assert "Your observation: array" not in env.description  # a curated description, not the fallback's
        assert any(word in env.description for word in ("+1", "reward"))


def test_rps_rounds_are_configurable() -> None:
    env = make("rps_v2", max_cycles=3)
    assert "3 rounds" in env.description
    env.reset(seed=0)
    steps = 0
    while not env.done:
        env.step({a: env.observe(a).action_ids[0] for a in env.pending()})
        steps += 1
    assert steps == 3


# ---- payoffs match an independent judge -------------------------------------------------------------------


def test_tictactoe_returns_match_the_board() -> None:
    env, rng, outcomes = make("tictactoe_v3"), random.Random(0), Counter[str | None]()
    for game in range(GAMES):
        env.reset(seed=game)
        board: Board = {}
        winner = None
        while not env.done:
            (agent,) = env.pending()
            assert agent == env.possible_agents[len(board) % 2]  # strict alternation, player_0 (X) first
            obs = env.observe(agent)
            # The drawn grid shows each mark where we put it and numbers exactly the legal (empty) cells.
            grid = _grid(obs.text, 1, 5)[::2]  # rows 0, 2, 4 of the drawing; 1 and 3 are ---+---+---
            mark = {a: s for a, s in zip(env.possible_agents, "XO", strict=True)}
            for r in range(3):
                for c in range(3):
                    want = mark[board[(r, c)]] if (r, c) in board else str(3 * r + c + 1)
                    assert grid[r][c] == want, obs.text
            assert sorted(obs.legal_actions, key=int) == [str(k + 1) for k in range(9) if divmod(k, 3) not in board]
            label = rng.choice(obs.legal_actions)
            board[divmod(int(label) - 1, 3)] = agent
            env.step({agent: obs.action_id(label)})
            winner = _n_in_a_row(board, 3)
            assert env.done == (winner is not None or len(board) == 9)
        assert env.returns() == _expected(winner, env.possible_agents)
        outcomes[winner] += 1
    assert set(outcomes) == {*env.possible_agents, None}, outcomes  # wins for both seats and draws were tested


def _drop(board: Board, column: int, agent: str) -> None:
    row = max(r for r in range(6) if (r, column) not in board)  # row 0 is the top: discs fall to the highest free row
    board[(row, column)] = agent


def test_connect_four_returns_match_the_board() -> None:
    env, rng, outcomes = make("connect_four_v3"), random.Random(1), Counter[str | None]()
    for game in range(GAMES):
        env.reset(seed=game)
        board: Board = {}
        winner = None
        while not env.done:
            (agent,) = env.pending()
            assert agent == env.possible_agents[len(board) % 2]
            obs = env.observe(agent)
            mark = {a: s for a, s in zip(env.possible_agents, "XO", strict=True)}
            grid = _grid(obs.text, 2, 6)  # after the intro line and the column header
            for (r, c), who in board.items():
                assert grid[r][c] == mark[who], obs.text
            assert sum(row.count(".") for row in grid) == 42 - len(board)
            assert f"You are {mark[agent]}" in obs.text
            full = {c for c in range(7) if (0, c) in board}
            assert obs.legal_actions == [str(c + 1) for c in range(7) if c not in full]
            label = rng.choice(obs.legal_actions)
            _drop(board, int(label) - 1, agent)
            env.step({agent: obs.action_id(label)})
            winner = _n_in_a_row(board, 4)
            assert env.done == (winner is not None or len(board) == 42)
        assert env.returns() == _expected(winner, env.possible_agents)
        outcomes[winner] += 1
    assert set(env.possible_agents) <= set(outcomes), outcomes


BEATS = {"rock": "scissors", "paper": "rock", "scissors": "paper"}


def test_rps_returns_sum_the_rounds() -> None:
    env, rng = make("rps_v2"), random.Random(2)
    for game in range(GAMES):
        env.reset(seed=game)
        expected = {a: 0.0 for a in env.possible_agents}
        rounds = 0
        while not env.done:
            assert env.pending() == ["player_0", "player_1"]  # simultaneous: both act every round
            obs = {a: env.observe(a) for a in env.pending()}
            assert all(o.legal_actions == ["rock", "paper", "scissors"] for o in obs.values())
            moves = {a: rng.choice(o.legal_actions) for a, o in obs.items()}
            (a, ma), (b, mb) = moves.items()
            won = 1.0 if BEATS[ma] == mb else -1.0 if BEATS[mb] == ma else 0.0
            rewards = env.step({x: obs[x].action_id(m) for x, m in moves.items()})
            assert rewards == {a: won, b: -won}
            expected[a] += won
            expected[b] -= won
            rounds += 1
        assert rounds == 15
        assert env.returns() == expected


def _leduc_payoffs(info: dict, folder: int | None) -> list[float]:
    """Leduc's rules, judged here: fold loses; else a pair with the public card, then the higher card wins."""
    chips = info["chips"]
    if folder is not None:
        winner: int | None = 1 - folder
    else:
        ranks = [_rank(card) for card in info["hand_cards"]]
        public = _rank(info["public_card"])
        pairs = [r == public for r in ranks]
        if any(pairs):
            winner = pairs.index(True)
        elif ranks[0] != ranks[1]:
            winner = int(ranks[1] > ranks[0])
        else:
            winner = None
    if winner is None:
        return [0.0, 0.0]
    assert folder is not None or chips[0] == chips[1]  # a showdown is only reached with equal bets
    won = chips[1 - winner] / 2  # the winner takes the loser's chips; PettingZoo pays chips / big blind (2)
    return [won if seat == winner else -won for seat in (0, 1)]


def test_leduc_returns_match_the_cards() -> None:
    env, rng = make("leduc_holdem_v4"), random.Random(3)
    outcomes = Counter[str]()
    for game in range(GAMES):
        env.reset(seed=game)
        folder = None
        while not env.done:
            (agent,) = env.pending()
            obs = env.observe(agent)
            seat = env.possible_agents.index(agent)
            info = _perfect_info(env)
            # The text decodes the seat's vector faithfully: its own card and both bets, as RLCard has them.
            mine, theirs = info["chips"][seat], info["chips"][1 - seat]
            assert f"Your private card: {RANKS[_rank(info['hand_cards'][seat])]}." in obs.text
            assert f"Chips in the pot: you {mine}, opponent {theirs} (total {mine + theirs})." in obs.text
            public = info["public_card"]
            assert (f"Public card: {RANKS[_rank(public)]}." if public else "Public card: not revealed") in obs.text
            assert set(obs.legal_actions) <= {"call", "raise", "fold", "check"}
            assert sorted(obs.legal_actions) == sorted(info["legal_actions"])
            label = rng.choice(obs.legal_actions)
            if label == "fold":
                folder = seat
            env.step({agent: obs.action_id(label)})
        returns = env.returns()
        info = _perfect_info(env)
        expected = _leduc_payoffs(info, folder)
        assert [returns[a] for a in env.possible_agents] == expected, (info, folder)
        assert sum(returns.values()) == 0
        assert expected == list(_rlcard(env).get_payoffs())  # RLCard's own judge agrees
        outcomes["fold" if folder is not None else "tie" if expected == [0, 0] else "showdown"] += 1
    assert set(outcomes) == {"fold", "tie", "showdown"}, outcomes


# ---- hidden information and whose turn it is -------------------------------------------------------------


def test_leduc_never_shows_the_opponents_card() -> None:
    env, rng = make("leduc_holdem_v4"), random.Random(4)
    checked = 0
    texts_by_own_view: dict[tuple[str, bytes], set[str]] = defaultdict(set)
    opponent_cards_by_own_view: dict[tuple[str, bytes], set[int]] = defaultdict(set)
    for seed in range(200):
        env.reset(seed=seed)
        while not env.done:
            (agent,) = env.pending()
            obs = env.observe(agent)
            seat = env.possible_agents.index(agent)
            info = _perfect_info(env)
            ranks = [_rank(card) for card in info["hand_cards"]]
            public = _rank(info["public_card"]) if info["public_card"] else None
            if ranks[1 - seat] not in (ranks[seat], public):  # the opponent's rank appears nowhere legitimately
                assert RANKS[ranks[1 - seat]] not in obs.text, (info, obs.text)
                checked += 1
            # The text is a function of the seat's own observation (its vector and its legal-move mask):
            # states the seat cannot tell apart read the same, whatever the opponent holds.
            raw = _pz(env).observe(agent)
            view = (agent, raw["observation"].tobytes() + raw["action_mask"].tobytes())
            texts_by_own_view[view].add(obs.text)
            opponent_cards_by_own_view[view].add(ranks[1 - seat])
            env.step({agent: rng.choice(obs.action_ids)})
    assert checked >= 200
    assert all(len(texts) == 1 for texts in texts_by_own_view.values())
    assert sum(len(cards) > 1 for cards in opponent_cards_by_own_view.values()) >= 10  # the property was exercised


@pytest.mark.parametrize("name", ["tictactoe_v3", "connect_four_v3", "leduc_holdem_v4"])
def test_aec_only_the_pending_agent_can_observe(name: str) -> None:
    env, rng = make(name), random.Random(5)
    env.reset(seed=0)
    while not env.done:
        (agent,) = env.pending()
        (other,) = (a for a in env.possible_agents if a != agent)
        with pytest.raises(ValueError, match="not pending"):
            env.observe(other)
        with pytest.raises(ValueError):
            env.step({other: env.observe(agent).action_ids[0]})  # acting out of turn is refused too
        env.step({agent: rng.choice(env.observe(agent).action_ids)})
    for agent in env.possible_agents:
        with pytest.raises(ValueError):
            env.observe(agent)


def test_connect_four_full_column_is_not_offered() -> None:
    env = make("connect_four_v3")
    env.reset(seed=0)
    for _ in range(6):  # X and O alternate in column 1 until it is full, no four in a row
        (agent,) = env.pending()
        env.step({agent: env.observe(agent).action_id("1")})
    obs = env.observe("player_0")
    assert obs.legal_actions == ["2", "3", "4", "5", "6", "7"]
    with pytest.raises(ValueError, match="illegal"):
        env.step({"player_0": 0})


# ---- readable text -----------------------------------------------------------------------------------------


def _play(env: TextEnv, labels: list[str]) -> None:
    for label in labels:
        (agent,) = env.pending()
        env.step({agent: env.observe(agent).action_id(label)})


def test_tictactoe_text_shows_the_board() -> None:
    env = make("tictactoe_v3")
    env.reset(seed=0)
    _play(env, ["5", "1", "9"])  # X centre, O top-left, X bottom-right
    obs = env.observe("player_2")  # PettingZoo's tic-tac-toe seats are player_1 (X) and player_2 (O)
    assert obs.text == "\n".join(
        [
            "You are O. Board (numbers are empty cells):",
            " O | 2 | 3",
            "---+---+---",
            " 4 | X | 6",
            "---+---+---",
            " 7 | 8 | X",
        ]
    )
    assert obs.legal_actions == ["2", "3", "4", "6", "7", "8"]


def test_connect_four_text_shows_the_board() -> None:
    env = make("connect_four_v3")
    env.reset(seed=0)
    _play(env, ["4", "4", "3"])  # X, then O on top of it, then X beside the first X
    obs = env.observe("player_1")
    header = " 1 2 3 4 5 6 7"
    empty = " . . . . . . ."
    assert obs.text == "\n".join(
        [
            "You are O, your opponent is X. Board (top row first, '.' is empty):",
            header,
            empty,
            empty,
            empty,
            empty,
            " . . . O . . .",
            " . . X X . . .",
            header,
        ]
    )


def test_rps_text_shows_the_last_round() -> None:
    env = make("rps_v2")
    env.reset(seed=0)
    first = env.observe("player_0").text
    assert first.startswith("Round 1 of 15.") and "No moves" in first
    env.step({"player_0": 0, "player_1": 1})  # rock vs paper
    assert env.observe("player_0").text == (
        "Round 2 of 15.\n"
        "Last round you played rock, your opponent played paper: you lost.\n"
        "Score so far: you -1, opponent 1."
    )
    assert "your opponent played rock: you won." in env.observe("player_1").text


def test_leduc_text_shows_cards_and_chips() -> None:
    env = make("leduc_holdem_v4")
    for seed in range(100):  # find a hand where player_0 holds a King and posts the small blind (acts first)
        env.reset(seed=seed)
        info = _perfect_info(env)
        if env.pending() == ["player_0"] and info["hand_cards"][0][1] == "K":
            break
    else:
        pytest.fail("no seed gave player_0 a King and the first move")
    obs = env.observe("player_0")
    assert obs.text == (
        "Betting round 1 of 2.\n"
        "Your private card: King.\n"
        "Public card: not revealed yet.\n"
        "Chips in the pot: you 1, opponent 2 (total 3).\n"
        "To call you must add 1 chip.\n"
        "A raise now adds 2 chips on top of matching."
    )
    assert obs.legal_actions == ["call", "raise", "fold"]
    _play(env, ["call", "check"])  # both at 2 chips: the public card is dealt, round 2 starts
    (agent,) = env.pending()
    text = env.observe(agent).text
    assert text.startswith("Betting round 2 of 2.")
    public = RANKS[_rank(_perfect_info(env)["public_card"])]
    assert f"Public card: {public}." in text
    assert "Chips in the pot: you 2, opponent 2 (total 4)." in text
    assert "A raise now adds 4 chips" in text


def test_generic_fallback_numbers_actions() -> None:
    env = make("pettingzoo:classic.go_v5", board_size=5)
    env.reset(seed=0)
    obs = env.observe(env.pending()[0])
    assert obs.text.startswith("Your observation: array[5, 5, 17]")
    assert obs.legal_actions == [str(i) for i in range(26)]  # 25 points + pass
    assert np.array_equal(obs.action_ids, np.arange(26))
