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
        self.last_dropped: str | None = None  # why the latest post was not delivered

    def post(self, sender: str, text: str, to: str | None = None) -> tuple[str, list[str]] | None:
        """Deliver ``text`` from ``sender``; returns (delivered text, recipients) or None if not delivered."""
        rules = self.env.message_rules
        self.last_dropped = None
        if rules.mode == "off":
            self._drop("talk not allowed")
            return None
        recipients = self.env.teammates(sender)
        if rules.mode == "directed":
            if to not in recipients:
                self._drop("unknown recipient")
                return None
            recipients = [to]
        if not recipients:
            self._drop("no teammates")
            return None
        clean = sanitise_message(text, rules.max_tokens, self.truncate)
        if not clean:
            self._drop("empty")
            return None
        if rules.vocabulary is not None:
            # Unconstrained models add case or punctuation ("Blue."): that is still the word; anything else is not.
            word = clean.strip(" .,!;:'").lower()
            clean = next((w for w in rules.vocabulary if w.lower() == word), "")
            if not clean:
                self._drop("outside vocabulary")
                return None
        for r in recipients:
            self._inbox[r].append(f'{sender} says: "{clean}"')
        self.sent += 1
        return clean, recipients

    def _drop(self, reason: str) -> None:
        self.dropped[reason] += 1
        self.last_dropped = reason

    def take(self, agent: str) -> list[str]:
        """The messages waiting for ``agent``, removed from its inbox."""
        return self._inbox.pop(agent, [])
