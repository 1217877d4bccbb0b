"""Command line: thin wrappers that parse options, build configs and call the library."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from llmmarl.agents.scripted import scripted_policies
from llmmarl.agents.specs import LLMAgentSpec, parse_agent
from llmmarl.backends.base import BackendError
from llmmarl.envs import UnknownEnvError, list_envs, make
from llmmarl.models import DEFAULT_MODEL, ModelNotAvailableError
from llmmarl.records import summarise
from llmmarl.report import print_transcript, summary_table
from llmmarl.runner import Match, Runner, seatings

app = typer.Typer(help="llmmarl: multi-agent RL with LLM agents.", no_args_is_help=True, add_completion=False)
console = Console()


@app.command()
def envs() -> None:
    """List the games that can be played."""
    table = Table(title="Registered games (any PettingZoo env also works as pettingzoo:classic.go_v5)")
    for col in ("name", "kind", "source", "summary"):
        table.add_column(col)
    for spec in list_envs():
        table.add_row(spec.name, spec.kind, spec.source, spec.summary)
    console.print(table)


@app.command()
def agents() -> None:
    """List the kinds of agent that can play."""
    table = Table(title="Agents")
    table.add_column("agent")
    table.add_column("what")
    table.add_row("llm", "the base model (--model), no adapter")
    table.add_row("llm@PATH_OR_NAME", "the base model with a LoRA adapter folder, or a served adapter name")
    for name, summary in scripted_policies().items():
        table.add_row(name, summary)
    console.print(table)


@app.command()
def play(
    env: Annotated[str, typer.Argument(help="Game name (see `llmmarl envs`).")],
    agents: Annotated[str, typer.Option(help="Comma-separated agents, one per seat, cycled if fewer.")] = "llm,random",
    games: Annotated[int, typer.Option(min=1, help="Number of games.")] = 32,
    concurrency: Annotated[int, typer.Option(min=1, help="Games played at once.")] = 32,
    model: Annotated[str, typer.Option(help="Base model: default, tiny, a folder or a hub id.")] = DEFAULT_MODEL,
    seed: Annotated[int, typer.Option(help="Seed of game i is seed + i.")] = 0,
    temperature: Annotated[float, typer.Option(min=0.0, help="LLM sampling temperature.")] = 0.7,
    max_new_tokens: Annotated[int, typer.Option(min=8, help="LLM answer budget in tokens.")] = 96,
    constrained: Annotated[bool, typer.Option(help="Grammar-constrained decoding: actions always legal.")] = False,
    fallback: Annotated[str, typer.Option(help="After a failed re-ask: random or forfeit.")] = "random",
    max_batch_size: Annotated[int, typer.Option(min=1, help="Rows per generate call.")] = 64,
    out: Annotated[Path | None, typer.Option(help="JSONL transcript (default runs/<env>-<time>.jsonl).")] = None,
    show: Annotated[int, typer.Option(help="How many game transcripts to print.")] = 1,
) -> None:
    """Play games between agents; print one transcript and the summary."""
    try:
        probe = make(env)
    except UnknownEnvError as e:
        raise typer.BadParameter(str(e), param_hint="ENV") from None
    taken: set[str] = set()
    try:
        specs = [parse_agent(a, taken) for a in agents.split(",") if a.strip()]
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--agents") from None
    if fallback not in ("random", "forfeit"):
        raise typer.BadParameter("use random or forfeit", param_hint="--fallback")
    specs = [
        s.model_copy(
            update={
                "temperature": temperature,
                "max_new_tokens": max_new_tokens,
                "constrained": constrained,
                "fallback": fallback,
            }
        )
        if isinstance(s, LLMAgentSpec)
        else s
        for s in specs
    ]
    matches = [
        Match(game_id=i, env=env, seats=seats, seed=seed + i) for i, seats in enumerate(seatings(probe, specs, games))
    ]
    probe.close()
    backend = None
    if any(isinstance(s, LLMAgentSpec) for s in specs):
        from llmmarl.backends.transformers import TransformersBackend

        with console.status(f"loading model {model!r}"):
            try:
                backend = TransformersBackend(model, max_batch_size=max_batch_size, seed=seed)
            except (ModelNotAvailableError, OSError, BackendError) as e:
                console.print(f"[red]cannot load model {model!r}:[/] {e}")
                raise typer.Exit(1) from None
    out = out or Path("runs") / f"{env.replace(':', '_').replace('/', '_')}-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
    runner = Runner(backend, concurrency=concurrency, out=out)
    start = time.perf_counter()
    try:
        episodes = runner.play(matches)
    except BackendError as e:
        console.print(f"[red]backend error:[/] {e}")
        raise typer.Exit(1) from None
    elapsed = time.perf_counter() - start
    for ep in episodes[:show]:
        print_transcript(ep, console)
    console.print(summary_table(summarise(episodes), title=f"{env}: {len(episodes)} games in {elapsed:.1f}s"))
    errors = [ep for ep in episodes if ep.error]
    if errors:
        console.print(f"[red]{len(errors)} game(s) ended with an error; first: {errors[0].error}[/]")
    stats = runner.stats
    console.print(
        f"{stats['decisions']} decisions ({stats['decisions'] / elapsed:.1f}/s), {stats['llm_requests']} LLM requests "
        f"in {stats['backend_calls']} batched calls, {stats['reasks']} re-asks. Transcript: {out}"
    )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
