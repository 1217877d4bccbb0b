"""Registry of playable games.

A new game is a new module in ``llmmarl/envs/games/`` that calls :func:`register` once (PettingZoo-registry
style); nothing in the core changes. Besides registered names, :func:`make` accepts:

* ``"pettingzoo:classic.go_v5"`` - any PettingZoo module with Discrete actions, through the generic renderer;
* ``"openspiel:kuhn_poker"`` - any OpenSpiel game (a prefix registered with :func:`register_prefix`);
* ``"some.module:factory"`` - a callable returning a :class:`TextEnv`, a PettingZoo ``AECEnv`` or ``ParallelEnv``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pettingzoo import AECEnv, ParallelEnv

from llmmarl.envs.base import TextEnv
from llmmarl.envs.pettingzoo import AECTextEnv, ParallelTextEnv

Kind = Literal["competitive", "cooperative", "general-sum"]


@dataclass(frozen=True)
class EnvSpec:
    name: str
    factory: Callable[..., TextEnv]
    summary: str
    kind: Kind
    source: str = "llmmarl"


_REGISTRY: dict[str, EnvSpec] = {}
#: Name prefixes routed to a factory: ``make("openspiel:tic_tac_toe", **kw)`` calls ``factory("tic_tac_toe", **kw)``.
_PREFIXES: dict[str, Callable[..., TextEnv]] = {}


class UnknownEnvError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; this one is meant to be read
        return str(self.args[0])


def register(name: str, factory: Callable[..., TextEnv], summary: str, kind: Kind, source: str = "llmmarl") -> None:
    """Register a game under ``name``. Re-registering a name replaces it (handy in notebooks)."""
    _REGISTRY[name] = EnvSpec(name=name, factory=factory, summary=summary, kind=kind, source=source)


def register_prefix(prefix: str, factory: Callable[..., TextEnv]) -> None:
    """Route every name ``"<prefix>:<rest>"`` to ``factory(rest, **kwargs)`` (a family of games, e.g. OpenSpiel's)."""
    _PREFIXES[prefix] = factory


def _load_builtin_games() -> None:
    importlib.import_module("llmmarl.envs.games")


def list_envs() -> list[EnvSpec]:
    _load_builtin_games()
    return sorted(_REGISTRY.values(), key=lambda s: s.name)


def make(name: str, **kwargs: Any) -> TextEnv:
    """Build the text environment registered as ``name`` (see the module docstring for other forms)."""
    _load_builtin_games()
    if name in _REGISTRY:
        return _REGISTRY[name].factory(**kwargs)
    prefix, sep, rest = name.partition(":")
    if sep and prefix in _PREFIXES:
        return _PREFIXES[prefix](rest, **kwargs)
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
