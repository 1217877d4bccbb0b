"""Terminal output for people: a readable transcript of one game and the per-agent summary table.

Rich reads ``[...]`` in a string as markup: model answers, messages, errors and names are escaped
(:func:`rich.markup.escape`) before they join our own markup, so an answer holding ``[/INST]`` prints as written
instead of failing the command, and ``[link=...]`` stays text instead of becoming a hyperlink the model chose.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from llmmarl.records import AgentSummary, EpisodeRecord


def print_transcript(episode: EpisodeRecord, console: Console | None = None) -> None:
    console = console or Console()
    seats = ", ".join(f"{seat}={player}" for seat, player in episode.seats.items())
    console.rule(f"[bold]{escape(episode.env)}[/] game {episode.game_id} (seed {episode.seed}): {escape(seats)}")
    for t in episode.turns:
        lines = [escape(t.observation)]
        if t.inbox:
            lines += ["", *map(escape, t.inbox)]
        for i, a in enumerate(t.attempts):
            tag = "answer" if i == 0 else "re-ask answer"
            error = f"\n[red]! {escape(a.error)}[/]" if a.error else ""
            lines += ["", f"[dim]{tag}:[/] {escape(a.response.strip())}" + error]
        if t.turn and t.turn.predictions:
            hits = {k: ("right" if v else "wrong") for k, v in t.prediction_hits.items()}
            preds = ", ".join(
                f"{k}={v}" + (f" ({hits[k]})" if k in hits else "") for k, v in t.turn.predictions.items()
            )
            lines.append(f"[cyan]predicts:[/] {escape(preds)}")
        if t.message:
            lines.append(f"[magenta]says to {escape(', '.join(t.message_to))}:[/] {escape(t.message)}")
        fb = f" [yellow](fallback: {escape(t.fallback)})[/]" if t.fallback else ""
        lines.append(f"[bold green]plays {escape(str(t.action))}[/]{fb}   reward {t.reward:+g}")
        title = escape(f"step {t.step}: {t.seat} ({t.player})")
        console.print(Panel("\n".join(lines), title=title, title_align="left"))
    if episode.error:
        console.print(f"[red]game error:[/] {escape(episode.error)}")
    else:
        res = ", ".join(f"{s}: {r:+g} ({episode.outcomes[s]})" for s, r in episode.returns.items())
        console.print(
            f"[bold]result:[/] {escape(res)}"
            + (f"  [yellow]{escape(str(episode.forfeit))} forfeited[/]" if episode.forfeit else "")
        )


def return_ci(mean: float, ci95: float) -> str:
    """A mean return and the half-width of its 95% interval in 13 characters: ``+0.268 ±0.092``."""
    return f"{mean:+.3f} ±{ci95:.3f}"


def summary_table(summaries: Sequence[AgentSummary], title: str = "Summary") -> Table:
    """Per-agent results that read at 80 columns: columns that say nothing in this run (no predictions, no
    messages, no LLM turns) are left out, and cells are kept short instead of wrapping. ``inv/fb``: first
    answers without a legal move / turns played by the fallback after the re-ask; ``±CI``: half-width of
    the 95% interval."""
    columns: dict[str, Callable[[AgentSummary], str]] = {
        "agent": lambda s: escape(s.player),
        "games": lambda s: str(s.games),
        "return ±CI": lambda s: return_ci(s.mean_return, s.ci95),
        "W/D/L": lambda s: f"{s.wins}/{s.draws}/{s.losses}",
    }
    if any(s.llm_turns for s in summaries):  # an LLM played: its invalid and fallback rates always show
        columns["inv/fb"] = lambda s: f"{s.invalid_rate:.0%}/{s.fallback_rate:.0%}"
    if any(s.tokens_generated for s in summaries):  # servers that return no token ids leave this empty
        columns["tokens"] = lambda s: str(s.tokens_generated)
    if any(s.predictions_scored for s in summaries):
        columns["pred."] = lambda s: f"{s.prediction_accuracy:.0%}" if s.prediction_accuracy is not None else "-"
    if any(s.messages_sent for s in summaries):
        columns["msgs"] = lambda s: str(s.messages_sent)
    table = Table(title=title, box=box.SIMPLE_HEAD, padding=0, show_edge=False)
    for col in columns:
        table.add_column(col, justify="left" if col == "agent" else "right", no_wrap=True)
    for s in summaries:
        table.add_row(*(cell(s) for cell in columns.values()))
    return table
