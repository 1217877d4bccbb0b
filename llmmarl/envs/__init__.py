"""Text environments: the contract, the checker, PettingZoo/OpenSpiel adapters, the renderer and the game registry.

The built-in games are packages in :mod:`llmmarl.envs.games`, which lists them.
"""

from llmmarl.envs.base import MessageRules, NotCloneableError, Observation, TextEnv, TextEnvError, check_text_env
from llmmarl.envs.bots import BotSpec
from llmmarl.envs.registry import (
    EnvSpec,
    FamilySpec,
    UnknownEnvError,
    list_envs,
    make,
    register,
    register_family,
    register_game,
)

__all__ = [
    "BotSpec",
    "EnvSpec",
    "FamilySpec",
    "MessageRules",
    "NotCloneableError",
    "Observation",
    "TextEnv",
    "TextEnvError",
    "UnknownEnvError",
    "check_text_env",
    "list_envs",
    "make",
    "register",
    "register_family",
    "register_game",
]
