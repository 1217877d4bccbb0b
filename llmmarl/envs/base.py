"""The text-environment contract every game implements.

A :class:`TextEnv` is a multi-agent game seen through text. It covers PettingZoo's turn-based AEC API and its
simultaneous-move Parallel API with one loop::

    env.reset(seed=0)
    while not env.done:
        acting = env.pending()                       # one agent (turn-based) or several (simultaneous)
        obs = {a: env.observe(a) for a in acting}    # what each seat may see, as text + legal labels
        env.step({a: choose(obs[a]) for a in acting})  # action ids, one per acting agent
    env.returns()                                    # total reward per agent, the game's own payoffs

Each seat sees only what its player may see: ``observe(a)`` never shows another player's hidden cards or
another seat's legal moves. :func:`check_text_env` validates an implementation against this contract.

Most games have labelled moves: the action is one of ``legal_actions``, given by its id. In a *free-text* game
(``Observation.free_text`` set, e.g. TextArena's negotiation and bluffing games) the action is the text itself and
the game judges it: ``step`` takes the text, and :meth:`TextEnv.rejection` says why the game refused a move.
"""

from __future__ import annotations

import copy
import math
import random
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, Literal, NoReturn, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Observation(BaseModel):
    """What one agent sees when it must act."""

    model_config = ConfigDict(frozen=True)

    agent: str = Field(description="The acting agent (seat name, e.g. 'player_0').")
    text: str = Field(description="The game state as this seat may see it, ready to put in a prompt.")
    legal_actions: list[str] = Field(description="Labels of the legal actions, unique, in a stable order.")
    action_ids: list[int] = Field(description="The environment's action id for each label, same order.")
    free_text: int | None = Field(
        default=None,
        ge=1,
        description="Set when the action is free text that the game judges: the most characters it may have. "
        "``legal_actions`` are then the moves the game lists as valid now (possibly none), and ``step`` takes the "
        "text. None: the action is one of ``legal_actions``.",
    )

    @model_validator(mode="after")
    def _labels_match_ids(self) -> Observation:
        if len(self.legal_actions) != len(self.action_ids):
            raise ValueError(f"{len(self.legal_actions)} labels for {len(self.action_ids)} action ids")
        if len(set(self.legal_actions)) != len(self.legal_actions):
            raise ValueError(f"legal action labels must be unique, got {self.legal_actions}")
        return self

    def action_id(self, label: str) -> int:
        """The action id of a legal label (KeyError if it is not legal)."""
        try:
            return self.action_ids[self.legal_actions.index(label)]
        except ValueError:
            raise KeyError(label) from None

    def label(self, action_id: int) -> str:
        return self.legal_actions[self.action_ids.index(action_id)]


#: What ``TextEnv.step`` takes per seat: an action id, or the text of a free-text move.
Action = int | str


class Rejection(BaseModel):
    """A free-text game's verdict on a move it refused (see :meth:`TextEnv.rejection`)."""

    model_config = ConfigDict(frozen=True)

    reason: str = Field(description="The game's own words for why the move was refused.")
    final: bool = Field(
        description="The refusal cost the seat the game (a loss or elimination) rather than a retry of its move."
    )


class MessageRules(BaseModel):
    """How agents may talk in a game. Messages reach teammates' next observation as quoted text."""

    model_config = ConfigDict(frozen=True)

    mode: Literal["off", "broadcast", "directed"] = Field(
        default="off",
        description="off: no talk (e.g. Hanabi, where free talk would leak hidden cards); broadcast: every "
        "teammate hears it; directed: the agent names one teammate.",
    )
    max_tokens: int = Field(
        default=32, ge=1, description="Messages are cut to this many tokens of the model's tokenizer."
    )
    cost: float = Field(
        default=0.0, ge=0.0, description="Reward cost per message sent (used by training reward terms)."
    )
    vocabulary: tuple[str, ...] | None = Field(
        default=None,
        description="A closed channel, as in Lewis signalling games: a message is exactly one of these words. "
        "The turn grammar allows only them; any other message is dropped and counted ('outside vocabulary').",
    )

    @model_validator(mode="after")
    def _words_are_single_line(self) -> MessageRules:
        if self.vocabulary is not None:
            bad = [w for w in self.vocabulary if not w.strip() or "\n" in w or w != w.strip()]
            if not self.vocabulary or bad:
                raise ValueError(f"vocabulary must be non-empty, stripped, one-line words; got {self.vocabulary!r}")
        return self


ForecastTarget = Literal["outcome", "payoff", "ends_within", "opponent_card"]


class ForecastSpec(BaseModel):
    """What a game lets an agent forecast about how it will evolve, and how the forecast is checked.

    * ``outcome``: probabilities of the seat's final outcome (``labels``: win/draw/loss), scored by the Brier score.
    * ``payoff``: the seat's expected final return, scored by the squared error.
    * ``ends_within``: whether and how the game ends within ``horizon`` steps from this one (``labels``: the
      outcomes plus ``"continues"``), scored by exact match.
    * ``opponent_card``: the opponent's hidden card (``labels``: the card names), scored by exact match against
      the simulator's true state when the forecast is made (every turn, not only at showdowns).
    """

    model_config = ConfigDict(frozen=True)

    target: ForecastTarget = Field(description="What is forecast (see the class doc).")
    labels: tuple[str, ...] = Field(default=(), description="The possible answers (outcome, ends_within, cards).")
    horizon: int = Field(default=0, ge=0, description="ends_within: steps ahead, counting the forecasting step.")
    scale: float = Field(default=1.0, gt=0.0, description="payoff: the largest possible |return|, to normalise.")

    @property
    def question(self) -> str:
        """The one line a prompt asks."""
        if self.target == "outcome":
            shape = "; ".join(f"{label}=<probability>" for label in self.labels)
            return f"{shape} (your final result; the probabilities sum to 1)"
        if self.target == "payoff":
            return f"<your expected final payoff, a number from {-self.scale:g} to {self.scale:g}>"
        if self.target == "ends_within":
            return f"<one of: {', '.join(self.labels)}> (how the game stands {self.horizon} moves from now)"
        return f"<one of: {', '.join(self.labels)}> (the card your opponent holds)"


class NotCloneableError(NotImplementedError):
    """:meth:`TextEnv.clone` of a game that does not declare :attr:`TextEnv.cloneable`."""


class TextEnv(ABC):
    """A multi-agent game as text. Subclasses set the attributes below in ``__init__``."""

    #: Registered name, e.g. ``"tictactoe_v3"``.
    name: str
    #: Every seat that may ever act, in seat order. Agent names are seat names (``"player_0"``...).
    possible_agents: list[str]
    #: Team of each seat. Seats of one team are teammates: they may message each other and share outcomes.
    #: Competitive games put every seat in its own team.
    teams: dict[str, str]
    #: The game's rules in a few sentences, shown to LLM agents in their system prompt.
    description: str
    #: Whether and how agents may message teammates.
    message_rules: MessageRules = MessageRules()
    #: Reward given to an agent that forfeits (the "forfeit" fallback for illegal output).
    forfeit_reward: float = -1.0
    #: What agents may forecast (FORECAST line); None: the final outcome (see :meth:`forecast_spec`).
    forecast: ForecastSpec | None = None
    #: Whether :meth:`clone` copies the game in play. Declared per game, only where the copy is exact and
    #: independent: the same moves give the same observations, chance and rewards in both, and neither sees the
    #: other's moves.
    cloneable: bool = False

    @abstractmethod
    def reset(self, seed: int | None = None) -> None:
        """Start a new game. The same seed gives the same game."""

    @abstractmethod
    def pending(self) -> list[str]:
        """Agents that must act now: one in turn-based games, several in simultaneous ones, [] when done."""

    @abstractmethod
    def observe(self, agent: str) -> Observation:
        """The observation of a pending agent."""

    @abstractmethod
    def _step(self, actions: Mapping[str, Any]) -> dict[str, float]:
        """Apply one action per pending agent; return the reward each agent got from this step.

        Actions are ids (``Mapping[str, int]``), or texts in a free-text game (:data:`Action`): typed ``Any`` here so
        that games with labelled moves keep declaring ``Mapping[str, int]``."""

    @abstractmethod
    def _returns(self) -> dict[str, float]:
        """Total reward per agent so far (the game's payoffs once it is done)."""

    @property
    @abstractmethod
    def _finished(self) -> bool:
        """True once the game is over."""

    # ---- shared behaviour: forfeits and bookkeeping ------------------------------------------------------
    _forfeited: dict[str, float] | None = None

    def step(self, actions: Mapping[str, Action]) -> dict[str, float]:
        """Apply the actions of all pending agents. Raises ValueError for a missing, extra or illegal action.

        A free-text seat's action is its text (an id of one of its listed moves is read as that move's label); the
        game, not this check, judges the text (:meth:`rejection`).
        """
        pending = self.pending()
        if set(actions) != set(pending):
            raise ValueError(f"expected actions for {pending}, got {sorted(actions)}")
        checked: dict[str, Action] = {}
        for agent, action in actions.items():
            obs = self.observe(agent)
            if obs.free_text is not None and isinstance(action, int) and action in obs.action_ids:
                action = obs.label(action)
            if obs.free_text is not None and not isinstance(action, str):
                raise ValueError(f"{agent} plays free text: expected a string, got {action!r}")
            if obs.free_text is None and (not isinstance(action, int) or action not in obs.action_ids):
                raise ValueError(f"illegal action {action!r} for {agent}; legal ids: {obs.action_ids}")
            checked[agent] = action
        return self._step(checked)

    def rejection(self, agent: str) -> Rejection | None:
        """Why the game refused ``agent``'s move in the last step, or None if it took it (or the game has labelled
        moves, which are never refused). Free-text games judge moves themselves; the runner counts a refusal as an
        invalid answer, and a final one (:attr:`Rejection.final`) as a forfeit."""
        return None

    def forfeit(self, agent: str) -> None:
        """End the game now: ``agent`` gets ``forfeit_reward``, the others keep what they have.

        Used by the runner when an agent's output stays illegal after a re-ask and the fallback is "forfeit"
        (PettingZoo's TerminateIllegalWrapper does the same for illegal moves).
        """
        returns = dict(self._returns())
        returns[agent] = self.forfeit_reward
        self._forfeited = returns

    @property
    def done(self) -> bool:
        return self._forfeited is not None or self._finished

    def returns(self) -> dict[str, float]:
        return dict(self._forfeited) if self._forfeited is not None else self._returns()

    def action_vocabulary(self, agent: str) -> list[str] | None:
        """Every action label ``agent`` can ever play, or None when unknown or too many to list.

        Grammar-constrained predictions of ``agent``'s next action choose from these. Labels must not depend on
        the game's state (a state-dependent label would make a prediction unscorable). Default: unknown.
        """
        return None

    def forecast_spec(self, agent: str) -> ForecastSpec:
        """What ``agent`` may forecast: :attr:`forecast`, else outcome probabilities (win/loss when the game has no
        rival team, as :func:`~llmmarl.records.outcomes_from_returns` scores it; else win/draw/loss)."""
        if self.forecast is not None:
            return self.forecast
        rivals = any(self.teams[a] != self.teams[agent] for a in self.possible_agents)
        return ForecastSpec(target="outcome", labels=("win", "draw", "loss") if rivals else ("win", "loss"))

    def forecast_truth(self, agent: str) -> str | None:
        """For forecasts checked against the hidden state now (``opponent_card``): the true answer for ``agent``
        at this moment, read from the simulator. None for forecasts scored at the end of the game (the default)."""
        return None

    def clone(self) -> Self:
        """An independent copy of the game as it stands, chance included: what is dealt stays dealt, and future
        chance draws follow the same random state, so the same moves play out identically in the copy and in the
        original while neither affects the other. For search and Monte-Carlo estimates from a state.

        Raises :class:`NotCloneableError` naming the game unless it declares :attr:`cloneable`."""
        if not self.cloneable:
            raise NotCloneableError(
                f"game {getattr(self, 'name', type(self).__name__)!r} cannot clone its state: it does not declare "
                "cloneable (see TextEnv.clone)"
            )
        return self._clone()

    def _clone(self) -> Self:
        """How :meth:`clone` copies: a deep copy, right for games held in plain Python objects. Games over native
        states or libraries whose objects copy themselves by rebuilding (PettingZoo's EzPickle) override it."""
        return copy.deepcopy(self)

    def teammates(self, agent: str) -> list[str]:
        return [a for a in self.possible_agents if a != agent and self.teams[a] == self.teams[agent]]

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (renderers, native games)."""

    def _reset_forfeit(self) -> None:
        self._forfeited = None


# A bracketed move quoted in the text, not a speaker tag at the start of a line ("[GAME] ...", "[Player 0] ...").
_QUOTED_MOVE = re.compile(r"(?<!\n)\[[^\[\]\n]{1,60}\]")


def random_action(obs: Observation, rng: random.Random) -> Action:
    """A uniformly random legal action id; in a free-text game without listed moves, one of the bracketed moves the
    observation quotes (TextArena's rules quote their move formats, e.g. ``[Accept]``), or the empty text."""
    if obs.action_ids:
        return rng.choice(obs.action_ids)
    quoted = sorted(set(_QUOTED_MOVE.findall("\n" + obs.text)))
    return rng.choice(quoted) if quoted else ""


class TextEnvError(AssertionError):
    """A TextEnv broke its contract. The message says what and where."""


def check_text_env(env: TextEnv, episodes: int = 3, seed: int = 0, max_steps: int = 10_000) -> None:
    """Validate ``env`` against the :class:`TextEnv` contract by playing random legal games.

    Raises :class:`TextEnvError` naming the first problem found. Checks: the declared attributes; every pending
    agent is a known seat with a non-empty observation whose labels map to distinct ids; steps accept legal
    actions and reject illegal ones; rewards and returns name known agents and are finite; the game ends; the
    same seed replays the same first observation. In a free-text game the random moves are those of
    :func:`random_action` (a listed move, else a quoted one), and a seat may have no listed moves.
    """
    checker = _Checker(env)
    checker.attributes()
    rng = random.Random(seed)
    first_texts = [checker.episode(seed + episode, rng, max_steps) for episode in range(episodes)]
    env.reset(seed=seed)
    if first_texts and env.observe(env.pending()[0]).text != first_texts[0]:
        checker.fail("the same seed gave a different first observation: reset(seed) must be deterministic")


class _Checker:
    def __init__(self, env: TextEnv) -> None:
        self.env = env

    def fail(self, msg: str) -> NoReturn:
        raise TextEnvError(f"{type(self.env).__name__} ({getattr(self.env, 'name', '?')}): {msg}")

    def attributes(self) -> None:
        env = self.env
        for attr in ("name", "possible_agents", "teams", "description"):
            if not getattr(env, attr, None):
                self.fail(f"attribute '{attr}' must be set and non-empty")
        if set(env.teams) != set(env.possible_agents):
            self.fail(f"teams {sorted(env.teams)} must name exactly the possible agents {env.possible_agents}")

    def observation(self, agent: str) -> Observation:
        if agent not in self.env.possible_agents:
            self.fail(f"pending agent {agent!r} is not in possible_agents")
        obs = self.env.observe(agent)
        if obs.agent != agent:
            self.fail(f"observe({agent!r}) returned an observation for {obs.agent!r}")
        if not obs.text.strip():
            self.fail(f"empty observation text for {agent}")
        if not obs.legal_actions and obs.free_text is None:
            self.fail(f"pending agent {agent} has no legal actions")
        if len(set(obs.action_ids)) != len(obs.action_ids):
            self.fail(f"duplicate action ids for {agent}: {obs.action_ids}")
        return obs

    def step(self, actions: dict[str, Action]) -> None:
        env = self.env
        first = next(iter(actions))
        illegal = max(max(env.observe(a).action_ids, default=0) for a in actions) + 1000
        try:
            env.step({**actions, first: illegal})
        except ValueError:
            pass
        else:
            self.fail(f"step accepted the illegal action id {illegal}")
        for agent, r in env.step(actions).items():
            if agent not in env.possible_agents:
                self.fail(f"reward for unknown agent {agent!r}")
            if not math.isfinite(r):
                self.fail(f"non-finite reward {r} for {agent}")

    def episode(self, seed: int, rng: random.Random, max_steps: int) -> str:
        """Play one random game; return the first observation's text."""
        env = self.env
        env.reset(seed=seed)
        if env.done:
            self.fail("done right after reset")
        first_text = ""
        steps = 0
        while not env.done:
            pending = env.pending()
            if not pending:
                self.fail("not done but no agent is pending")
            observations = {agent: self.observation(agent) for agent in pending}
            if steps == 0:
                first_text = observations[pending[0]].text
            self.step({agent: random_action(obs, rng) for agent, obs in observations.items()})
            steps += 1
            if steps > max_steps:
                self.fail(f"episode did not end within {max_steps} steps")
        returns = env.returns()
        if set(returns) != set(env.possible_agents):
            self.fail(f"returns name {sorted(returns)}, expected {env.possible_agents}")
        if not all(math.isfinite(v) for v in returns.values()):
            self.fail(f"non-finite returns {returns}")
        if env.pending():
            self.fail(f"agents {env.pending()} pending after the game ended")
        return first_text
