"""Messages between teammates, under each game's :class:`~llmmarl.envs.base.MessageRules`.

A message is sanitised (control tokens stripped, one line, quotes neutralised, cut to the token budget), then
delivered into each recipient's inbox, which its next prompt shows as a teammate's quoted words. Flattening to
one line matters: a message must not be able to forge an ``ACTION:`` line or a fake system instruction in the
recipient's prompt.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

from llmmarl.agents.turn import strip_control
from llmmarl.envs.base import TextEnv


def sanitise_message(text: str, max_tokens: int, truncate: Callable[[str, int], str]) -> str:
    text = " ".join(strip_control(text).split())
    return truncate(text.replace('"', "'"), max_tokens).strip()


class MessageBoard:
    """Delivers one game's messages. ``post`` returns the text as delivered, or None with ``dropped`` counted."""

    def __init__(self, env: TextEnv, truncate: Callable[[str, int], str]) -> None:
        self.env = env
        self.truncate = truncate
        self._inbox: dict[str, list[str]] = defaultdict(list)
        self.sent = 0
        self.dropped: dict[str, int] = defaultdict(int)  # reason -> count

    def post(self, sender: str, text: str, to: str | None = None) -> tuple[str, list[str]] | None:
        """Deliver ``text`` from ``sender``; returns (delivered text, recipients) or None if not delivered."""
        rules = self.env.message_rules
        if rules.mode == "off":
            self.dropped["talk not allowed"] += 1
            return None
        recipients = self.env.teammates(sender)
        if rules.mode == "directed":
            if to not in recipients:
                self.dropped["unknown recipient"] += 1
                return None
            recipients = [to]
        if not recipients:
            self.dropped["no teammates"] += 1
            return None
        clean = sanitise_message(text, rules.max_tokens, self.truncate)
        if not clean:
            self.dropped["empty"] += 1
            return None
        for r in recipients:
            self._inbox[r].append(f'{sender} says: "{clean}"')
        self.sent += 1
        return clean, recipients

    def take(self, agent: str) -> list[str]:
        """The messages waiting for ``agent``, removed from its inbox."""
        return self._inbox.pop(agent, [])
