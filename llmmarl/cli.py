"""Command line: thin wrappers that parse options, build configs and call the library."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markdown import Markdown
from rich.table import Table

from llmmarl.agents.scripted import scripted_policies
from llmmarl.agents.specs import LLMAgentSpec, parse_agent
from llmmarl.backends.base import Backend, BackendError
from llmmarl.backends.factory import BackendSpec, build_backend
from llmmarl.config_errors import CONFIG_ERRORS, describe_config_error
from llmmarl.envs import UnknownEnvError, list_envs, make
from llmmarl.models import DEFAULT_MODEL, ModelNotAvailableError
from llmmarl.records import EpisodeRecord, summarise
from llmmarl.runner import Match, Runner, seatings
from llmmarl.terminal import print_transcript, summary_table

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
    backend: Backend | None = None
    if endpoint and any(isinstance(s, LLMAgentSpec) for s in specs):
        # --model names the served base model; the default lets the server's own base be found
        served = None if model == DEFAULT_MODEL else model
        spec = BackendSpec(
            kind="openai", base_url=endpoint, api_key=api_key, served_model=served, seed=seed, timeout=timeout
        )
        try:
            backend = build_backend(spec)
        except BackendError as e:
            console.print(f"[red]{e}[/]")
            raise typer.Exit(1) from None
    elif any(isinstance(s, LLMAgentSpec) for s in specs):
        with console.status(f"loading model {model!r}"):
            try:
                backend = build_backend(BackendSpec(model=model, max_batch_size=max_batch_size, seed=seed))
            except (ModelNotAvailableError, OSError, BackendError) as e:
                console.print(f"[red]cannot load model {model!r}:[/] {e}")
                raise typer.Exit(1) from None
    out = out or Path("runs") / f"{env.replace(':', '_').replace('/', '_')}-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
    runner = Runner(backend, concurrency=concurrency, out=out)
    start = time.perf_counter()
    signal.signal(signal.SIGTERM, _interrupt)  # like Ctrl-C: the runner closes the transcript on the way out
    try:
        episodes = runner.play(matches)
    except BackendError as e:
        console.print(f"[red]backend error:[/] {e} (finished games are in {out})")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted.[/] Finished games are in {out}.")
        raise typer.Exit(130) from None
    elapsed = time.perf_counter() - start
    for ep in episodes[:show]:
        print_transcript(ep, console)
    console.print(summary_table(summarise(episodes), title=f"{env}: {len(episodes)} games in {elapsed:.1f}s"))
    _print_broken(episodes)
    stats = runner.stats
    console.print(
        f"{stats['decisions']} decisions ({stats['decisions'] / elapsed:.1f}/s), {stats['llm_requests']} LLM requests "
        f"in {stats['backend_calls']} batched calls ({stats['failed_requests']} failed by the server), "
        f"{stats['reasks']} re-asks. Transcript: {out}"
    )


def _print_broken(episodes: list[EpisodeRecord]) -> None:
    """Games that count for nothing: stopped by a server outage, or broken by an error."""
    outages = [ep for ep in episodes if ep.outage]
    errors = [ep for ep in episodes if ep.error and not ep.outage]
    if outages:
        console.print(
            f"[yellow]{len(outages)} game(s) stopped by a server outage (not counted); first: {outages[0].error}[/]"
        )
    if errors:
        console.print(f"[red]{len(errors)} game(s) ended with an error; first: {errors[0].error}[/]")


SET_HELP = "KEY=VALUE: change one config key (dotted for nested ones: ppo.critic=centralised); repeatable."


@app.command()
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
    with console.status(f"loading model {model!r} and adapter {adapter}"):
        try:  # the adapter loads here rather than mid-game: one made for another base model is a clear error
            backend = build_backend(BackendSpec(model=model, adapters={adapter.name: adapter}, seed=seed))
        except (ModelNotAvailableError, OSError, BackendError, RuntimeError, ValueError) as e:
            why = str(e).splitlines()[0]  # a shape mismatch lists every layer: the first line says enough
            console.print(f"[red]cannot load model {model!r} with adapter {adapter}[/] (made for another model?) {why}")
            raise typer.Exit(1) from None
    start = time.perf_counter()
    try:
        rows, _ = run_demo(backend, contenders(adapter), games, seed)
    except BackendError as e:
        console.print(f"[red]backend error:[/] {e}")
        raise typer.Exit(1) from None
    elapsed = time.perf_counter() - start
    console.print(demo_table(rows, title=f"tic-tac-toe vs random: {games} games each, {elapsed:.0f}s"))
    if note := published_eval(adapter):
        console.print(note)


@app.command()
def tournament(
    config: Annotated[Path, typer.Argument(help="Tournament config (YAML), e.g. configs/tournament_tictactoe.yaml.")],
    html: Annotated[Path | None, typer.Option(help="HTML report (default: the config's `report`, or db.html).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help=SET_HELP)] = None,
    ray: Annotated[
        str | None,
        typer.Option(
            help="Play on Ray actors: local (start Ray here), auto (the cluster this machine joined) or a cluster "
            "address; overrides the config's `ray.address` (other `ray:` settings keep their values)."
        ),
    ] = None,
) -> None:
    """Run or resume a tournament; print its summary and write the HTML report."""
    from llmmarl.tournament import TournamentConfig, run_tournament
    from llmmarl.tournament.report import build_report, render_markdown, write_html
    from llmmarl.tournament.store import StoreError, TournamentStore

    try:
        cfg = TournamentConfig.from_yaml(config, set_ or ())
    except CONFIG_ERRORS as e:
        typer.echo(describe_config_error(config, e), err=True)
        raise typer.Exit(2) from None
    if ray is not None:
        from llmmarl.tournament.config import RayConfig

        cfg.ray = (cfg.ray or RayConfig()).model_copy(update={"address": ray})
    signal.signal(signal.SIGTERM, _interrupt)  # like Ctrl-C: the store commits game by game and closes cleanly
    try:
        summary = run_tournament(cfg, console=console)
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted.[/] Finished games are stored in {cfg.db}; run the same command to resume.")
        raise typer.Exit(130) from None
    except (BackendError, ModelNotAvailableError, StoreError, ValueError, RuntimeError) as e:
        console.print(f"[red]tournament failed:[/] {e}")
        raise typer.Exit(1) from None
    with TournamentStore(cfg.db) as store:
        report = build_report(store, cfg.name, bootstrap=cfg.bootstrap)
    out = write_html(report, html or cfg.report_path)
    console.print(Markdown(render_markdown(report)))
    console.print(
        f"{summary.played_now} games played now in {summary.seconds:.1f}s; {summary.finished}/{summary.scheduled} "
        f"stored in {cfg.db}. Report: {out}"
        + (f" ({summary.retried} games replayed after a Ray actor died)" if summary.retried else "")
    )


@app.command("report")
def report_cmd(
    db: Annotated[Path, typer.Argument(help="Tournament store (.sqlite) written by `llmmarl tournament`.")],
    html: Annotated[Path | None, typer.Option(help="Write the self-contained HTML report here.")] = None,
    md: Annotated[bool, typer.Option("--md", help="Print the Markdown summary.")] = False,
    name: Annotated[str | None, typer.Option(help="Tournament in the store (default: the latest).")] = None,
    csv: Annotated[Path | None, typer.Option(help="Export per-seat results as CSV.")] = None,
    json: Annotated[Path | None, typer.Option(help="Export config, schedule and results as JSON.")] = None,
    scoring: Annotated[
        str | None,
        typer.Option(help="outcome or duplicate: override the games' `scoring` (see the tournament config)."),
    ] = None,
) -> None:
    """Report on a stored tournament: HTML, Markdown, CSV or JSON (Markdown if nothing is asked)."""
    from llmmarl.tournament.report import build_report, render_markdown, write_html
    from llmmarl.tournament.store import StoreError, TournamentStore

    if not db.exists():
        raise typer.BadParameter(f"{db} does not exist", param_hint="DB")
    if scoring not in (None, "outcome", "duplicate"):
        raise typer.BadParameter(f"{scoring!r}: use outcome or duplicate", param_hint="--scoring")
    try:
        with TournamentStore(db) as store:
            report = build_report(store, name, scoring=scoring)
            if csv:
                console.print(f"CSV: {store.export_csv(report.name, csv)}")
            if json:
                console.print(f"JSON: {store.export_json(report.name, json)}")
    except (StoreError, ValueError) as e:
        console.print(f"[red]{e}[/]")
        raise typer.Exit(1) from None
    if html:
        console.print(f"HTML report: {write_html(report, html)}")
    if md or not (html or csv or json):
        console.print(Markdown(render_markdown(report)))


@app.command()
def serve(
    model: Annotated[str, typer.Option(help="Base model: default, tiny, a folder or a hub id.")] = DEFAULT_MODEL,
    adapter: Annotated[
        list[str] | None, typer.Option(help="NAME=PATH: serve a PEFT adapter folder as agent NAME (repeatable).")
    ] = None,
    manifest: Annotated[Path | None, typer.Option(help="Serve every adapter listed in this manifest.json.")] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on (0.0.0.0: other machines too).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
    api_key: Annotated[
        str | None, typer.Option(envvar="LLMMARL_API_KEY", help="Key clients must send (default: open server).")
    ] = None,
    max_lora_rank: Annotated[
        int | None, typer.Option(help="Largest adapter rank accepted, also for hot reloads (default: max(16, ranks)).")
    ] = None,
    max_loras: Annotated[
        int | None, typer.Option(min=1, help="Adapters per batch (default: max(4, adapters)).")
    ] = None,
    python: Annotated[
        str | None, typer.Option(help="Python with vLLM (default: this one, $LLMMARL_VLLM_PYTHON, .venv-vllm).")
    ] = None,
    max_model_len: Annotated[
        int | None, typer.Option(min=64, help="Longest prompt + answer in tokens (default 4096 or the model's window).")
    ] = None,
    kv_cache_gib: Annotated[
        float | None, typer.Option(help="KV cache size in GiB (default 1 on CPU; on CUDA vLLM's share of the card).")
    ] = None,
    memory_fraction: Annotated[
        float | None, typer.Option(help="--gpu-memory-utilization: share of the GPU vLLM may use (CUDA).")
    ] = None,
    dtype: Annotated[str, typer.Option(help="vLLM --dtype (auto: float32 on CPU, where bf16 is ~3x slower).")] = "auto",
    vllm_arg: Annotated[
        list[str] | None, typer.Option(help="More vLLM arguments, e.g. --vllm-arg='--max-num-seqs 64' (repeatable).")
    ] = None,
    log: Annotated[Path | None, typer.Option(help="Server log file (default: a temporary file).")] = None,
) -> None:
    """Serve the base model and every agent's adapter from one vLLM server, until Ctrl-C."""
    import shlex

    from pydantic import ValidationError

    from llmmarl.serve import ManifestError, ServeConfig, ServeError, VLLMServer, read_manifest

    adapters: dict[str, Path] = {}
    try:
        if manifest:
            adapters.update(read_manifest(manifest))
        for item in adapter or []:
            name, sep, path = item.partition("=")
            if not sep:
                raise typer.BadParameter(f"{item!r}: use NAME=PATH", param_hint="--adapter")
            adapters[name.strip()] = Path(path.strip())
        config = ServeConfig(
            model=model,
            adapters=adapters,
            host=host,
            port=port,
            api_key=api_key,
            max_lora_rank=max_lora_rank,
            max_loras=max_loras,
            python=python,
            max_model_len=max_model_len,
            kv_cache_gib=kv_cache_gib,
            memory_fraction=memory_fraction,
            dtype=dtype,
            extra_args=[tok for arg in vllm_arg or [] for tok in shlex.split(arg)],
            log_file=log,
        )
        server = VLLMServer(config)
    except (ManifestError, ServeError, ModelNotAvailableError) as e:
        console.print(f"[red]{e}[/]")
        raise typer.Exit(2) from None
    except ValidationError as e:
        console.print(f"[red]invalid serve options:[/] {'; '.join(err['msg'] for err in e.errors())}")
        raise typer.Exit(2) from None
    # SIGTERM (systemd, docker stop, kill) takes the same way out as Ctrl-C: stop the server's process group.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        with console.status(f"starting vLLM ({server.python}); log: {server.log_file}"):
            server.start()
        names = server.served()
        console.print(
            f"[green]serving[/] {server.url}  (started in {server.startup_seconds:.0f}s, log {server.log_file})"
        )
        console.print(f"base model: {config.base_name}   agents: {', '.join(names[1:]) or 'none'}")
        console.print(
            f"play through it: llmmarl play tictactoe_v3 --endpoint {server.url} --agents llm@NAME,random"
            + ("  (with --api-key / $LLMMARL_API_KEY)" if api_key else "")
        )
        code = server.wait()
        console.print(
            f"[red]the server exited with code {code}.[/] Last lines of {server.log_file}:\n{server.log_tail()}"
        )
        raise typer.Exit(1)
    except ServeError as e:
        console.print(f"[red]{e}[/]")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        console.print("stopping the server")
    finally:
        server.stop()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@app.command("serve-reload")
def serve_reload(
    name: Annotated[str, typer.Argument(help="Agent (adapter) name to serve the new version under.")],
    path: Annotated[Path, typer.Argument(help="The new version's adapter folder (a new folder per version).")],
    endpoint: Annotated[str, typer.Option(help="The running server.")] = "http://127.0.0.1:8000/v1",
    api_key: Annotated[str | None, typer.Option(envvar="LLMMARL_API_KEY", help="The server's key.")] = None,
) -> None:
    """Hot-load a new adapter version into a running `llmmarl serve`, under the agent's name."""
    from llmmarl.serve import hot_reload

    try:
        names = hot_reload(endpoint, name, path, api_key=api_key)
    except BackendError as e:
        console.print(f"[red]{e}[/]")
        raise typer.Exit(1) from None
    console.print(f"{endpoint} now serves {name} from {path.resolve()}; agents: {', '.join(names)}")


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="Training config (YAML); examples in configs/.", dir_okay=False)],
    resume: Annotated[
        bool, typer.Option(help="Continue the run in the config's output_dir from its newest checkpoint.")
    ] = False,
    set_: Annotated[list[str] | None, typer.Option("--set", help=SET_HELP)] = None,
) -> None:
    """Train one LoRA adapter per learner with multi-agent GRPO or PPO (the config's algorithm)."""
    from llmmarl.train import TrainConfig

    try:
        cfg = TrainConfig.from_yaml(config, set_ or ())
    except CONFIG_ERRORS as e:
        typer.echo(describe_config_error(config, e), err=True)
        raise typer.Exit(2) from None
    from llmmarl.train import train as run_training  # imports the trainer only once the config is valid

    try:
        run_training(cfg, resume=resume)
    except (FileExistsError, ValueError, ModelNotAvailableError, BackendError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    console.print(f"adapters and manifest.json: {cfg.adapters_path}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
