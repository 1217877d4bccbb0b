"""OpenSpiel games as text environments, played through shimmy's PettingZoo wrapper.

:class:`OpenSpielTextEnv` is an :class:`~llmmarl.envs.pettingzoo.AECTextEnv` over shimmy's
``OpenSpielCompatibilityV0``. shimmy resolves chance nodes itself (it samples ``chance_outcomes()`` with the
``np_random`` seeded by ``reset(seed)``, so a seed replays the same deals). Two of its habits are not used:

* its rewards: shimmy 2.0.1 pays one player's final reward again on the dead steps after the end, so the
  textbook ``last()`` loop gets tic_tac_toe wrong in most random games. Its ``rewards`` are
  ``state.rewards()`` read after the chance nodes that follow a move. Rewards here are the change in the
  state's ``returns()`` over a step (move and chance nodes together), and the returns are ``state.returns()``:
  exactly the game's payoffs, whatever a game's ``rewards()`` covers.
* its truncation: shimmy counts chance nodes against ``max_game_length()``, which counts only player moves, so
  it cut kuhn_poker after the first move and bargaining before its last offers. OpenSpiel games always end by
  themselves; :class:`_OpenSpielAEC` ends them when the state is terminal and never truncates.

Text comes from a :class:`~llmmarl.envs.renderer.Renderer`, the same contract as PettingZoo games'. The default,
:class:`OpenSpielRenderer`, shows the seat's ``observation_string`` (which OpenSpiel defines as what that player
may see) and ``action_to_string`` labels; curated games override its ``observation`` and ``action_label``.
Any OpenSpiel game is playable as ``make("openspiel:<game>")``, e.g. ``"openspiel:tic_tac_toe"`` or
``"openspiel:hanabi(colors=2,ranks=3)"``; keyword arguments of ``make`` become game parameters.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any, Literal

import pyspiel
from shimmy.openspiel_compatibility import OpenSpielCompatibilityV0

from llmmarl.envs.base import MessageRules
from llmmarl.envs.pettingzoo import AECTextEnv
from llmmarl.envs.registry import UnknownEnvError
from llmmarl.envs.renderer import Renderer

TextSource = Literal["observation", "information_state"]


class _OpenSpielAEC(OpenSpielCompatibilityV0):
    """shimmy's wrapper, ending the game exactly when the OpenSpiel state is terminal (see the module doc)."""

    def _update_termination_truncation(self) -> None:
        over = self.game_state.is_terminal()
        self.terminations = {a: over for a in self.agents}
        self.truncations = {a: False for a in self.agents}


class OpenSpielRenderer(Renderer["OpenSpielTextEnv"]):
    """The fallback :class:`~llmmarl.envs.renderer.Renderer` of OpenSpiel games: OpenSpiel's own strings.

    A curated OpenSpiel game subclasses it and overrides the same methods as any renderer, reading the seat's
    OpenSpiel player id from ``env.player(agent)``. Read the seat's own view (``observation_string(player)``,
    ``information_state_string(player)``) or public facts; ``str(state)`` and ``state.history()`` show hidden
    cards and must not reach a seat's text. The ``raw`` observation (shimmy's) is not used.
    """

    #: Empty: the env describes the game from its OpenSpiel type. Curated renderers write the rules here.
    description: str = ""

    def __init__(self, source: TextSource | None = None) -> None:
        #: Which OpenSpiel string is the default text; None: the observation string when the game has one.
        self.source = source

    def observation(self, env: OpenSpielTextEnv, agent: str, raw: Any) -> str:
        state, kind, player = env.state, env.game.get_type(), env.player(agent)
        use_obs = self.source == "observation" or (self.source is None and kind.provides_observation_string)
        return state.observation_string(player) if use_obs else state.information_state_string(player)

    def action_label(self, env: OpenSpielTextEnv, agent: str, action: int) -> str:
        return env.state.action_to_string(env.player(agent), action)

    def vocabulary(self, env: OpenSpielTextEnv, agent: str) -> list[str] | None:
        """None by default: OpenSpiel's action strings may depend on the state, so they cannot be listed ahead
        of it. Curated games whose labels are fixed list them."""
        return None


class OpenSpielTextEnv(AECTextEnv):
    """An OpenSpiel game as a turn-based text environment (simultaneous nodes are asked one seat at a time).

    ``game`` is a name (``"kuhn_poker"``, ``"hanabi(colors=2)"``) or a loaded ``pyspiel.Game``; ``params`` are
    game parameters merged over those in the name. Seats are ``player_0``, ``player_1``... (OpenSpiel ids).
    Teams default to one team for games with identical payoffs (cooperative) and one team per seat otherwise.
    """

    pz: _OpenSpielAEC

    def __init__(
        self,
        game: str | pyspiel.Game,
        name: str | None = None,
        renderer: OpenSpielRenderer | None = None,
        teams: Mapping[str, str] | None = None,
        message_rules: MessageRules | None = None,
        **params: Any,
    ) -> None:
        loaded = pyspiel.load_game(game) if isinstance(game, str) else game
        if params:
            loaded = pyspiel.load_game(loaded.get_type().short_name, {**loaded.get_parameters(), **params})
        # shimmy reloads the game by short name + config on every reset, so the parameters go in as a config.
        short_name, config = loaded.get_type().short_name, dict(loaded.get_parameters())
        players = [f"player_{i}" for i in range(loaded.num_players())]
        if teams is None and loaded.get_type().utility == pyspiel.GameType.Utility.IDENTICAL:
            teams = dict.fromkeys(players, "team")
        super().__init__(
            name or f"openspiel:{short_name}",
            lambda: _OpenSpielAEC(game_name=short_name, config=config or None),
            renderer or OpenSpielRenderer(),
            teams,
            message_rules,
        )
        self.description = self.renderer.description or describe_game(loaded)
        # A cloned OpenSpiel state replays explicit chance outcomes from shimmy's copied random state; a sampled-
        # stochastic game draws them from the game object's own generator, which clone and original would share.
        self.cloneable = loaded.get_type().chance_mode != pyspiel.GameType.ChanceMode.SAMPLED_STOCHASTIC

    @property
    def state(self) -> pyspiel.State:
        """The current OpenSpiel state. It holds every seat's secrets: renderers read only their seat's view."""
        return self.pz.game_state

    @property
    def game(self) -> pyspiel.Game:
        """The loaded OpenSpiel game (reloaded by shimmy on reset, hanabi with the reset seed)."""
        return self.pz.game_state.get_game()

    def player(self, agent: str) -> int:
        """OpenSpiel player id of a seat."""
        return self.possible_agents.index(agent)

    def _step(self, actions: Mapping[str, int]) -> dict[str, float]:
        before = self.state.returns()
        (action,) = actions.values()
        self.pz.step(int(action))  # applies the move, then resolves the chance nodes that follow it
        after = self.state.returns()
        self._skip_dead()  # shimmy's dead steps re-pay the final reward; we never read its rewards
        return {a: after[i] - before[i] for i, a in enumerate(self.possible_agents)}

    def _returns(self) -> dict[str, float]:
        return {a: float(r) for a, r in zip(self.possible_agents, self.state.returns(), strict=True)}

    def _clone_memo(self) -> dict[int, Any]:
        # The state through OpenSpiel's own clone (its chance outcomes, dealt cards included, stay); the game and
        # its type are immutable and shared.
        pz = vars(self.pz)
        memo: dict[int, Any] = {id(pz[k]): pz[k] for k in ("_env", "game_type") if k in pz}
        if "game_state" in pz:  # set by the first reset
            memo[id(pz["game_state"])] = pz["game_state"].clone()
        return memo


_UTILITY_WORDS = {
    pyspiel.GameType.Utility.ZERO_SUM: "zero-sum",
    pyspiel.GameType.Utility.CONSTANT_SUM: "constant-sum",
    pyspiel.GameType.Utility.GENERAL_SUM: "general-sum",
    pyspiel.GameType.Utility.IDENTICAL: "cooperative (all players get the same payoff)",
}


def describe_game(game: pyspiel.Game) -> str:
    """A generic description from the game's OpenSpiel type (curated games write their own rules)."""
    kind = game.get_type()
    info = "perfect" if kind.information == pyspiel.GameType.Information.PERFECT_INFORMATION else "imperfect"
    text = (
        f"{kind.long_name} (OpenSpiel game '{kind.short_name}'), {game.num_players()} players, "
        f"{_UTILITY_WORDS.get(kind.utility, 'general-sum')}, {info} information."
    )
    with contextlib.suppress(pyspiel.SpielError):  # a few games do not declare their utility range
        text += f" Payoffs range from {game.min_utility():g} to {game.max_utility():g}."
    return text + " Each turn, choose one of the legal actions."


def make_openspiel(game: str, **params: Any) -> OpenSpielTextEnv:
    """Factory behind ``make("openspiel:<game>", **params)``: any OpenSpiel game with the generic renderer."""
    try:
        loaded = pyspiel.load_game(game)
    except pyspiel.SpielError as e:
        first_line = str(e).splitlines()[0]  # the rest lists every game
        raise UnknownEnvError(f"{first_line}; pyspiel.registered_names() lists OpenSpiel's games") from None
    return OpenSpielTextEnv(loaded, name=f"openspiel:{game}", **params)
