"""TextArena games as free-text environments: ``make("textarena:<env-id>")``.

TextArena (``pip install llmmarl[textarena]``, version 0.7.4) has about 100 games whose moves are free text:
negotiation, bluffing, social deduction, word and board games. :class:`TextArenaTextEnv` plays one through
TextArena's own API (``ta.make(id)`` with its default wrappers, ``reset``, ``get_observation``, ``step``,
``close``) and maps it onto the :class:`~llmmarl.envs.base.TextEnv` contract:

* **Turns** come from the game: the seat pending is TextArena's current player, so eliminated players stop acting
  and multi-player games keep their seats (``player_i`` is TextArena's player ``i``).
* **Observations** are buffered per seat: TextArena hands each one out once (``get_observation``), so the adapter
  reads it once per turn and keeps it; ``observe`` is free to call again.
* **Actions** are the text itself (``Observation.free_text``: at most ``max_action_chars`` characters; longer text
  is cut). Where the game lists its valid moves in the new part of the observation ("Available Moves: '[0]',
  '[4]'"), they are the observation's ``legal_actions`` and a constrained agent's grammar picks one of them;
  otherwise the move is free text under a length cap. Lists holding templates such as ``[bet X]`` are not used.
* **Invalid moves** are the game's to judge: TextArena tells a player why and lets it try again (its error
  allowance), then ends the game or eliminates the player. :meth:`TextArenaTextEnv.rejection` reports each refusal
  with TextArena's reason; the runner counts it as an invalid answer, and a final one as a forfeit.
* **Rewards** come only at the end (TextArena's ``close()``), to every seat, as the last step's rewards.
* **Teams**: TextArena does not declare them. Taboo's two teams are set here; SecretMafia's sides are secret during
  the game (every seat on its own), and revealed from the roles when it ends, so that outcomes count each side
  as a team. Every other game is every seat for itself.
* **Talk**: ``message_rules`` are off. In these games talk *is* the move (an offer, an accusation, a clue), and the
  game decides who hears it under its rules (Taboo checks clues for forbidden words, SecretMafia's night chat
  reaches the Mafia only); a side channel next to the game would bypass those rules.
* **Seeds**: TextArena games draw from Python's global ``random`` (``State`` seeds it on reset). Each env here
  keeps its own copy of that state (and of NumPy's) and swaps it in around every call into TextArena, under one
  lock, so games played side by side replay exactly and leave the process's RNGs alone.

Not every game runs everywhere: :func:`availability` says why one cannot (nltk data that TextArena downloads at
import, a remote LLM judge behind an API key, a Python version, files missing from the 0.7.4 wheel), and
``make`` then fails with that one line instead of a traceback. Word games are imported with ``nltk.download``
replaced by a check of the local data, so that importing one never reaches (or waits on) the network.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import sys
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from llmmarl.envs.base import Action, MessageRules, Observation, Rejection, TextEnv
from llmmarl.envs.registry import UnknownEnvError

#: The TextArena release this adapter was written and checked against (``llmmarl[textarena]`` pins it).
TEXTARENA_VERSION = "0.7.4"
#: The longest move the adapter passes on by default; TextArena's own conversational wrapper clips at 1,000.
MAX_ACTION_CHARS = 400

# What games of TextArena 0.7.4 need beyond the package, by game folder (``textarena.envs.<Game>``). Read in its
# source; scripts/textarena_games.py plays every game to confirm (docs/textarena.md).
_NLTK_DATA: dict[str, tuple[str, ...]] = {
    "Codenames": ("corpora/words", "taggers/averaged_perceptron_tagger_eng"),
    "DontSayIt": ("corpora/words", "taggers/averaged_perceptron_tagger_eng"),
    "Hangman": ("corpora/words",),
    "LetterAuction": ("corpora/words",),
    "SpellingBee": ("corpora/words",),
    "WordChains": ("corpora/words",),
    "WordLadder": ("corpora/words",),
    "WordSearch": ("corpora/words",),
    "Wordle": ("corpora/words", "taggers/averaged_perceptron_tagger_eng"),
}
_REMOTE_JUDGE = frozenset({"Debate", "GuessWho", "ScenarioPlanning", "TwentyQuestions"})
_JUDGE_KEY = "OPENROUTER_API_KEY"
# f-strings that nest quotes of the same kind, valid only from Python 3.12 (PEP 701).
_PYTHON_312 = frozenset(
    {"Checkers", "Chess", "IteratedStagHunt", "Klondike", "ReverseTicTacToe", "UltimateTexasHoldem"}
)
_BROKEN: dict[str, str] = {
    "BabyAiText": "needs the gym and babyai packages, which TextArena does not declare",
    "CharacterConclave": "TextArena 0.7.4 crashes on reset (State.add_observation called without its type)",
    "ScorableGames": "its game descriptions are missing from the TextArena 0.7.4 wheel",
    "UsedCar": "its module is missing from the TextArena 0.7.4 wheel",
    "UsedCarNegotiation": "its instruction files are missing from the TextArena 0.7.4 wheel",
}
# Player counts tried, in order, when none is given: two-player first, as most games are.
_PLAYER_COUNTS = (2, 1, 3, 4, 5, 6, 7, 8, 9, 10)
# A listed-moves line: "Available Moves: '[0]', '[4]'", "Your available actions are: '[check]', '[bet]'".
_LISTED = re.compile(r"\b(?:available|valid|possible)\s+(?:moves|actions)\b[^:\n]*:(.*)$", re.I | re.M)
_MOVE = re.compile(r"\[[^\[\]\n]{1,40}\]")
_TEMPLATE = re.compile(r"\b(?:X|N|amount|quantity|number|value|face_value)\b")  # "[bet X]", "[Bid: quantity, face]"

_LOCK = threading.RLock()  # TextArena's games share the process's global RNGs: one call at a time


@dataclass(frozen=True)
class Availability:
    """Whether a TextArena game can run in this process, and if not, why (one line)."""

    ok: bool
    why: str = ""


def game_of(env_id: str) -> str:
    """The game folder of a TextArena id (``"KuhnPoker-v0-long"`` -> ``"KuhnPoker"``), from its entry point."""
    spec = _registry().get(env_id)
    if spec is None:
        raise UnknownEnvError(f"unknown TextArena game {env_id!r}; `llmmarl envs` lists them")
    entry = spec.entry_point if isinstance(spec.entry_point, str) else spec.entry_point.__module__
    return entry.split(":")[0].split(".")[2]


def availability(env_id: str) -> Availability:
    """Whether ``env_id`` can run here; ``why`` names what is missing. Imports no game module."""
    try:
        game = game_of(env_id)
    except UnknownEnvError as e:
        return Availability(False, str(e))
    except ImportError:
        return Availability(False, "TextArena is not installed: pip install 'llmmarl[textarena]'")
    if game in _BROKEN:
        return Availability(False, _BROKEN[game])
    if game in _PYTHON_312 and sys.version_info < (3, 12):
        return Availability(False, "its source needs Python 3.12 or later")
    if game in _REMOTE_JUDGE and not os.environ.get(_JUDGE_KEY):
        return Availability(False, f"it asks a remote LLM judge (OpenRouter): set {_JUDGE_KEY} and allow network")
    if missing := _missing_nltk_data(_NLTK_DATA.get(game, ())):
        names = " ".join(m.split("/")[-1] for m in missing)
        return Availability(False, f"it needs nltk data that is not installed: python -m nltk.downloader {names}")
    return Availability(True)


def textarena_games() -> list[str]:
    """Every TextArena id in its default form (without the ``-train``/``-raw`` wrapper variants)."""
    return [i for i in _registry() if not i.endswith(("-train", "-raw"))]


def games_by_folder() -> dict[str, list[str]]:
    """Every game (its folder name) with its default ids, in TextArena's registration order."""
    out: dict[str, list[str]] = {}
    for env_id in textarena_games():
        out.setdefault(game_of(env_id), []).append(env_id)
    return out


def _registry() -> dict[str, Any]:
    from textarena.envs.registration import ENV_REGISTRY

    return dict(ENV_REGISTRY)


def _missing_nltk_data(resources: tuple[str, ...]) -> list[str]:
    if not resources:
        return []
    import nltk

    missing = []
    for resource in resources:
        try:
            nltk.data.find(resource)
        except LookupError:
            missing.append(resource)
    return missing


@contextlib.contextmanager
def _local_nltk_only() -> Iterator[None]:
    """``nltk.download`` answers from the local data while a game module is imported (see the module doc)."""
    try:
        import nltk
    except ImportError:  # TextArena without nltk: nothing to replace
        yield
        return
    original = nltk.download

    def download(info_or_id: Any = None, *args: Any, **kwargs: Any) -> bool:
        return False  # the caller then reads the data from disk, or raises LookupError naming it

    nltk.download = download
    try:
        yield
    finally:
        nltk.download = original


class TextArenaTextEnv(TextEnv):
    """One TextArena game (see the module doc). ``env_id`` is TextArena's id, e.g. ``"SimpleNegotiation-v0"``.

    ``num_players``: seats (default: the first count the game accepts, two-player first); ``max_action_chars``:
    the longest move passed on; other keyword arguments go to the game's constructor (``max_turns=6``).
    """

    def __init__(
        self,
        env_id: str,
        num_players: int | None = None,
        max_action_chars: int = MAX_ACTION_CHARS,
        **game_kwargs: Any,
    ) -> None:
        check = availability(env_id)
        if not check.ok:
            raise UnknownEnvError(f"textarena:{env_id} cannot run here: {check.why}")
        self.env_id = env_id
        self.game = game_of(env_id)
        self._kwargs = game_kwargs
        self.max_action_chars = max_action_chars
        self._rng_state = random.Random(0).getstate()
        self._np_state = np.random.RandomState(0).get_state()
        n = num_players if num_players is not None else default_players(env_id)
        self.name = f"textarena:{env_id}"
        self.possible_agents = [f"player_{i}" for i in range(n)]
        self.teams = self._declared_teams()
        self.message_rules = MessageRules(mode="off")
        self.description = (
            f"TextArena game {env_id} ({n} player{'s' if n != 1 else ''}). Moves are free text that the game "
            "judges; its rules, your role and the moves it accepts come with each observation."
        )
        self._env: Any = None
        self._new_env()
        self._texts: dict[str, str] = {}
        self._moves: dict[str, list[str]] = {}
        self._current: str | None = None
        self._over = False
        self._final: dict[str, float] = {}
        self._refused: dict[str, Rejection] = {}
        self._pending_refusal: list[tuple[int, str]] = []

    # ---- TextArena calls, each with this game's own RNG state ---------------------------------------------
    @contextlib.contextmanager
    def _own_rng(self) -> Iterator[None]:
        with _LOCK:
            outer, outer_np = random.getstate(), np.random.get_state()
            random.setstate(self._rng_state)
            np.random.set_state(self._np_state)
            try:
                yield
            finally:
                self._rng_state, self._np_state = random.getstate(), np.random.get_state()
                random.setstate(outer)
                np.random.set_state(outer_np)

    def _new_env(self) -> None:
        import textarena as ta

        try:
            with self._own_rng(), _local_nltk_only():
                self._env = ta.make(self.env_id, **self._kwargs)
        except Exception as e:  # a game that fails to build says so in one line
            raise UnknownEnvError(f"textarena:{self.env_id} cannot be built: {_first_line(e)}") from None

    # ---- TextEnv --------------------------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> None:
        self._new_env()  # TextArena's observation wrappers keep each game's history: a fresh stack per game
        self._rng_state = random.Random(seed).getstate()
        self._np_state = np.random.RandomState(0 if seed is None else seed % 2**32).get_state()
        self.teams = self._declared_teams()
        self._texts, self._moves, self._refused, self._final = {}, {}, {}, {}
        self._over = False
        with self._own_rng():
            self._env.reset(num_players=len(self.possible_agents), seed=seed)
            self._watch_refusals()
            self._read_observation()

    def pending(self) -> list[str]:
        return [] if self._over or self._current is None else [self._current]

    def observe(self, agent: str) -> Observation:
        if agent != self._current or self._over:
            raise ValueError(f"{agent} is not to move in {self.name}")
        moves = self._moves.get(agent, [])
        text = self._texts.get(agent) or "(no new messages)"
        refused = self._refused.get(agent)
        if refused is not None and refused.reason not in text:
            # Some of TextArena's observation wrappers drop the game's notice of a refused move: say it here, as
            # TextArena means the player to hear it before its retry.
            text += f"\n[GAME] Your last move was refused: {refused.reason} Submit a valid move."
        return Observation(
            agent=agent,
            text=text,
            legal_actions=moves,
            action_ids=list(range(len(moves))),
            free_text=self.max_action_chars,
        )

    def _step(self, actions: Mapping[str, Action]) -> dict[str, float]:
        ((agent, action),) = actions.items()
        text = str(action)[: self.max_action_chars]
        player = self.possible_agents.index(agent)
        self._refused = {}
        with self._own_rng():
            done, _ = self._env.step(text)
            self._collect_refusals(player)
            if done:
                return self._close()
            self._read_observation()
        return {}

    def _returns(self) -> dict[str, float]:
        return dict(self._final) if self._over else dict.fromkeys(self.possible_agents, 0.0)

    @property
    def _finished(self) -> bool:
        return self._over

    def rejection(self, agent: str) -> Rejection | None:
        return self._refused.get(agent)

    def close(self) -> None:
        self._env = None

    def eliminated(self) -> list[str]:
        """Seats the game has eliminated so far (multi-player games): they are never pending again."""
        order = getattr(self._env.state, "elimination_order", None) or []
        return [self.possible_agents[int(pid)] for pid in order]

    @property
    def game_state(self) -> dict[str, Any]:
        """TextArena's state of the game. It holds every seat's secrets: for checks and tools, never for prompts."""
        return dict(self._env.state.game_state)

    # ---- internals ----------------------------------------------------------------------------------------
    def _read_observation(self) -> None:
        """Take the current player's observation (TextArena hands it out once) and the moves it lists."""
        pid, text = self._env.get_observation()
        agent = self.possible_agents[int(pid)]
        text = text if isinstance(text, str) else "\n".join(str(m[1]) for m in text)  # -raw ids give messages
        before = self._texts.get(agent, "")
        new = text[len(before) :] if before and text.startswith(before) else text
        self._texts[agent], self._moves[agent], self._current = text, listed_moves(new), agent

    def _close(self) -> dict[str, float]:
        rewards, game_info = self._env.close()
        rewards = rewards or {}
        if bad := {i: r for i, r in rewards.items() if not isinstance(r, int | float)}:
            raise ValueError(f"{self.name} ended with non-numeric rewards {bad} (a TextArena bug)")
        self._final = {a: float(rewards.get(i, 0.0)) for i, a in enumerate(self.possible_agents)}
        self._over, self._current = True, None
        if self.game == "SecretMafia":  # the sides, secret until now (see the module doc)
            roles = {i: str(info.get("role", "")) for i, info in game_info.items()}
            self.teams = {
                a: "mafia" if roles.get(i) == "Mafia" else "village" for i, a in enumerate(self.possible_agents)
            }
        return dict(self._final)

    def _watch_refusals(self) -> None:
        """Record every ``set_invalid_move`` of this game's state with its reason (TextArena only shows it)."""
        state = self._env.state
        original = state.set_invalid_move
        log = self._pending_refusal

        def set_invalid_move(*args: Any, **kwargs: Any) -> Any:
            if len(args) == 2 and isinstance(args[0], int | float) and isinstance(args[1], str):
                # Countdown and Cryptarithm (0.7.4) pass (progress, reason) to (reason, reward): put them right,
                # or the reason becomes the player's reward.
                args = (args[1], args[0])
            reason = kwargs.get("reason", args[0] if args else "")
            log.append((int(state.current_player_id), str(reason)))
            result = original(*args, **kwargs)
            eliminated = set(getattr(state, "elimination_order", None) or ())
            if len(eliminated) >= state.num_players and not state.done:
                # Everyone is out: TextArena's turn rotation would look for a player forever (PublicGoodsGame
                # 0.7.4 hangs so). End the game: each seat lost by invalid moves.
                state.rewards = dict.fromkeys(range(state.num_players), -1.0)
                for info in state.game_info.values():
                    info["reason"] = "every player was eliminated for invalid moves"
                state.done = True
            return result

        state.set_invalid_move = set_invalid_move

    def _collect_refusals(self, player: int) -> None:
        info = self._env.state.game_info
        for pid, reason in self._pending_refusal:
            if pid == player:
                final = bool(info.get(pid, {}).get("invalid_move"))
                self._refused[self.possible_agents[pid]] = Rejection(reason=reason or "invalid move", final=final)
        self._pending_refusal.clear()

    def _declared_teams(self) -> dict[str, str]:
        n = len(self.possible_agents)
        if self.game == "Taboo" and n >= 4:  # two teams of n // 2: the first half and the second
            return {a: f"team_{min(i // (n // 2), 1)}" for i, a in enumerate(self.possible_agents)}
        return {a: a for a in self.possible_agents}


def listed_moves(text: str) -> list[str]:
    """The valid moves the text lists on its last "Available Moves: ..." line, or [] (none, or templates)."""
    lines = _LISTED.findall(text)
    if not lines:
        return []
    moves = list(dict.fromkeys(_MOVE.findall(lines[-1])))
    if not moves or any(_TEMPLATE.search(m) for m in moves):
        return []
    return moves


@cache
def default_players(env_id: str) -> int:
    """The first player count (two-player first) that the game accepts on reset."""
    import textarena as ta

    for n in _PLAYER_COUNTS:
        saved, saved_np = random.getstate(), np.random.get_state()
        try:
            with _LOCK, _local_nltk_only():
                ta.make(env_id).reset(num_players=n, seed=0)
            return n
        except Exception:
            continue
        finally:
            random.setstate(saved)
            np.random.set_state(saved_np)
    raise UnknownEnvError(f"textarena:{env_id} accepts none of {list(_PLAYER_COUNTS)} players")


_PARAMS = re.compile(r"^(?P<id>[^()]+?)\s*(?:\((?P<params>[^()]*)\))?$")


def make_textarena(name: str, **kwargs: Any) -> TextArenaTextEnv:
    """Factory behind ``make("textarena:<id>")``; ``"Poker-v0(players=4)"`` sets the seats in the name."""
    try:
        import textarena  # noqa: F401 - the extra's presence, checked before anything else
    except ImportError:
        raise UnknownEnvError("TextArena games need the textarena extra: pip install 'llmmarl[textarena]'") from None
    m = _PARAMS.match(name.strip())
    if m is None:
        raise UnknownEnvError(f"cannot read {name!r}; write textarena:<id> or textarena:<id>(players=N)")
    for part in filter(None, (p.strip() for p in (m.group("params") or "").split(","))):
        key, sep, value = part.partition("=")
        if not sep or key.strip() != "players" or not value.strip().isdigit():
            raise UnknownEnvError(f"textarena:{name}: only players=N goes in the name; got {part!r}")
        kwargs.setdefault("num_players", int(value))
    return TextArenaTextEnv(m.group("id"), **kwargs)


def _first_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip() and set(line.strip()) != {"*"}]
    return f"{type(e).__name__}: {lines[0] if lines else ''}".rstrip(": ")
