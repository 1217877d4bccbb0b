"""Registry of playable games and the scripted bots that come with them.

The built-in games are listed in one place, :mod:`llmmarl.envs.games` (``BUILTIN_GAMES``): each is a package there
that describes itself with one :class:`EnvSpec` (name, factory, summary, kind, its bots), and the list registers
them the first time a game is asked for. Your own game is a :class:`EnvSpec` passed to :func:`register_game` (or
:func:`register`, the same from its fields); nothing in the core changes. Besides registered names, :func:`make`
accepts:

* ``"pettingzoo:classic.go_v5"`` - any PettingZoo module with Discrete actions, through the generic renderer;
* ``"openspiel:kuhn_poker"`` - any OpenSpiel game (a :class:`FamilySpec`: a name prefix and its factory);
* ``"some.module:factory"`` - a callable returning a :class:`TextEnv`, a PettingZoo ``AECEnv`` or ``ParallelEnv``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pettingzoo import AECEnv, ParallelEnv

from llmmarl.envs.base import TextEnv
from llmmarl.envs.bots import BotSpec
from llmmarl.envs.measures import GameMeasure, UnknownMeasureError
from llmmarl.envs.pettingzoo import AECTextEnv, ParallelTextEnv

__all__ = [
    "BotSpec",
    "EnvSpec",
    "FamilySpec",
    "Kind",
    "UnknownEnvError",
    "game_bots",
    "game_measure",
    "game_measures",
    "list_envs",
    "make",
    "register",
    "register_family",
    "register_game",
    "register_prefix",
]

Kind = Literal["competitive", "cooperative", "general-sum"]


@dataclass(frozen=True)
class EnvSpec:
    """One game: how to build it (``factory(**kwargs)``), a one-line summary, its kind and its bots."""

    name: str
    factory: Callable[..., TextEnv]
    summary: str
    kind: Kind
    #: Where the game comes from: "llmmarl" (our own), "pettingzoo", "openspiel".
    source: str = "llmmarl"
    bots: tuple[BotSpec, ...] = ()
    #: The game's own prompt templates (``NAME.j2``, ``ROLE/NAME.j2``), usually its package's ``prompts/`` folder;
    #: they replace the defaults, and ``prompts/GAME/`` of the prompt root replaces them (``prompts/README.md``).
    prompts: Path | None = None
    #: What the game can measure of a policy beyond its games' outcomes (:mod:`llmmarl.envs.measures`).
    measures: tuple[GameMeasure, ...] = ()


@dataclass(frozen=True)
class FamilySpec:
    """A family of games reached by a name prefix: ``make("<prefix>:<rest>", **kw)`` calls ``factory(rest, **kw)``."""

    prefix: str
    factory: Callable[..., TextEnv]
    bots: tuple[BotSpec, ...] = ()


_REGISTRY: dict[str, EnvSpec] = {}
_FAMILIES: dict[str, FamilySpec] = {}
_builtin_loaded = False


class UnknownEnvError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; this one is meant to be read
        return str(self.args[0])


def register_game(spec: EnvSpec) -> None:
    """Register a game under ``spec.name``. Re-registering a name replaces it, bots included (handy in notebooks)."""
    _load_builtin_games()  # the built-ins first, so that yours replace them and not the other way round
    _REGISTRY[spec.name] = spec


def register(
    name: str,
    factory: Callable[..., TextEnv],
    summary: str,
    kind: Kind,
    source: str = "llmmarl",
    bots: tuple[BotSpec, ...] = (),
    prompts: Path | None = None,
    measures: tuple[GameMeasure, ...] = (),
) -> None:
    """Register a game from its fields (:func:`register_game` of an :class:`EnvSpec`)."""
    register_game(EnvSpec(name, factory, summary, kind, source=source, bots=bots, prompts=prompts, measures=measures))


def register_family(spec: FamilySpec) -> None:
    """Route every name ``"<prefix>:<rest>"`` to ``spec.factory(rest, **kwargs)`` (a family such as OpenSpiel's)."""
    _load_builtin_games()
    _FAMILIES[spec.prefix] = spec


def register_prefix(prefix: str, factory: Callable[..., TextEnv]) -> None:
    """:func:`register_family` without bots."""
    register_family(FamilySpec(prefix=prefix, factory=factory))


def _load_builtin_games() -> None:
    """Register the games and families that :mod:`llmmarl.envs.games` lists, once, before any other."""
    global _builtin_loaded
    if _builtin_loaded:
        return
    # Imported here, not at the top: the game packages import this module for EnvSpec.
    from llmmarl.envs.games import BUILTIN_FAMILIES, BUILTIN_GAMES

    _REGISTRY.update({spec.name: spec for spec in BUILTIN_GAMES})
    _FAMILIES.update({spec.prefix: spec for spec in BUILTIN_FAMILIES})
    _builtin_loaded = True


def list_envs() -> list[EnvSpec]:
    _load_builtin_games()
    return sorted(_REGISTRY.values(), key=lambda s: s.name)


def game_bots() -> list[BotSpec]:
    """The bots of every registered game, in registration order, then those of the families."""
    _load_builtin_games()
    games = [bot for spec in _REGISTRY.values() for bot in spec.bots]
    return games + [bot for family in _FAMILIES.values() for bot in family.bots]


def game_measures(name: str) -> dict[str, GameMeasure]:
    """The measures the game registered as ``name`` declares, by name; none for a game built from a path or a
    family, or not registered."""
    _load_builtin_games()
    spec = _REGISTRY.get(name)
    return {m.name: m for m in spec.measures} if spec is not None else {}


def game_measure(name: str, measure: str) -> GameMeasure:
    """The measure ``measure`` of the game registered as ``name``, or an error listing what it declares."""
    declared = game_measures(name)
    if measure in declared:
        return declared[measure]
    offer = f"it declares {', '.join(sorted(declared))}" if declared else "it declares no measures"
    raise UnknownMeasureError(f"game {name!r} has no measure {measure!r}: {offer}")


def make(name: str, **kwargs: Any) -> TextEnv:
    """Build the text environment registered as ``name`` (see the module docstring for other forms)."""
    _load_builtin_games()
    if name in _REGISTRY:
        return _REGISTRY[name].factory(**kwargs)
    prefix, sep, rest = name.partition(":")
    if sep and prefix in _FAMILIES:
        return _FAMILIES[prefix].factory(rest, **kwargs)
    if sep:
        return _make_from_path(name, **kwargs)
    known = ", ".join(sorted(_REGISTRY))
    raise UnknownEnvError(
        f"unknown environment {name!r}. Registered: {known}. Any PettingZoo env also works as "
        f"'pettingzoo:classic.go_v5', any OpenSpiel game as 'openspiel:kuhn_poker', and your own as "
        f"'your.module:factory'."
    )


def _make_from_path(name: str, **kwargs: Any) -> TextEnv:
    module_path, _, attr = name.partition(":")
    if module_path == "pettingzoo":
        module_path, attr = "pettingzoo." + attr, "env"
    try:
        factory = getattr(importlib.import_module(module_path), attr)
    except (ImportError, AttributeError) as e:
        raise UnknownEnvError(f"cannot load environment {name!r}: {e}") from None
    built = factory(**kwargs)
    if isinstance(built, TextEnv):
        return built
    if isinstance(built, AECEnv):
        return AECTextEnv(name, lambda: built)
    if isinstance(built, ParallelEnv):
        return ParallelTextEnv(name, lambda: built)
    raise UnknownEnvError(f"{name!r} returned {type(built).__name__}, not a TextEnv, AECEnv or ParallelEnv")
