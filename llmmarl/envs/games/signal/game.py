"""Signal (``signal_v0``) as a text environment: the renderer and the factory over :mod:`.aec`'s PettingZoo env."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from llmmarl.envs.base import MessageRules
from llmmarl.envs.games.signal.aec import ITEM_NAMES, LISTENER, SPEAKER, env
from llmmarl.envs.pettingzoo import AECTextEnv, PettingZooTextEnv, Renderer


class SignalRenderer(Renderer):
    def __init__(self, items: tuple[str, ...], rounds: int) -> None:
        self.items, self.rounds = items, rounds
        self.description = (
            f"Signal, a cooperative game for a speaker and a listener on one team, {rounds} round(s). Each round "
            f"a secret goal is drawn from {len(items)} colors: {', '.join(items)}. Only the speaker sees it; the "
            "speaker's only move is 'ready', but the speaker may send the listener a short message first. The "
            "listener then picks one color. If it is the goal, both get +1; otherwise 0."
        )

    def observation(self, env: PettingZooTextEnv, agent: str, raw: Any) -> str:
        vec, k = np.asarray(raw["observation"]), len(self.items)
        rnd = int(np.argmax(vec[k : k + self.rounds])) + 1
        role = "speaker" if agent == SPEAKER else "listener"
        lines = [f"You are the {role}. Round {rnd} of {self.rounds}."]
        last_goal, last_pick = vec[k + self.rounds : 2 * k + self.rounds], vec[2 * k + self.rounds :]
        if last_goal.any():
            goal, pick = self.items[int(np.argmax(last_goal))], self.items[int(np.argmax(last_pick))]
            lines.append(f"Last round the goal was {goal} and the listener picked {pick}.")
        if agent == SPEAKER:
            lines.append(f"The secret goal is: {self.items[int(np.argmax(vec[:k]))]}.")
            lines.append("Your teammate, the listener, cannot see it. Tell them in your message, then choose 'ready'.")
        else:
            lines.append(f"The speaker has seen the secret goal, one of: {', '.join(self.items)}. You have not.")
            lines.append("Pick the goal, using the speaker's message if there is one.")
        return "\n".join(lines)

    def action_label(self, env: PettingZooTextEnv, agent: str, action: int) -> str:
        return "ready" if agent == SPEAKER else self.items[action]


SYMBOLS = ("A", "B", "C", "D", "E", "F", "G", "H", "I", "J")
VOCABULARIES: dict[str, tuple[str, ...] | None] = {"free": None, "colors": ITEM_NAMES, "symbols": SYMBOLS}


def make_signal(
    num_items: int = 4, rounds: int = 1, talk: bool = True, vocabulary: Literal["free", "colors", "symbols"] = "free"
) -> AECTextEnv:
    """Signal as text: ``num_items`` colors to choose from, ``rounds`` rounds; messages broadcast, 16 tokens.

    ``talk=False`` turns messages off: the no-communication ablation, where the listener can only guess.
    ``vocabulary`` closes the channel to one word per message, as in Lewis signalling games: ``"colors"`` (the
    color names, whose meaning the model already knows) or ``"symbols"`` (letters with no prior meaning, so a
    convention must emerge). ``"free"`` allows any short text.
    """
    if vocabulary not in VOCABULARIES:
        raise ValueError(f"vocabulary must be one of {sorted(VOCABULARIES)}, got {vocabulary!r}")
    words = VOCABULARIES[vocabulary]
    text_env = AECTextEnv(
        "signal_v0",
        lambda: env(num_items=num_items, rounds=rounds),
        SignalRenderer(ITEM_NAMES[:num_items], rounds),
        teams={SPEAKER: "team", LISTENER: "team"},
        message_rules=MessageRules(
            mode="broadcast" if talk else "off", max_tokens=16, vocabulary=words[:num_items] if words else None
        ),
    )
    text_env.cloneable = True  # goals come from the env's numpy generator, copied with it: the copy draws alike
    return text_env
