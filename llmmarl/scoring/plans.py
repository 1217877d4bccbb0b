"""Checking plans and named-action messages against what the agents then did.

* **Plan following.** With checkable plans, a PLAN line lists the agent's own next actions *after* this turn's
  action, as labels: ``PLAN: 4 then 8``. At the seat's next turn the plan is scored on the turn that made it
  (``plan_followed``): True if the action played is the plan's first step, False if another action was played
  while that step was legal. A step no longer legal (the opponent took the square), a plan with no readable step,
  or a plan with no next turn is not scored: events, not the agent, broke it.
* **Message following.** When a teammate's message in the inbox names exactly one of the listener's legal
  actions (``speaker_0 says: "red"`` and ``red`` is legal, as in ``signal_v0``), the listener's turn records
  whether its action was that one (``message_followed``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from llmmarl.agents.turn import match_action
from llmmarl.records import EpisodeRecord

_STEP_SPLIT = re.compile(r"\s*(?:,|;|->|→|\bthen\b|\band\b)\s*", re.I)
_QUOTED = re.compile(r'says: "(.*)"$')


def plan_steps(plan: str) -> list[str]:
    """The steps of a checkable plan, ``"4 then 8"`` -> ``["4", "8"]`` (empty strings dropped)."""
    return [s for s in _STEP_SPLIT.split(plan.strip()) if s.strip()]


def named_action(inbox: Sequence[str], legal: Sequence[str]) -> str | None:
    """The one legal label the inbox's messages name (exactly, as a whole message), or None (none, or several)."""
    named = set()
    for line in inbox:
        m = _QUOTED.search(line)
        if m and (label := match_action(m.group(1), legal)) is not None:
            named.add(label)
    return named.pop() if len(named) == 1 else None


def score_plans(episode: EpisodeRecord) -> None:
    """Set ``plan_followed`` on every planning turn whose plan can be checked, in place."""
    last: dict[str, int] = {}  # seat -> index of its previous turn in episode.turns
    for i, turn in enumerate(episode.turns):
        j = last.get(turn.seat)
        last[turn.seat] = i
        if j is None:
            continue
        before = episode.turns[j]
        steps = plan_steps(before.turn.plan) if before.turn is not None else []
        if not steps:
            continue
        first = match_action(steps[0], turn.legal_actions)
        if first is not None:
            before.plan_followed = first == turn.action


def score_messages(episode: EpisodeRecord) -> None:
    """Set ``message_followed`` on every turn whose inbox named one of its legal actions, in place."""
    for turn in episode.turns:
        named = named_action(turn.inbox, turn.legal_actions)
        if named is not None:
            turn.message_followed = named == turn.action
