"""``llmmarl tournament`` and ``llmmarl report``: run or resume a tournament, report on a stored one."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.markdown import Markdown
from rich.markup import escape

from llmmarl.backends.base import BackendError
from llmmarl.commands.common import SET_HELP, console, fail, interrupt, load_config
from llmmarl.models import ModelNotAvailableError


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

    cfg = load_config(TournamentConfig.from_yaml, config, set_)
    if ray is not None:
        from llmmarl.tournament.config import RayConfig

        cfg.ray = (cfg.ray or RayConfig()).model_copy(update={"address": ray})
    signal.signal(signal.SIGTERM, interrupt)  # like Ctrl-C: the store commits game by game and closes cleanly
    try:
        summary = run_tournament(cfg, console=console)
    except KeyboardInterrupt:
        db = escape(str(cfg.db))
        fail(f"[yellow]interrupted.[/] Finished games are stored in {db}; run the same command to resume.", 130)
    except (BackendError, ModelNotAvailableError, StoreError, ValueError, RuntimeError) as e:
        fail(f"[red]tournament failed:[/] {escape(str(e))}")
    with TournamentStore(cfg.db) as store:
        report = build_report(store, cfg.name, bootstrap=cfg.bootstrap)
    out = write_html(report, html or cfg.report_path)
    console.print(Markdown(render_markdown(report)))
    console.print(
        f"{summary.played_now} games played now in {summary.seconds:.1f}s; {summary.finished}/{summary.scheduled} "
        f"stored in {cfg.db}. Report: {out}"
        + (f" ({summary.retried} games replayed after a Ray actor died)" if summary.retried else "")
    )


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
        fail(f"[red]{escape(str(e))}[/]")
    if html:
        console.print(f"HTML report: {write_html(report, html)}")
    if md or not (html or csv or json):
        console.print(Markdown(render_markdown(report)))
