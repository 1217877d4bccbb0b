"""One game in flight and the turn records its decisions make.

The runner (:mod:`llmmarl.runner`) schedules: it gathers every pending :class:`Decision` of every
:class:`LiveGame`, asks the backend and the scripted policies, and steps the games. What a decision becomes is
decided here: :func:`record_turn` picks the action (the parsed turn's, the scripted policy's, or the fallback's),
builds the :class:`~llmmarl.records.TurnRecord` and posts the turn's message; :func:`score_predictions` scores
PREDICT lines once their targets have acted.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from llmmarl.agents.llm import LLMDecision
from llmmarl.agents.messages import MessageBoard
from llmmarl.agents.specs import AgentSpec, LLMAgentSpec, ScriptedAgentSpec
from llmmarl.agents.turn import match_action
from llmmarl.envs.base import Action, Observation, TextEnv
from llmmarl.matches import Match
from llmmarl.records import TurnRecord


@dataclass
class LiveGame:
    """A game being played: its env, message board and RNG (for fallback moves), and the turns recorded so far."""

    match: Match
    env: TextEnv
    board: MessageBoard
    rng: random.Random
    turns: list[TurnRecord] = field(default_factory=list)
    # target seat -> {predictor seat: (record of the predicting turn, predicted label)}
    open_predictions: dict[str, dict[str, tuple[TurnRecord, str]]] = field(default_factory=dict)
    step: int = 0
    forfeit: str | None = None
    error: str | None = None
    outage: bool = False  # error is the server's failure, not the game's


@dataclass
class Decision:
    """One seat's pending decision: an LLM agent's (``llm``) or a scripted policy's (``scripted_*``)."""

    game: LiveGame
    seat: str
    spec: AgentSpec
    obs: Observation
    inbox: list[str]
    llm: LLMDecision | None = None
    scripted_action: Action | None = None
    scripted_message: str | None = None


def record_turn(g: LiveGame, d: Decision) -> TurnRecord:
    """The record of ``d``'s turn: the action taken (a random legal one when the LLM gave none), and its message
    posted to the board.

    In a free-text game the fallback plays a random listed move, or the empty text when the game lists none (the
    game then judges it like any other move)."""
    spec, obs = d.spec, d.obs
    turn = d.llm.parsed.turn if d.llm and d.llm.parsed else None
    fallback = None
    if isinstance(spec, ScriptedAgentSpec):
        assert d.scripted_action is not None
        label, action_id = _played(obs, d.scripted_action)
    elif turn is not None:
        label, action_id = _played(obs, turn.action)
    else:
        assert isinstance(spec, LLMAgentSpec)
        fallback = spec.fallback
        label, action_id = _played(obs, g.rng.choice(obs.action_ids) if obs.action_ids else "")
    record = TurnRecord(
        step=g.step,
        seat=d.seat,
        player=spec.name,
        observation=obs.text,
        legal_actions=obs.legal_actions,
        inbox=d.inbox,
        attempts=d.llm.attempts if d.llm else [],
        turn=turn,
        action=label,
        action_id=action_id,
        fallback=fallback,
    )
    if turn is not None and turn.forecast is not None:
        record.forecast_truth = g.env.forecast_truth(d.seat)  # hidden-state forecasts: the truth now
    message, message_to = (turn.message, turn.message_to) if turn else (d.scripted_message, None)
    if message:
        delivered = g.board.post(d.seat, message, message_to)
        if delivered is not None:
            record.message, record.message_to = delivered
        else:
            record.message_dropped = g.board.last_dropped
    return record


def _played(obs: Observation, action: Action) -> tuple[str, int]:
    """The label and id of a move: an id, a legal label, or (free-text games) any text, whose id is its index
    among the listed moves or -1."""
    if isinstance(action, int):
        return obs.label(action), action
    if action in obs.legal_actions:
        return action, obs.action_id(action)
    if obs.free_text is None:
        raise ValueError(f"{action!r} is not a legal action of {obs.agent}")
    return action, -1


def score_predictions(g: LiveGame, records: dict[str, TurnRecord]) -> None:
    """Score the predictions of earlier turns about the seats that acted now, and register this step's."""
    # Register this step's predictions first: in simultaneous games the others' "next action" is this one.
    for seat, rec in records.items():
        if rec.turn is None:
            continue
        for target, label in rec.turn.predictions.items():
            if target != seat:
                g.open_predictions.setdefault(target, {})[seat] = (rec, label)
    for seat, rec in records.items():
        for predictor_rec, label in g.open_predictions.pop(seat, {}).values():
            predictor_rec.prediction_hits[seat] = match_action(label, [rec.action]) is not None
