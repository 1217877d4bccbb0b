"""The LLM agent: what it is asked, how the request is built, and how its answer is read.

One seat's decision goes through :class:`LLMDecision`:

1. :meth:`LLMDecision.start` fills a :class:`PromptContext` (the templates' variables, one typed field each) from
   the game and renders the chat with the agent's :class:`~llmmarl.agents.prompts.PromptSet`;
2. :meth:`~LLMDecision.ask` / :meth:`~LLMDecision.retry` / :meth:`~LLMDecision.reask` build the
   :class:`~llmmarl.backends.base.GenerationRequest` (with the turn grammar when the agent is ``constrained``);
3. :meth:`~LLMDecision.read` turns the backend's :class:`~llmmarl.backends.base.Generation` into an
   :class:`~llmmarl.records.Attempt` and a :class:`~llmmarl.agents.turn.ParseResult`.

:class:`LLMAgents` starts decisions, finding each agent's templates and adapter once. Nothing here asks a backend
for an answer or steps a game: the runner batches the requests of many decisions into one call and
applies the chosen actions, so this module is the agent and the runner only schedules.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from llmmarl.agents.messages import strip_tokens
from llmmarl.agents.prompts import PromptSet
from llmmarl.agents.specs import TURN_LINES, LLMAgentSpec, TurnLine
from llmmarl.agents.turn import ParseResult, parse_turn, turn_grammar
from llmmarl.backends.base import Backend, BackendError, ChatMessage, Generation, GenerationRequest
from llmmarl.envs.base import MessageRules, Observation, TextEnv
from llmmarl.records import Attempt


class PromptContext(BaseModel):
    """The variables every prompt template gets (``prompts/README.md``), one field each.

    The re-ask template also gets ``error`` (why the last answer could not be used), passed on its own.
    """

    model_config = ConfigDict(frozen=True)

    agent: str = Field(description="The seat deciding.")
    game: str = Field(description="The registered game name.")
    description: str = Field(description="The game's rules.")
    teammates: list[str] = Field(description="Seats on the agent's team, itself excluded.")
    opponents: list[str] = Field(description="Other seats not on its team.")
    others: list[str] = Field(description="Every other seat: the agents it predicts.")
    talk: Literal["", "broadcast", "directed"] = Field(description="How it may talk; empty when it may not.")
    max_message_tokens: int = Field(description="A message's token budget.")
    message_words: list[str] = Field(description="The closed message vocabulary, or empty for free text.")
    observation: str = Field(description="The seat's observation text.")
    legal: list[str] = Field(description="The legal action labels (in a free-text game: the moves it lists, if any).")
    free_text: int = Field(
        0, description="In a free-text game, the longest move in characters (the game judges it); 0 otherwise."
    )
    inbox: list[str] = Field(description="Teammates' messages since its last turn, quoted and sanitised.")
    forecast: str = Field(description="The FORECAST line's shape when the agent forecasts, else empty.")
    plan_actions: bool = Field(description="Whether PLAN is asked as the agent's own next action labels.")
    lines: list[TurnLine] = Field(description="The turn lines asked for besides ACTION (LLMAgentSpec.lines).")

    @classmethod
    def of(cls, env: TextEnv, seat: str, obs: Observation, inbox: list[str], spec: LLMAgentSpec) -> PromptContext:
        """The context of ``seat``'s turn in ``env`` for the agent ``spec``."""
        rules = env.message_rules
        teammates = env.teammates(seat)
        others = [a for a in env.possible_agents if a != seat]
        return cls(
            agent=seat,
            game=env.name,
            description=env.description,
            teammates=teammates,
            opponents=[a for a in others if a not in teammates],
            others=others,
            talk="" if rules.mode == "off" or not teammates or not spec.asks("MESSAGE") else rules.mode,
            max_message_tokens=rules.max_tokens,
            message_words=list(rules.vocabulary or ()),
            observation=obs.text,
            legal=obs.legal_actions,
            free_text=obs.free_text or 0,
            inbox=inbox,
            forecast=env.forecast_spec(seat).question if spec.asks("FORECAST") else "",
            plan_actions=spec.plan_actions,
            lines=[line for line in TURN_LINES if spec.asks(line)],
        )

    def variables(self) -> dict[str, Any]:
        """The template variables, by name."""
        return dict(self)


def grammar_for(env: TextEnv, seat: str, context: PromptContext, spec: LLMAgentSpec) -> str | None:
    """The turn grammar a ``constrained`` agent decodes under (None for an unconstrained one)."""
    if not spec.constrained or spec.canonical:
        return None
    return turn_grammar(
        context.legal,
        context.others if spec.asks("PREDICT") else (),
        env.message_rules if spec.asks("MESSAGE") else MessageRules(mode="off"),
        context.teammates,
        max_tokens=spec.max_new_tokens,
        vocabularies={o: v for o in context.others if (v := env.action_vocabulary(o))},
        forecast=env.forecast_spec(seat) if spec.asks("FORECAST") else None,
        plan=spec.asks("PLAN"),
        free_action=context.free_text or None,
    )


def choices_for(env: TextEnv, seat: str, context: PromptContext, spec: LLMAgentSpec) -> list[str] | None:
    """Every complete answer of a ``canonical`` agent's closed turn, as the turn grammar would spell it (None for
    an agent that is not canonical). A ValueError names what makes the turn open."""
    if not spec.canonical:
        return None
    open_lines = [line for line in ("PLAN", "PREDICT", "FORECAST") if spec.asks(line)]
    if open_lines or context.free_text or not context.legal:
        why = f"it asks for {', '.join(open_lines)}" if open_lines else "its moves are free text"
        raise ValueError(f"canonical answers need a closed turn; {spec.name}'s turn in {env.name} is open: {why}")
    actions = [f"ACTION: {label}" for label in context.legal]
    rules = env.message_rules if spec.asks("MESSAGE") else MessageRules(mode="off")
    if rules.mode == "off" or (rules.mode == "directed" and not context.teammates):
        return actions
    if not rules.vocabulary:
        raise ValueError(
            f"canonical answers need a closed turn; {spec.name}'s MESSAGE line in {env.name} is free text (the game "
            "has no message vocabulary): ask for ACTION only"
        )
    heads = (
        [f"MESSAGE to {t}: " for t in context.teammates] if rules.mode == "directed" else ["MESSAGE: "]
    )  # as turn_grammar writes the line; the message is optional there too
    return actions + [f"{h}{w}\n{a}" for h in heads for w in rules.vocabulary for a in actions]


def keep_asked(parsed: ParseResult, spec: LLMAgentSpec) -> ParseResult:
    """Drop the PLAN, PREDICT and MESSAGE lines a model wrote without being asked: an agent ablated to ACTION only
    must not talk or be scored on predictions because it wrote them anyway."""
    turn = parsed.turn
    if turn is None:
        return parsed
    update: dict[str, Any] = {}
    if turn.plan and not spec.asks("PLAN"):
        update["plan"] = ""
    if turn.predictions and not spec.asks("PREDICT"):
        update["predictions"] = {}
    if turn.message is not None and not spec.asks("MESSAGE"):
        update |= {"message": None, "message_to": None}
    return parsed.model_copy(update={"turn": turn.model_copy(update=update)}) if update else parsed


@dataclass
class LLMDecision:
    """One LLM seat's decision in progress: its prompt, its tries, and what was read from the last one."""

    spec: LLMAgentSpec
    context: PromptContext
    prompts: PromptSet
    messages: list[ChatMessage]
    grammar: str | None
    adapter: str | None  # the backend adapter that answers; None = the base model
    choices: list[str] | None = None  # a canonical agent's complete answers (then no grammar)
    attempts: list[Attempt] = field(default_factory=list)
    parsed: ParseResult | None = None

    @classmethod
    def start(
        cls,
        spec: LLMAgentSpec,
        env: TextEnv,
        seat: str,
        obs: Observation,
        inbox: list[str],
        prompts: PromptSet,
        adapter: str | None,
    ) -> LLMDecision:
        """Fill the prompt of ``seat``'s turn (its messages and grammar); nothing is asked yet."""
        context = PromptContext.of(env, seat, obs, inbox, spec)
        messages = prompts.messages(**context.variables())
        grammar, choices = grammar_for(env, seat, context, spec), choices_for(env, seat, context, spec)
        return cls(spec, context, prompts, messages, grammar, adapter, choices=choices)

    # ---- requests ---------------------------------------------------------------------------------------------
    def ask(self, seed: int | None = None) -> GenerationRequest:
        """The first request; also the one sent again when the server failed it (it was never answered).

        ``seed`` is the request's sampling seed (the runner's ``request_seed``); None leaves it to the backend.
        """
        return self._request(self.messages, seed)

    def reask(self, special: list[str], seed: int | None = None) -> GenerationRequest:
        """Show the model its unusable answer (its ``special`` tokens stripped) and why, and ask again."""
        assert self.parsed is not None and self.attempts
        said = strip_tokens(self.attempts[-1].response, special)
        messages = self.prompts.reask(self.messages, said, error=self.parsed.error, **self.context.variables())
        return self._request(messages, seed)

    def _request(self, messages: list[ChatMessage], seed: int | None) -> GenerationRequest:
        return GenerationRequest(
            messages=messages,
            adapter=self.adapter,
            max_new_tokens=self.spec.max_new_tokens,
            temperature=self.spec.temperature,
            top_p=self.spec.top_p,
            grammar=self.grammar,
            choices=self.choices,
            seed=seed,
        )

    # ---- answers ----------------------------------------------------------------------------------------------
    def read(self, request: GenerationRequest, gen: Generation) -> None:
        """Record the answer to ``request`` as an attempt and parse it (a server failure parses to no turn)."""
        if gen.error is not None:
            self.parsed = ParseResult(error="no answer from the server")
            self.attempts.append(
                Attempt(messages=request.messages, response="", error=self.parsed.error, server_error=gen.error)
            )
            return
        free = self.context.free_text or None
        self.parsed = keep_asked(parse_turn(gen.text, self.context.legal, self.context.others, free), self.spec)
        self.attempts.append(Attempt.of(request.messages, gen, self.parsed.error))

    @property
    def server_failed(self) -> bool:
        """The last request got no answer from the server (an outage or a malformed response)."""
        return bool(self.attempts) and self.attempts[-1].server_error is not None

    @property
    def needs_reask(self) -> bool:
        """The model answered without a legal turn, and the agent re-asks."""
        return not self.server_failed and self.parsed is not None and self.parsed.turn is None and self.spec.reask

    @property
    def outage(self) -> str | None:
        """Why the decision has no move because the server failed it, or None (see the runner's module docs)."""
        if self.parsed is not None and self.parsed.turn is None and self.server_failed:
            return self.attempts[-1].server_error
        return None


class LLMAgents:
    """Starts the decisions of LLM agents playing through one backend; finds each agent's templates and adapter once.

    Safe to share between the game threads of the runner's stream mode.
    """

    def __init__(self, backend: Backend | None) -> None:
        self.backend = backend
        self._prompts: dict[tuple[str, str, str | None], PromptSet] = {}
        self._adapters: dict[str, str | None] = {}
        self._lock = threading.Lock()  # game threads must not load one adapter twice

    def start(self, spec: LLMAgentSpec, env: TextEnv, seat: str, obs: Observation, inbox: list[str]) -> LLMDecision:
        """The decision of the agent ``spec`` in ``seat`` (see :meth:`LLMDecision.start`)."""
        adapter = self.adapter(spec)
        return LLMDecision.start(spec, env, seat, obs, inbox, self.prompt_set(env.name, seat, spec.template), adapter)

    def prompt_set(self, game: str, seat: str, template: str | None) -> PromptSet:
        key = (game, seat, template)
        if key not in self._prompts:
            self._prompts[key] = PromptSet(game, seat, template)
        return self._prompts[key]

    def adapter(self, spec: LLMAgentSpec) -> str | None:
        """The backend adapter name for an agent: its folder loaded under the agent's name, or a served name."""
        with self._lock:
            return self._adapter_locked(spec)

    def _adapter_locked(self, spec: LLMAgentSpec) -> str | None:
        if spec.name in self._adapters:
            return self._adapters[spec.name]
        name: str | None = None
        if spec.adapter:
            if self.backend is None:
                raise BackendError("LLM agents need a backend: pass one to Runner(backend=...)")
            if Path(spec.adapter).is_dir():
                load = getattr(self.backend, "load_adapter", None)
                if load is None:
                    raise BackendError(f"this backend cannot load adapter folders ({spec.adapter}); serve it instead")
                if spec.name not in self.backend.adapters:
                    load(spec.name, spec.adapter)
                name = spec.name
            elif spec.adapter in self.backend.adapters:
                name = spec.adapter
            else:
                raise BackendError(
                    f"agent {spec.name}: adapter {spec.adapter!r} is neither a folder nor an adapter the backend has "
                    f"({self.backend.adapters or 'none'})"
                )
        self._adapters[spec.name] = name
        return name
