"""Algorithms by name: what ``algorithm:`` in a training config may say.

An algorithm is a :class:`~llmmarl.train.loop.MultiAgentTrainer` subclass (most are an advantage estimator plus a
loss, :class:`~llmmarl.train.policy_gradient.PolicyGradientTrainer`) and, if it has settings, a pydantic model of
its settings block: the config key of the block is the algorithm's name (``ppo: {gamma: 0.99}``). A config names
an algorithm in one of two ways:

* a registered name (:func:`register_algorithm`): the built-ins (``grpo``, ``ppo``, ``rloo``, ``all_action``)
  are registered in :mod:`llmmarl.train`, with their trainer loaded on first use (the trainers import torch and
  TRL, and a config must validate without them);
* ``your.module:YourTrainer``: a trainer class outside the package, imported when the config is read; its
  ``algorithm`` names its settings block and its ``settings_model`` declares it. Adding an algorithm is then one
  file, with nothing to register.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

if TYPE_CHECKING:
    from llmmarl.train.loop import MultiAgentTrainer

__all__ = [
    "AlgorithmEntry",
    "UnknownAlgorithmError",
    "algorithms",
    "lookup",
    "read_settings_block",
    "register_algorithm",
]


class UnknownAlgorithmError(ValueError):
    """``algorithm:`` names neither a registered algorithm nor a trainer class that can be loaded."""


@dataclass(frozen=True)
class AlgorithmEntry:
    """One algorithm: its name (also the config key of its settings block), its trainer and its settings model."""

    name: str
    trainer: Callable[[], type[MultiAgentTrainer]]
    settings: type[BaseModel] | None = None


_REGISTRY: dict[str, AlgorithmEntry] = {}


def register_algorithm(
    name: str, trainer: Callable[[], type[MultiAgentTrainer]], settings: type[BaseModel] | None = None
) -> None:
    """Make ``algorithm: name`` train with the class ``trainer()`` returns, its block ``name:`` read as ``settings``
    (replaces a same name)."""
    _REGISTRY[name] = AlgorithmEntry(name, trainer, settings)


def algorithms() -> list[str]:
    """The registered algorithm names."""
    return sorted(_REGISTRY)


def lookup(ref: str) -> AlgorithmEntry:
    """The algorithm ``ref`` names: a registered name or ``module:Class``; one clear error otherwise."""
    if ref in _REGISTRY:
        return _REGISTRY[ref]
    module, sep, attr = ref.partition(":")
    if not (sep and module and attr):
        raise UnknownAlgorithmError(
            f"unknown algorithm {ref!r}; registered: {', '.join(algorithms())}; or your own trainer class as "
            "'your.module:YourTrainer'"
        )
    try:
        found = getattr(importlib.import_module(module), attr)
    except Exception as e:  # an outside module may fail in any way: say which and why, in one line
        raise UnknownAlgorithmError(f"cannot load algorithm {ref!r}: {type(e).__name__}: {e}") from None
    from llmmarl.train.loop import MultiAgentTrainer  # torch: only for algorithms from outside the package

    if not (isinstance(found, type) and issubclass(found, MultiAgentTrainer)):
        raise UnknownAlgorithmError(f"algorithm {ref!r} is {found!r}, not a MultiAgentTrainer subclass")
    name = getattr(found, "algorithm", None)
    if not isinstance(name, str) or not name:
        raise UnknownAlgorithmError(f"algorithm {ref!r}: set its class attribute algorithm (the name of its runs)")
    return AlgorithmEntry(name, lambda: found, found.settings_model)


def read_settings_block(ref: str, extra: dict[str, Any]) -> BaseModel | None:
    """A config's keys besides its declared fields (``extra``, changed in place): only algorithm ``ref``'s settings
    block may be there; it is read by the algorithm's settings model (its defaults when absent, so that a dumped
    config records the settings used). Returns the block (None for an algorithm without settings); a
    ``ValueError`` that says what to change for anything else."""
    algo = lookup(ref)
    for key in extra:
        if key == algo.name and algo.settings is not None:
            continue
        if key == algo.name:
            raise ValueError(f"{key}: algorithm: {ref} has no settings: remove the {key}: block")
        if key in _REGISTRY:
            raise ValueError(
                f"{key}: settings are for algorithm: {key}, this config has algorithm: {ref}: remove the {key}: "
                f"block or set algorithm: {key}"
            )
        raise ValueError(f"{key}: Extra inputs are not permitted (not a config key, nor a settings block)")
    if algo.settings is None:
        return None
    block = extra.get(algo.name)
    if not isinstance(block, algo.settings):
        try:
            block = algo.settings.model_validate(block if block is not None else {})
        except ValidationError as e:
            raise ValueError(
                "; ".join(f"{'.'.join(map(str, (algo.name, *err['loc'])))}: {err['msg']}" for err in e.errors())
            ) from None
        extra[algo.name] = block
    return block
