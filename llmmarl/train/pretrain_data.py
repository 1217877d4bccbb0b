"""The examples of the FORECAST pre-training: recorded decisions, each a prompt and a target answer.

For every decision of a learner's seat in a recorded game, the prompt is the one the learner would be shown at that
observation (the same :class:`~llmmarl.agents.llm.LLMDecision` request builder, FORECAST asked), and the target is a
turn in the asked format whose FORECAST line is what then happened (:func:`~llmmarl.scoring.forecast.truth_at_end`):

=================  ==============================================================================================
target              FORECAST value in the target answer
=================  ==============================================================================================
``outcome``         the realised outcome as a one-hot distribution in the game's labels: ``win=1; draw=0; loss=0``
``payoff``          the realised return, signed: ``+1``, ``-0.5``
``ends_within``     the realised label: ``continues``, or how the game ended within the horizon
``opponent_card``   the card the simulator had dealt the opponent at that turn: ``K``
=================  ==============================================================================================

Only the FORECAST value's tokens are trained (:attr:`ForecastExample.value_mask`); the other lines are context.
Learning realised outcomes by cross-entropy is learning the forecast under a proper scoring rule (the log score):
its expected value is lowest at the true conditional probabilities, so over many games the one-hot targets teach the
probabilities, not the single outcome that happened.

The other lines of a target answer are the recorded turn's own (an LLM's PLAN, PREDICT and MESSAGE, written
without knowing the future) or, for a scripted player's turn, made without looking ahead either: PLAN names this
turn's action (``play 5``; empty when plans are asked as the next actions), PREDICT is a uniformly random guess per
other seat, and there is no MESSAGE. Nothing in them may leak the future: it would be the forecast's answer. The
ACTION line is the action recorded, and it is never trained (a random player's move must not be imitated).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llmmarl.agents.llm import LLMDecision, PromptContext
from llmmarl.agents.prompts import PromptSet
from llmmarl.agents.specs import LLMAgentSpec
from llmmarl.agents.turn import Turn
from llmmarl.backends.base import ChatMessage
from llmmarl.envs.base import ForecastSpec, Observation, TextEnv
from llmmarl.records import EpisodeRecord, TurnRecord, outcomes_from_returns, read_episodes
from llmmarl.scoring.forecast import truth_at_end

RANDOM_PLAYER = "random"  # the participant name of the scripted players of fresh games
_MAX_STEPS = 10_000  # a game longer than this is a broken environment, not a long game


@dataclass
class ForecastExample:
    """One decision as a supervised example."""

    game_id: int | str  # held-out splits are by game: turns of one game are not independent
    seat: str
    step: int
    messages: list[ChatMessage]  # the prompt, as the learner's request has it
    answer: str  # the target answer, every asked line
    value: str  # the FORECAST value inside ``answer``
    prompt_ids: list[int]  # the chat template applied, generation prompt added (as the backend does)
    answer_ids: list[int]  # the answer's tokens, as the model would generate them after the prompt
    value_mask: list[bool]  # per answer token: is it (part of) the FORECAST value; only these are trained


# ---- where the games come from ----------------------------------------------------------------------------------
def random_games(env: TextEnv, games: int, seed: int) -> list[EpisodeRecord]:
    """``games`` games of ``env`` played by uniformly random players, recorded as the runner records them, with each
    turn's hidden-state forecast truth (``env.forecast_truth``) read from the simulator at that turn."""
    rng = random.Random(f"{seed}/pretrain/games")
    out = []
    for game_id in range(games):
        game_seed = rng.randrange(2**31)
        env.reset(seed=game_seed)
        turns: list[TurnRecord] = []
        step = 0
        while not env.done:
            if step > _MAX_STEPS:
                raise RuntimeError(f"{env.name}: a random game did not end within {_MAX_STEPS} steps")
            records = [_random_turn(env, seat, step, rng) for seat in env.pending()]
            rewards = env.step({r.seat: r.action_id for r in records})
            for r in records:
                r.reward = rewards.get(r.seat, 0.0)
            turns += records
            step += 1
        returns = env.returns()
        out.append(
            EpisodeRecord(
                game_id=game_id,
                env=env.name,
                seed=game_seed,
                seats=dict.fromkeys(env.possible_agents, RANDOM_PLAYER),
                teams=dict(env.teams),
                returns=returns,
                outcomes=outcomes_from_returns(returns, env.teams),
                turns=turns,
            )
        )
    return out


def _random_turn(env: TextEnv, seat: str, step: int, rng: random.Random) -> TurnRecord:
    obs = env.observe(seat)
    i = rng.randrange(len(obs.action_ids))
    return TurnRecord(
        step=step,
        seat=seat,
        player=RANDOM_PLAYER,
        observation=obs.text,
        legal_actions=obs.legal_actions,
        action=obs.legal_actions[i],
        action_id=obs.action_ids[i],
        forecast_truth=env.forecast_truth(seat),
    )


def recorded_games(path: str, env: TextEnv) -> list[EpisodeRecord]:
    """The finished games of ``env`` in the JSONL file ``path``; a file of another game is a ``ValueError``."""
    episodes = list(read_episodes(path))
    if not episodes:
        raise ValueError(f"pretrain.records {path!r} holds no episode records (one EpisodeRecord JSON per line)")
    other = sorted({ep.env for ep in episodes if ep.env != env.name})
    if other:
        raise ValueError(f"pretrain.records {path!r} has games of {', '.join(other)}; this run plays {env.name}")
    return [ep for ep in episodes if not ep.error and not ep.outage]


# ---- one decision as an example ---------------------------------------------------------------------------------
def forecast_value(spec: ForecastSpec, truth: str | float) -> str:
    """The FORECAST value that states ``truth`` in the shape the turn grammar and the scorer read."""
    if spec.target == "outcome":  # one-hot: the realised outcome had probability 1
        return "; ".join(f"{label}={int(label == truth)}" for label in spec.labels)
    if spec.target == "payoff":
        text = f"{float(truth):+.2f}".rstrip("0").rstrip(".")
        return "+0" if text in ("-0", "+0") else text
    return str(truth)


def answer_text(context: PromptContext, spec: LLMAgentSpec, turn: Turn, forecast: str) -> tuple[str, int]:
    """The target answer: the lines ``spec`` asks for, in the turn grammar's order, ``turn``'s PLAN, PREDICT,
    MESSAGE and ACTION around ``forecast`` as the FORECAST value. Returns the text and where the value starts."""
    lines: list[str] = []
    if spec.asks("PLAN"):
        lines.append(f"PLAN: {turn.plan}")
    if context.others and spec.asks("PREDICT"):
        lines.append("PREDICT: " + "; ".join(f"{o}={turn.predictions[o]}" for o in context.others))
    head = "\n".join([*lines, "FORECAST: "])
    text = head + forecast
    if context.talk and turn.message:
        to = f" to {turn.message_to}" if context.talk == "directed" and turn.message_to else ""
        text += f"\nMESSAGE{to}: {turn.message}"
    return text + f"\nACTION: {turn.action}", len(head)


def context_turn(
    env: TextEnv, context: PromptContext, record: TurnRecord, spec: LLMAgentSpec, rng: random.Random
) -> Turn:
    """The lines around the FORECAST of ``record``'s target answer, none of them looking ahead: the recorded turn's
    own where an LLM played it, else PLAN naming this turn's action (empty when plans are asked as the next actions)
    and no MESSAGE; a prediction not recorded is a uniformly random guess (:func:`guess`)."""
    turn = record.turn or Turn(plan="" if spec.plan_actions else f"play {record.action}", action=record.action)
    predictions = {o: turn.predictions.get(o) or guess(env, context, o, record.action, rng) for o in context.others}
    return turn.model_copy(update={"action": record.action, "predictions": predictions})


def guess(env: TextEnv, context: PromptContext, other: str, action: str, rng: random.Random) -> str:
    """A uniformly random guess of ``other``'s next action: a label of its action vocabulary when the game lists
    one, else one of this seat's other legal labels (in alternating board games, the cells left for the reply)."""
    choices = env.action_vocabulary(other) or [a for a in context.legal if a != action] or context.legal
    return rng.choice(choices)


def value_mask(tokenizer: Any, answer: str, start: int, end: int) -> tuple[list[int], list[bool]]:
    """``answer``'s token ids and, per token, whether it covers any of the characters ``[start, end)``."""
    enc = tokenizer(answer, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    return list(enc["input_ids"]), [a < end and b > start for a, b in offsets]


def chat_prompt_ids(tokenizer: Any, messages: list[ChatMessage]) -> list[int]:
    """The prompt's token ids as the transformers backend and the vLLM engine build them."""
    out = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    ids = out["input_ids"] if isinstance(out, Mapping) else out
    return [int(t) for t in ids]


def build_examples(
    env: TextEnv,
    spec: LLMAgentSpec,
    seats: Sequence[str],
    episodes: Iterable[EpisodeRecord],
    tokenizer: Any,
    seed: int,
) -> tuple[list[ForecastExample], int]:
    """Every decision of ``seats`` in ``episodes`` as an example for the agent ``spec`` (which must ask FORECAST).

    Returns the examples and the count of decisions left out because nothing checks their forecast (a broken game,
    or a hidden-state truth that was not recorded: a record of an agent not asked to forecast keeps none).
    """
    if not spec.asks("FORECAST"):
        raise ValueError(f"agent {spec.name} is not asked for FORECAST: nothing to pre-train")
    prompts: dict[str, PromptSet] = {}
    examples: list[ForecastExample] = []
    skipped = 0
    for ep in episodes:
        for t in ep.turns:
            if t.seat not in seats:
                continue
            fspec = env.forecast_spec(t.seat)
            truth = truth_at_end(t, ep, fspec)
            if truth is None:
                skipped += 1
                continue
            if t.seat not in prompts:
                prompts[t.seat] = PromptSet(env.name, t.seat, spec.template)
            obs = Observation(
                agent=t.seat,
                text=t.observation,
                legal_actions=t.legal_actions,
                action_ids=list(range(len(t.legal_actions))),
            )
            decision = LLMDecision.start(spec, env, t.seat, obs, list(t.inbox), prompts[t.seat], spec.name)
            messages = decision.ask().messages
            rng = random.Random(f"{seed}/pretrain/{ep.game_id}/{t.step}/{t.seat}")
            turn = context_turn(env, decision.context, t, spec, rng)
            value = forecast_value(fspec, truth)
            answer, start = answer_text(decision.context, spec, turn, value)
            answer_ids, mask = value_mask(tokenizer, answer, start, start + len(value))
            examples.append(
                ForecastExample(
                    game_id=ep.game_id,
                    seat=t.seat,
                    step=t.step,
                    messages=messages,
                    answer=answer,
                    value=value,
                    prompt_ids=chat_prompt_ids(tokenizer, messages),
                    answer_ids=answer_ids,
                    value_mask=mask,
                )
            )
    return examples, skipped
