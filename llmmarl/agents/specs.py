"""Who plays: agent specifications (pydantic), shared by ``play``, tournaments and training.

An LLM agent is a base model + an optional LoRA adapter + a prompt template + decoding settings. Scripted agents
are named policies from :mod:`llmmarl.agents.scripted`. On the command line an agent is a short string:

* ``llm`` - the base model, no adapter;
* ``llm@adapters/ttt`` or ``llm@ttt`` - an adapter folder, or an adapter name the backend already has;
* ``random``, ``minimax``, ... - a scripted policy (``llmmarl agents`` lists them).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

#: The lines of a turn besides ACTION (always asked). A line appears only where the game has it: PREDICT with other
#: players, MESSAGE where the game lets this seat talk, FORECAST where the game declares what can be forecast.
TurnLine = Literal["PLAN", "PREDICT", "FORECAST", "MESSAGE"]
TURN_LINES: tuple[TurnLine, ...] = ("PLAN", "PREDICT", "FORECAST", "MESSAGE")
#: What an agent is asked for unless told otherwise (FORECAST also when ``forecast=True``).
DEFAULT_LINES: frozenset[TurnLine] = frozenset({"PLAN", "PREDICT", "MESSAGE"})


class LLMAgentSpec(BaseModel):
    kind: Literal["llm"] = "llm"
    name: str = Field(description="Unique name; also the adapter's name in the backend and on a vLLM server.")
    adapter: str | None = Field(None, description="PEFT adapter folder, or the name of a served adapter.")
    template: str | None = Field(None, description="Prompt folder under prompts/ (default: the game's name).")
    temperature: float = Field(0.7, ge=0.0, description="Sampling temperature (0 = greedy).")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    max_new_tokens: int = Field(64, ge=8, description="Token budget of one answer.")
    constrained: bool = Field(
        False, description="Constrain decoding with a grammar so the action is always a legal label."
    )
    canonical: bool = Field(
        False,
        description="Answer a closed turn (ACTION only, or a one-word MESSAGE from the game's vocabulary then "
        "ACTION) as one of its complete texts, each in the tokenizer's own tokens: one token path per answer "
        "instead of the grammar's every spelling. Implies constrained; an open turn is an error.",
    )
    forecast: bool = Field(
        False, description="Ask for a FORECAST line: what the game declares forecastable (scored; see scoring)."
    )
    plan_actions: bool = Field(
        False, description="Ask for PLAN as the agent's own next actions, as labels ('4 then 8'), so it is checked."
    )
    lines: frozenset[TurnLine] = Field(
        DEFAULT_LINES,
        description="Turn lines asked for besides ACTION, e.g. {} for a reactive agent (ACTION only). A line not "
        "asked for is not in the prompt or the grammar, and the runner ignores it if the model writes it anyway "
        "(FORECAST excepted: it is scored whenever written). FORECAST is asked when listed here or forecast=True.",
    )
    reask: bool = Field(True, description="Re-ask once, showing the error, when the answer has no legal action.")
    fallback: Literal["random", "forfeit"] = Field(
        "random", description="After a failed re-ask: play a random legal action, or forfeit the game."
    )

    def asks(self, line: TurnLine) -> bool:
        """Whether this agent's prompt asks for ``line`` (where the game has that line at all)."""
        return line in self.lines or (line == "FORECAST" and self.forecast)


class ScriptedAgentSpec(BaseModel):
    kind: Literal["scripted"] = "scripted"
    name: str = Field(description="Unique name shown in results.")
    policy: str = Field(description="Registered scripted policy, e.g. 'random', 'minimax', 'mcts'.")


AgentSpec = Annotated[LLMAgentSpec | ScriptedAgentSpec, Field(discriminator="kind")]


def parse_agent(text: str, taken: set[str] | None = None) -> LLMAgentSpec | ScriptedAgentSpec:
    """Parse a command-line agent string (see module docstring). Names are made unique against ``taken``."""
    from llmmarl.agents.scripted import scripted_policies

    text = text.strip()
    taken = taken if taken is not None else set()
    kind, _, adapter = text.partition("@")
    if kind == "llm":
        base = adapter.rstrip("/").split("/")[-1] if adapter else "llm"
        spec: LLMAgentSpec | ScriptedAgentSpec = LLMAgentSpec(name=_unique(base, taken), adapter=adapter or None)
    elif kind in scripted_policies() and not adapter:
        spec = ScriptedAgentSpec(name=_unique(kind, taken), policy=kind)
    else:
        known = ", ".join(["llm", "llm@ADAPTER", *sorted(scripted_policies())])
        raise ValueError(f"unknown agent {text!r}; use one of: {known}")
    taken.add(spec.name)
    return spec


def _unique(name: str, taken: set[str]) -> str:
    if name not in taken:
        return name
    i = 2
    while f"{name}-{i}" in taken:
        i += 1
    return f"{name}-{i}"
