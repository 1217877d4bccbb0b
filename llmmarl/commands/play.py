"""``llmmarl envs``, ``agents``, ``play`` and ``demo``: what can play, and playing games."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.markup import escape
from rich.table import Table

from llmmarl.agents.scripted import scripted_policies
from llmmarl.agents.specs import LLMAgentSpec, parse_agent
from llmmarl.backends.base import Backend, BackendError
from llmmarl.backends.factory import BackendSpec, UnknownBackendError, build_backend, check_kind
from llmmarl.commands.common import console, fail, interrupt
from llmmarl.config_overrides import OverrideError, apply_overrides
from llmmarl.envs import UnknownEnvError, list_envs, make
from llmmarl.models import DEFAULT_MODEL, ModelNotAvailableError
from llmmarl.records import EpisodeRecord, summarise
from llmmarl.runner import Match, Runner, seatings
from llmmarl.serve import ServeError
from llmmarl.terminal import print_transcript, summary_table


def envs() -> None:
    """List the games that can be played, TextArena's too (available here or not, and why)."""
    table = Table(title="Registered games (any PettingZoo env also works as pettingzoo:classic.go_v5)")
    for col in ("name", "kind", "source", "summary"):
        table.add_column(col)
    for spec in list_envs():
        table.add_row(spec.name, spec.kind, spec.source, spec.summary)
    console.print(table)
    _textarena_envs()


def _textarena_envs() -> None:
    """TextArena's games, one row per game: its ids (``textarena:<id>``) and whether it runs here."""
    from llmmarl.envs.textarena import availability, games_by_folder

    try:
        games = games_by_folder()
    except ImportError:
        console.print("TextArena games (textarena:<id>): not installed; pip install 'llmmarl[textarena]'")
        return
    table = Table(title="TextArena games: textarena:<id>, free-text moves (docs/textarena.md)")
    for col in ("game", "ids", "here"):
        table.add_column(col)
    ready = 0
    for game, ids in games.items():
        check = availability(ids[0])
        ready += check.ok
        table.add_row(game, ", ".join(ids), "[green]available[/]" if check.ok else f"[red]no:[/] {check.why}")
    table.caption = f"{ready} of {len(games)} games available here"
    console.print(table)


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


def play(
    env: Annotated[str, typer.Argument(help="Game name (see `llmmarl envs`).")],
    agents: Annotated[str, typer.Option(help="Comma-separated agents, one per seat, cycled if fewer.")] = "llm,random",
    games: Annotated[int, typer.Option(min=1, help="Number of games.")] = 32,
    concurrency: Annotated[int, typer.Option(min=1, help="Games played at once.")] = 32,
    model: Annotated[str, typer.Option(help="Base model: default, tiny, a folder or a hub id.")] = DEFAULT_MODEL,
    seed: Annotated[int, typer.Option(help="Seed of game i is seed + i.")] = 0,
    temperature: Annotated[float, typer.Option(min=0.0, help="LLM sampling temperature.")] = 0.7,
    max_new_tokens: Annotated[int, typer.Option(min=8, help="LLM answer budget in tokens.")] = 64,
    constrained: Annotated[bool, typer.Option(help="Grammar-constrained decoding: actions always legal.")] = False,
    fallback: Annotated[str, typer.Option(help="After a failed re-ask: random or forfeit.")] = "random",
    max_batch_size: Annotated[int, typer.Option(min=1, help="Rows per generate call.")] = 64,
    out: Annotated[Path | None, typer.Option(help="JSONL transcript (default runs/<env>-<time>.jsonl).")] = None,
    show: Annotated[int, typer.Option(help="How many game transcripts to print.")] = 1,
    endpoint: Annotated[
        str | None, typer.Option(help="Act through this OpenAI-compatible server (e.g. `llmmarl serve`'s URL).")
    ] = None,
    api_key: Annotated[str | None, typer.Option(envvar="LLMMARL_API_KEY", help="The --endpoint's key.")] = None,
    timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds one --endpoint request may take in all, retries included.")
    ] = 300.0,
    backend_kind: Annotated[
        str | None,
        typer.Option(
            "--backend",
            help="Backend kind that plays the LLM agents: transformers (the default, in-process), openai (the "
            "default with --endpoint), vllm (a vLLM server of its own), a registered kind or your.module:builder.",
        ),
    ] = None,
    backend_set: Annotated[
        list[str] | None,
        typer.Option(
            "--backend-set",
            help="KEY=VALUE: one more setting of the backend, by BackendSpec field (kv_cache_gib=0.5, "
            "options.depth=2); repeatable.",
        ),
    ] = None,
) -> None:
    """Play games between agents; print one transcript and the summary."""
    try:
        probe = make(env)
    except UnknownEnvError as e:
        raise typer.BadParameter(str(e), param_hint="ENV") from None
    kind = backend_kind or ("openai" if endpoint else "transformers")
    try:
        check_kind(kind)
    except UnknownBackendError as e:
        raise typer.BadParameter(str(e), param_hint="--backend") from None
    if endpoint and kind != "openai":
        raise typer.BadParameter(f"--endpoint plays through an openai backend, not {kind}", param_hint="--backend")
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
    if kind == "openai":
        # --model names the served base model; the default lets the server's own base be found
        served = None if model == DEFAULT_MODEL else model
        fields: dict[str, Any] = dict(
            kind="openai", base_url=endpoint, api_key=api_key, served_model=served, seed=seed, timeout=timeout
        )
    else:
        fields = dict(kind=kind, model=model, max_batch_size=max_batch_size, seed=seed)
    spec = _backend_spec(fields, backend_set or [])
    backend: Backend | None = None
    if any(isinstance(s, LLMAgentSpec) for s in specs):
        backend = _build(spec)
    out = out or Path("runs") / f"{env.replace(':', '_').replace('/', '_')}-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
    runner = Runner(backend, concurrency=concurrency, out=out)
    start = time.perf_counter()
    signal.signal(signal.SIGTERM, interrupt)  # like Ctrl-C: the runner closes the transcript on the way out
    try:
        episodes = runner.play(matches)
    except BackendError as e:
        fail(f"[red]backend error:[/] {escape(str(e))} (finished games are in {escape(str(out))})")
    except KeyboardInterrupt:
        fail(f"[yellow]interrupted.[/] Finished games are in {escape(str(out))}.", 130)
    finally:
        close = getattr(backend, "close", None)  # a kind that started a server stops it
        if close is not None:
            close()
    elapsed = time.perf_counter() - start
    for ep in episodes[:show]:
        print_transcript(ep, console)
    console.print(summary_table(summarise(episodes), title=f"{env}: {len(episodes)} games in {elapsed:.1f}s"))
    _print_broken(episodes)
    stats = runner.stats
    console.print(
        f"{stats['decisions']} decisions ({stats['decisions'] / elapsed:.1f}/s), {stats['llm_requests']} LLM requests "
        f"in {stats['backend_calls']} batched calls ({stats['failed_requests']} failed by the server), "
        f"{stats['reasks']} re-asks. Transcript: {escape(str(out))}"
    )


def _backend_spec(fields: dict[str, Any], sets: list[str]) -> BackendSpec:
    """The backend ``play`` builds: ``fields`` from its options, then each ``--backend-set``."""
    try:
        return BackendSpec.model_validate(apply_overrides(fields, sets))
    except OverrideError as e:
        raise typer.BadParameter(str(e).replace("--set", "--backend-set"), param_hint="--backend-set") from None
    except ValidationError as e:
        errors = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise typer.BadParameter(errors, param_hint="--backend-set") from None


def _build(spec: BackendSpec) -> Backend:
    """``spec``'s backend, or one line saying why not."""
    if spec.kind == "openai":
        try:
            return build_backend(spec)
        except BackendError as e:
            fail(f"[red]{escape(str(e))}[/]")
    with console.status(f"loading model {escape(repr(spec.model))}"):
        try:
            backend = build_backend(spec)
            start = getattr(backend, "start", None)  # a server (vllm) starts now rather than in the first game
            if start is not None:
                start()
            return backend
        except (ModelNotAvailableError, OSError, BackendError, ServeError) as e:
            fail(f"[red]cannot load model {escape(repr(spec.model))}:[/] {escape(str(e))}")


def _print_broken(episodes: list[EpisodeRecord]) -> None:
    """Games that count for nothing: stopped by a server outage, or broken by an error."""
    outages = [ep for ep in episodes if ep.outage]
    errors = [ep for ep in episodes if ep.error and not ep.outage]
    if outages:
        console.print(
            f"[yellow]{len(outages)} game(s) stopped by a server outage (not counted); "
            f"first: {escape(outages[0].error or '')}[/]"
        )
    if errors:
        console.print(f"[red]{len(errors)} game(s) ended with an error; first: {escape(errors[0].error or '')}[/]")


def demo(
    games: Annotated[int, typer.Option(min=1, help="Games per agent (the same games for every agent).")] = 24,
    adapter: Annotated[
        Path | None, typer.Option(help="Trained LoRA adapter folder to show (default: the shipped demo adapter).")
    ] = None,
    model: Annotated[str, typer.Option(help="Base model: default, tiny, a folder or a hub id.")] = DEFAULT_MODEL,
    seed: Annotated[int, typer.Option(help="Seed of the games.")] = 0,
) -> None:
    """What llmmarl is for, in a few minutes: base model, grammar, trained adapter and random, side by side."""
    from llmmarl.demo import DEMO_ADAPTER, contenders, demo_table, published_eval, run_demo

    adapter = adapter or DEMO_ADAPTER
    if not (adapter / "adapter_config.json").exists():
        raise typer.BadParameter(f"{adapter} is not a LoRA adapter folder", param_hint="--adapter")
    with console.status(escape(f"loading model {model!r} and adapter {adapter}")):
        try:  # the adapter loads here rather than mid-game: one made for another base model is a clear error
            backend = build_backend(BackendSpec(model=model, adapters={adapter.name: adapter}, seed=seed))
        except (ModelNotAvailableError, OSError, BackendError, RuntimeError, ValueError) as e:
            why = str(e).splitlines()[0]  # a shape mismatch lists every layer: the first line says enough
            fail(
                f"[red]cannot load model {escape(repr(model))} with adapter {escape(str(adapter))}[/] "
                f"(made for another model?) {escape(why)}"
            )
    start = time.perf_counter()
    try:
        rows, _ = run_demo(backend, contenders(adapter), games, seed)
    except BackendError as e:
        fail(f"[red]backend error:[/] {escape(str(e))}")
    elapsed = time.perf_counter() - start
    console.print(demo_table(rows, title=f"tic-tac-toe vs random: {games} games each, {elapsed:.0f}s"))
    if note := published_eval(adapter):
        console.print(note)
