"""The first run: the base model, the grammar-constrained base model, a trained adapter and random, each playing
the same tic-tac-toe games against a random player, side by side.

Every LLM agent is decoded as the shipped adapter was evaluated (greedy, no re-ask, 40-token answers), so the rows
differ only in what each agent is; only the grammar's budget is larger (see :data:`GRAMMAR_TOKENS`). All
contenders' games are in flight at once: one progress bar, and each round of moves is one batched generation per
agent.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich import box
from rich.table import Table

from llmmarl.agents.specs import AgentSpec, LLMAgentSpec, ScriptedAgentSpec
from llmmarl.backends.base import Backend
from llmmarl.envs import make
from llmmarl.records import AgentSummary, EpisodeRecord, summarise
from llmmarl.runner import Match, Runner, seatings
from llmmarl.terminal import return_ci

GAME = "tictactoe_v3"
OPPONENT = ScriptedAgentSpec(name="opponent", policy="random")
# The decoding of the shipped adapter's evaluation (adapters/manifest.json): greedy, no re-ask, 40 tokens.
DECODING = {"temperature": 0.0, "reask": False, "max_new_tokens": 40}
# The turn grammar counts a character as a token (a model may spell one per token), so a whole tic-tac-toe turn
# (PLAN, PREDICT, ACTION) needs 47 of them. At the adapter's 40 the grammar would drop the PREDICT line and warn
# about a budget the person running the demo never chose; the warning is for budgets people set, so the demo sets
# one that fits. The grammar still sizes the answer: the extra tokens hold the PREDICT line, and the PLAN line gets
# no more room than at 40.
GRAMMAR_TOKENS = 48
# The adapter the demo shows, relative to a checkout (published with scripts/publish_adapter.py).
DEMO_ADAPTER = Path("adapters/ttt-grpo")


@dataclass(frozen=True)
class Contender:
    spec: AgentSpec
    what: str


@dataclass(frozen=True)
class DemoRow:
    contender: Contender
    summary: AgentSummary


def contenders(adapter: str | Path | None) -> list[Contender]:
    """Who plays against random: random itself, the base model without and with the turn grammar, the adapter."""
    out = [
        Contender(ScriptedAgentSpec(name="random", policy="random"), "uniform over legal moves"),
        Contender(LLMAgentSpec(name="base", **DECODING), "base model, free text"),
        Contender(
            LLMAgentSpec(name="base+grammar", constrained=True, **(DECODING | {"max_new_tokens": GRAMMAR_TOKENS})),
            "base model, turn grammar",
        ),
    ]
    if adapter is not None:
        name = Path(adapter).name
        out.append(Contender(LLMAgentSpec(name=name, adapter=str(adapter), **DECODING), "LoRA adapter, free text"))
    return out


def demo_matches(players: Sequence[Contender], games: int, seed: int = 0) -> list[Match]:
    """``games`` games per contender against :data:`OPPONENT`; every contender gets the same seeds and seats."""
    env = make(GAME)
    rng = random.Random(f"{seed}/demo")
    seeds = [rng.randrange(2**31) for _ in range(games)]
    matches = []
    for c in players:
        for i, seats in enumerate(seatings(env, [c.spec, OPPONENT], games)):
            matches.append(Match(game_id=f"{c.spec.name}/{i}", env=GAME, seats=seats, seed=seeds[i]))
    env.close()
    return matches


def run_demo(
    backend: Backend | None, players: Sequence[Contender], games: int, seed: int = 0, progress: bool = True
) -> tuple[list[DemoRow], list[EpisodeRecord]]:
    """Play every contender's games at once; one row per contender, in the order given."""
    matches = demo_matches(players, games, seed)
    runner = Runner(backend, concurrency=len(matches), progress=progress)
    episodes = runner.play(matches, desc="demo")
    rows = []
    for c in players:
        mine = [ep for ep in episodes if str(ep.game_id).startswith(f"{c.spec.name}/")]
        summary = next(s for s in summarise(mine) if s.player == c.spec.name)
        rows.append(DemoRow(c, summary))
    return rows, episodes


def demo_table(rows: Sequence[DemoRow], title: str) -> Table:
    """Five short columns and a caption: reads at 80 columns."""
    table = Table(title=title, box=box.SIMPLE_HEAD, padding=0, show_edge=False, caption_justify="left")
    for col in ("agent", "what", "return ±CI", "W/D/L", "invalid"):
        table.add_column(col, justify="left" if col in ("agent", "what") else "right", no_wrap=True)
    for r in rows:
        s = r.summary
        llm = isinstance(r.contender.spec, LLMAgentSpec)
        table.add_row(
            s.player,
            r.contender.what,
            return_ci(s.mean_return, s.ci95),
            f"{s.wins}/{s.draws}/{s.losses}",
            f"{s.invalid_rate:.0%}" if llm else "-",
        )
    table.caption = (  # lines no wider than the table, which wraps its caption
        "Each agent vs a random player, same games, seats alternating.\n"
        "Return: +1 win, 0 draw, -1 loss; ± the 95% interval.\n"
        "Invalid: answers without a legal move (a random move is played)."
    )
    return table


def published_eval(adapter: str | Path) -> str | None:
    """One line on the adapter's own evaluation against random, from the manifest next to it, if it has one."""
    adapter = Path(adapter)
    try:
        manifest = json.loads((adapter.parent / "manifest.json").read_text())
        entry = next(e for e in manifest["adapters"] if e.get("path") == adapter.name)
        m = next(v for k, v in entry["eval"].items() if k.endswith("vs random"))
        games, mean, ci = int(m["games"]), float(m["return"]), float(m["ci95"])
    except (OSError, ValueError, KeyError, StopIteration, TypeError):
        return None
    line = (  # short enough for 80 columns; the report, if any, on a line of its own
        f"{adapter.name} at publication: {mean:+.3f} [{mean - ci:+.3f}, {mean + ci:+.3f}] over {games} games, "
        f"{float(m.get('invalid_rate', 0.0)):.1%} invalid"
    )
    return f"{line}\nDetails: {entry['report']}" if entry.get("report") else line
