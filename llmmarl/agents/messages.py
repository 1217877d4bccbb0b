"""Messages between teammates, under each game's :class:`~llmmarl.envs.base.MessageRules`.

A message is sanitised (control tokens stripped, one line, quotes neutralised, cut to the token budget and to
:data:`CHARS_PER_TOKEN` characters per token), then delivered into each recipient's inbox, which its next prompt
shows as a teammate's quoted words. Flattening to one line matters: a message must not be able to forge an
``ACTION:`` line or a fake system instruction in the recipient's prompt. Control tokens are both the chat tokens
every template uses (``<|im_start|>``, ``[INST]``...) and the backend's own
(:func:`~llmmarl.backends.base.special_tokens`, which also reaches through backends that wrap others).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

from llmmarl.agents.turn import strip_control
from llmmarl.envs.base import TextEnv

# Without a local tokenizer the token budget counts whitespace-separated words, so one 20,000-character "word"
# would pass; this many characters per budgeted token bounds the text either way (real tokens average ~4).
CHARS_PER_TOKEN = 8


def strip_tokens(text: str, special: Sequence[str] = ()) -> str:
    """``text`` without the chat control tokens we know of, nor the tokenizer's ``special`` tokens.

    Model text shown back to a model (a message, the answer quoted in a re-ask) must not contain them: chat
    templates paste text in literally and tokenizers turn the strings back into the real control tokens.
    """
    for token in sorted(special, key=len, reverse=True):  # longest first: "<|im_end|>" before "<|im"
        text = text.replace(token, " ")
    return strip_control(text)


def sanitise_message(
    text: str, max_tokens: int, truncate: Callable[[str, int], str], special: Sequence[str] = ()
) -> str:
    """One line of plain words: control and ``special`` tokens removed, quotes neutralised, within the budget."""
    text = " ".join(strip_tokens(text, special).split()).replace('"', "'")
    max_chars = max_tokens * CHARS_PER_TOKEN
    if len(text) > max_chars:
        cut = text[:max_chars]
        text = cut.rsplit(" ", 1)[0] if " " in cut else cut  # end on a word boundary when there is one
    return truncate(text, max_tokens).strip()


class MessageBoard:
    """Delivers one game's messages. ``post`` returns the text as delivered, or None with ``dropped`` counted."""

    def __init__(self, env: TextEnv, truncate: Callable[[str, int], str], special: Sequence[str] = ()) -> None:
        self.env = env
        self.truncate = truncate
        self.special = list(special)
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
        clean = sanitise_message(text, rules.max_tokens, self.truncate, self.special)
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
