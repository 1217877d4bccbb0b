"""Text environments: the contract, the checker, PettingZoo/OpenSpiel adapters and the game registry."""

from llmmarl.envs.base import MessageRules, Observation, TextEnv, TextEnvError, check_text_env
from llmmarl.envs.registry import EnvSpec, UnknownEnvError, list_envs, make, register

__all__ = [
    "EnvSpec",
    "MessageRules",
    "Observation",
    "TextEnv",
    "TextEnvError",
    "UnknownEnvError",
    "check_text_env",
    "list_envs",
    "make",
    "register",
]
