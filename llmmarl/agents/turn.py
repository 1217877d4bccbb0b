"""The agent's turn: schema, the text format models answer in, its parser and its grammar.

A turn is four things (the generative-RL agent: anticipate, plan, talk, act)::

    PLAN: take the centre, then block their diagonal
    PREDICT: player_2=3
    FORECAST: win=0.6; draw=0.3; loss=0.1       (only when asked: what the game declares forecastable)
    MESSAGE: I'll cover the left side            (only in games that allow talk)
    ACTION: 5

Line tags are easier for small models than JSON; the parser also accepts a JSON object with the same keys.
Parsing is tolerant about layout (case, spacing, code fences, extra prose) and *exact about the action*: the
action must equal one legal label after trimming quotes/brackets and case - no "last integer in the text"
heuristics, which is how other frameworks extract the wrong move.

In a free-text game (``free_text``: the longest move, in characters) the ACTION line's text is the move and the
game judges it; the parser only requires a non-empty ACTION line, maps a move the game listed to its exact label
(``check`` -> ``[check]``) and cuts longer text to the limit.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Mapping, Sequence

from pydantic import BaseModel, Field

from llmmarl.envs.base import ForecastSpec, MessageRules


class Turn(BaseModel):
    """One parsed agent turn."""

    plan: str = Field("", description="The agent's intended next moves, in its own words.")
    predictions: dict[str, str] = Field(
        default_factory=dict, description="Predicted next action label of named other agents."
    )
    forecast: str | None = Field(None, description="How the game will evolve, as asked (scored by the runner).")
    message: str | None = Field(None, description="Words to teammates, if the game allows talk.")
    message_to: str | None = Field(None, description="The teammate addressed (directed messages only).")
    action: str = Field(description="One legal action label, exactly as listed.")


class ParseResult(BaseModel):
    turn: Turn | None = None
    error: str | None = Field(None, description="Why no legal turn could be read; shown to the model on a re-ask.")


_TAG = re.compile(
    r"^\s*[*#>\-]*\s*(plan|predict(?:ions?)?|forecast|message(?:\s+to\s+(\S+?))?|action)\s*\**\s*[:=]\s*(.*)$", re.I
)
_CONTROL = re.compile(r"<\|[^<>|]{0,40}\|>|</?s>|\[/?INST\]|<unk>|<pad>", re.I)
_FENCE = re.compile(r"```[a-zA-Z]*")


def normalise_label(text: str) -> str:
    """Trim what models wrap labels in: whitespace, quotes, backticks, brackets, a trailing period."""
    text = text.strip().strip("`'\"*").rstrip(".").strip()
    if len(text) >= 2 and text[0] in "[(<{" and text[-1] in "])>}":
        text = text[1:-1].strip()
    return text.rstrip(".").strip().strip("`'\"").strip().lower()


def match_action(raw: str, legal: Sequence[str]) -> str | None:
    """The legal label ``raw`` names exactly (modulo :func:`normalise_label`), else None."""
    wanted = normalise_label(raw)
    for label in legal:
        if normalise_label(label) == wanted:
            return label
    return None


def strip_control(text: str) -> str:
    """Remove chat-template control tokens (``<|im_start|>``, ``[INST]``...) from model or user text."""
    return _CONTROL.sub(" ", text)


def _parse_predictions(raw: str | dict[str, object] | None, others: Sequence[str]) -> dict[str, str]:
    if not raw:
        return {}
    pairs: list[tuple[str, str]]
    if isinstance(raw, dict):
        pairs = [(str(k), str(v)) for k, v in raw.items()]
    else:
        pairs = []
        for part in re.split(r"[;,]", raw):
            name, sep, value = part.partition("=")
            if not sep:
                name, sep, value = part.partition(":")
            if sep:
                pairs.append((name, value))
    known = {o.lower(): o for o in others}
    out: dict[str, str] = {}
    for name, value in pairs:
        agent = known.get(name.strip().strip("`'\"*").lower())
        if agent and normalise_label(value):
            out[agent] = value.strip().strip("`'\"").strip()
    return out


def _fields_from_json(text: str) -> dict[str, object] | None:
    start = text.find("{")
    end = text.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        data = json.loads(text[start : end + 1])
    except (json.JSONDecodeError, RecursionError):
        return None
    return {str(k).lower(): v for k, v in data.items()} if isinstance(data, dict) else None


def _fields_from_tags(text: str) -> dict[str, object]:
    fields: dict[str, object] = {}
    actions: list[str] = []
    for line in text.splitlines():
        m = _TAG.match(line)
        if not m:
            continue
        tag, to, value = m.group(1).lower(), m.group(2), m.group(3).strip()
        if tag == "action":
            actions.append(value)
        elif tag.startswith("predict"):
            fields.setdefault("predictions", value)
        elif tag.startswith("message"):
            fields.setdefault("message", value)
            if to:
                fields.setdefault("message_to", to.strip(":"))
        else:
            fields.setdefault(tag, value)
    if actions:
        fields["actions"] = actions
    return fields


def parse_turn(
    text: str, legal: Sequence[str], others: Sequence[str] = (), free_text: int | None = None
) -> ParseResult:
    """Read a :class:`Turn` from model output. Never raises: problems come back as ``error``.

    ``free_text``: the action is free text of at most this many characters (``legal`` lists the moves the game
    listed, possibly none), judged by the game rather than here.
    """
    text = _FENCE.sub("", strip_control(text))
    fields = _fields_from_json(text)
    if fields is not None and "action" in fields:
        actions = [str(fields["action"])]
    else:
        fields = _fields_from_tags(text)
        raw_actions = fields.get("actions", [])
        actions = [str(a) for a in raw_actions] if isinstance(raw_actions, list) else []
    if not actions:
        return ParseResult(error="no ACTION line found. End your answer with 'ACTION: <one legal action>'.")
    if free_text is not None:
        label = _free_action(actions, legal, free_text)
        if label is None:
            return ParseResult(error="the ACTION line is empty or gives several different moves; give exactly one.")
        return ParseResult(turn=_turn(fields, others, label))
    matched = {match_action(a, legal) for a in actions}
    if len(matched) > 1:
        return ParseResult(error=f"several different actions given ({', '.join(actions)}); give exactly one.")
    (label,) = matched
    if label is None:
        shown = ", ".join(legal[:40]) + (" ..." if len(legal) > 40 else "")
        return ParseResult(error=f"'{actions[0].strip()}' is not a legal action. Legal actions: {shown}.")
    return ParseResult(turn=_turn(fields, others, label))


def _free_action(actions: Sequence[str], legal: Sequence[str], max_chars: int) -> str | None:
    """The one free-text move of the ACTION lines (a listed move by its exact label), or None."""
    moves = {match_action(a, legal) or a.strip()[:max_chars] for a in actions}
    if len(moves) != 1:
        return None
    (move,) = moves
    return move or None


def _turn(fields: Mapping[str, object], others: Sequence[str], action: str) -> Turn:
    message = fields.get("message")
    if isinstance(message, str) and message.strip().lower() in ("", "none", "-", "n/a", "null"):
        message = None
    to = fields.get("message_to")
    forecast = fields.get("forecast")
    if isinstance(forecast, dict):  # JSON answers may give {"win": 0.6, ...}
        forecast = "; ".join(f"{k}={v}" for k, v in forecast.items())
    return Turn(
        plan=str(fields.get("plan") or "").strip(),
        predictions=_parse_predictions(fields.get("predictions"), others),  # type: ignore[arg-type]
        forecast=(str(forecast).strip() or None) if forecast is not None else None,
        message=str(message).strip() if message else None,
        message_to=str(to) if to else None,
        action=action,
    )


def _ebnf_literal(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


_PLAN_CHARS = 160  # the longest plan or message the grammar allows when the token budget is ample
_PRED_CHARS = 16  # the longest predicted action; labels are short in every game we ship
# Characters a free-text move may take per token it is budgeted. A character cap equal to the tokens would leave
# a move a third of the text its tokens hold: English runs at about 4 characters a token, and bracketed moves with
# digits at about 2 (the default tokenizer spells "[Offer: 3 Sheep, 2 Ore -> 5 Brick, 2 Sheep]", 43 characters,
# in 20 tokens). Allowing 3 lets such a move fit; a move spelled in more tokens than budgeted is cut at the answer
# budget, and as the last line of the turn it is still the move (cut), with nothing after it lost.
_MOVE_CHARS_PER_TOKEN = 3


_PROB = '("0" ("." [0-9] [0-9]?)? | "1" (".0" "0"?)?)'  # a probability, 0 to 1, two decimals at most


def _forecast_rule(spec: ForecastSpec) -> tuple[str, int]:
    """The grammar rule ``fcbody`` of a forecast and the most characters it can take."""
    if spec.target == "outcome":
        parts = [f"{_ebnf_literal(('; ' if i else '') + label + '=')} prob" for i, label in enumerate(spec.labels)]
        chars = sum(len(label) + 3 + 4 for label in spec.labels)
        return f"fcbody ::= {' '.join(parts)}\nprob ::= {_PROB}", chars
    if spec.target == "payoff":
        return 'fcbody ::= ("-" | "+")? [0-9] [0-9]? ("." [0-9] [0-9]?)?', 6
    return f"fcbody ::= {' | '.join(_ebnf_literal(label) for label in spec.labels)}", max(map(len, spec.labels))


def _action_rule(legal: Sequence[str], free_action: int | None, max_tokens: int | None, plan: bool) -> tuple[str, int]:
    """The ACTION line's body and the tokens the line is budgeted (see :func:`turn_grammar`)."""
    if free_action is None or legal:
        action = " | ".join(_ebnf_literal(label) for label in legal)
        return action, len("ACTION: ") + max((len(label) for label in legal), default=1) + 1  # + end of sequence
    if max_tokens is None:
        return f"[^\\n]{{1,{free_action}}}", len("ACTION: ") + free_action + 1
    tags = len("ACTION: ") + 1 + (len("PLAN: ") + 1 if plan else 0)
    tokens = max(8, (max_tokens - tags) * 2 // 3)  # the move's share of the budget, in tokens
    chars = min(free_action, tokens * _MOVE_CHARS_PER_TOKEN)
    return f"[^\\n]{{1,{chars}}}", len("ACTION: ") + min(chars, tokens) + 1


def turn_grammar(
    legal: Sequence[str],
    others: Sequence[str],
    rules: MessageRules,
    teammates: Sequence[str] = (),
    max_tokens: int | None = None,
    vocabularies: Mapping[str, Sequence[str]] | None = None,
    forecast: ForecastSpec | None = None,
    plan: bool = True,
    free_action: int | None = None,
) -> str:
    """An EBNF grammar (xgrammar / vLLM ``structured_outputs`` syntax) for a well-formed turn.

    Constrained decoding with it makes the action *always* one of ``legal``; plan and message stay free text
    with a length cap (a message is one word of the rules' closed vocabulary if it has one), predictions name only
    known agents, each at most once. With ``forecast`` a FORECAST line in that forecast's shape follows the
    predictions (probabilities in [0, 1] per outcome, a signed number, or one label). A prediction of an agent listed
    in ``vocabularies`` is one of that agent's action labels (so it can be scored: a free-text guess such as
    "pick the goal" never matches an action); of any other agent it is short free text.

    ``max_tokens`` sizes the grammar so that a complete turn always fits in the answer budget: under a grammar
    a model may spell text one character per token, so every character is counted as a token. What does not
    fit is given up in this order: the free text shrinks (plan and message share what is left), then the
    message line goes, then the forecast, then the predictions; the ``PLAN:`` and ``ACTION:`` lines always stay.
    ``plan=False`` leaves the PLAN line out (an agent not asked to plan; a reactive one answers ACTION only when it
    is also given no ``others``, no ``forecast`` and rules without talk).

    ``free_action`` (a free-text game's longest move, in characters): the action is one line of free text, or one of
    ``legal`` when the game listed its valid moves (then nothing else is a move). Under ``max_tokens`` the move gets
    up to two thirds of the tokens left after the tags, and the other lines share the rest. The move alone is
    capped in characters at three per budgeted token (at most ``free_action``), not one: a move is text the game
    must read, offers spell at about two characters a token, and as the last line a move that runs past the budget
    is cut rather than lost (at ``max_tokens=48`` with a PLAN line: 63 characters, room for a 43-character offer).
    """
    action, act_cost = _action_rule(legal, free_action, max_tokens, plan)
    talk = rules.mode != "off" and not (rules.mode == "directed" and not teammates)
    to_width = max((len(t) for t in teammates), default=0)
    vocab = {o: list(v) for o, v in (vocabularies or {}).items() if o in others and v}
    pred_chars = {o: max(map(len, vocab[o])) if o in vocab else _PRED_CHARS for o in others}
    pred_cost = len("PREDICT: ") + sum(len(o) + 1 + pred_chars[o] + 2 for o in others) + 1 if others else 0
    words = rules.vocabulary or ()
    msg_cost = (len("MESSAGE to : ") + to_width if rules.mode == "directed" else len("MESSAGE: ")) + 1
    msg_cost += max(map(len, words), default=0)  # a closed vocabulary's longest word; free text is budgeted below
    fc_rule, fc_chars = _forecast_rule(forecast) if forecast is not None else ("", 0)
    fc_cost = len("FORECAST: ") + fc_chars + 1 if forecast is not None else 0
    plan_chars = msg_chars = _PLAN_CHARS
    if max_tokens is not None:
        fixed = (len("PLAN: ") + 1 if plan else 0) + act_cost
        free = max_tokens - fixed - pred_cost - fc_cost - (msg_cost if talk else 0)
        dropped, needed = [], fixed + pred_cost + fc_cost + (msg_cost if talk else 0) + 8
        if free < 8 and talk:  # too little room for a useful message: drop it before the predictions
            talk, free = False, free + msg_cost
            dropped.append("MESSAGE")
        if free < 8 and forecast is not None:
            forecast, free = None, free + fc_cost
            dropped.append("FORECAST")
        if free < 8 and others:
            others, free = (), free + pred_cost
            dropped.append("PREDICT")
        if dropped:
            # Said out loud: a cooperative run whose agents silently cannot talk measures nothing about talking.
            warnings.warn(
                f"the turn grammar drops its {' and '.join(dropped)} line(s): max_new_tokens={max_tokens} leaves no "
                f"room (a full turn needs at least {needed})",
                stacklevel=2,
            )
        free = max(free, 0)
        plan_chars = min(_PLAN_CHARS, free // 2 if talk and not words else free) if plan else 0
        msg_chars = min(_PLAN_CHARS, free - plan_chars)
    plan_rules = ['root ::= "PLAN: " plan "\\n" predict', f"plan ::= [^\\n]{{0,{plan_chars}}}"]
    lines = plan_rules if plan else ["root ::= predict"]
    if others:
        more = f' ("; " pred){{0,{len(others) - 1}}}' if len(others) > 1 else ""  # each other agent at most once
        lines.append(f'predict ::= "PREDICT: " pred{more} "\\n" fc')
        free_pred = [o for o in others if o not in vocab]
        alternatives = [
            f"{_ebnf_literal(o + '=')} ({' | '.join(_ebnf_literal(label) for label in vocab[o])})" for o in vocab
        ]
        if free_pred:
            who = " | ".join(_ebnf_literal(o) for o in free_pred)
            alternatives.append(f'({who}) "=" [^;\\n]{{1,{_PRED_CHARS}}}')
        lines.append(f"pred ::= {' | '.join(f'({a})' for a in alternatives)}")
    else:
        lines.append("predict ::= fc")
    lines.append('fc ::= "FORECAST: " fcbody "\\n" msg' if forecast is not None else "fc ::= msg")
    if forecast is not None:
        lines.append(fc_rule)
    if not talk:
        lines.append("msg ::= act")
    else:
        if words:
            lines.append(f"free ::= {' | '.join(_ebnf_literal(w) for w in words)}")
        else:
            lines.append(f"free ::= [^\\n]{{1,{max(msg_chars, 1)}}}")
        if rules.mode == "directed":
            to = " | ".join(_ebnf_literal(t) for t in teammates)
            lines.append(f'msg ::= ("MESSAGE to " ({to}) ": " free "\\n")? act')
        else:
            lines.append('msg ::= ("MESSAGE: " free "\\n")? act')
    lines.append(f'act ::= "ACTION: " ({action})')
    return "\n".join(lines)
