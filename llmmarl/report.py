"""Terminal output for people: a readable transcript of one game and the per-agent summary table."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from llmmarl.records import AgentSummary, EpisodeRecord


def print_transcript(episode: EpisodeRecord, console: Console | None = None) -> None:
    console = console or Console()
    seats = ", ".join(f"{seat}={player}" for seat, player in episode.seats.items())
    console.rule(f"[bold]{episode.env}[/] game {episode.game_id} (seed {episode.seed}): {seats}")
    for t in episode.turns:
        lines = [t.observation]
        if t.inbox:
            lines += ["", *t.inbox]
        for i, a in enumerate(t.attempts):
            tag = "answer" if i == 0 else "re-ask answer"
            lines += ["", f"[dim]{tag}:[/] {a.response.strip()}" + (f"\n[red]! {a.error}[/]" if a.error else "")]
        if t.turn and t.turn.predictions:
            hits = {k: ("right" if v else "wrong") for k, v in t.prediction_hits.items()}
            preds = ", ".join(
                f"{k}={v}" + (f" ({hits[k]})" if k in hits else "") for k, v in t.turn.predictions.items()
            )
            lines.append(f"[cyan]predicts:[/] {preds}")
        if t.message:
            lines.append(f"[magenta]says to {', '.join(t.message_to)}:[/] {t.message}")
        fb = f" [yellow](fallback: {t.fallback})[/]" if t.fallback else ""
        lines.append(f"[bold green]plays {t.action}[/]{fb}   reward {t.reward:+g}")
        console.print(Panel("\n".join(lines), title=f"step {t.step}: {t.seat} ({t.player})", title_align="left"))
    if episode.error:
        console.print(f"[red]game error:[/] {episode.error}")
    else:
        res = ", ".join(f"{s}: {r:+g} ({episode.outcomes[s]})" for s, r in episode.returns.items())
        console.print(
            f"[bold]result:[/] {res}" + (f"  [yellow]{episode.forfeit} forfeited[/]" if episode.forfeit else "")
        )


def summary_table(summaries: Sequence[AgentSummary], title: str = "Summary") -> Table:
    table = Table(title=title)
    for col in ("agent", "games", "return (95% CI)", "W/D/L", "invalid", "fallback", "pred. acc.", "msgs", "tokens"):
        table.add_column(col, justify="left" if col == "agent" else "right")
    for s in summaries:
        acc = f"{s.prediction_accuracy:.0%} of {s.predictions_scored}" if s.prediction_accuracy is not None else "-"
        table.add_row(
            s.player,
            str(s.games),
            f"{s.mean_return:+.3f} ± {s.ci95:.3f}",
            f"{s.wins}/{s.draws}/{s.losses}",
            f"{s.invalid_rate:.1%}",
            f"{s.fallback_rate:.1%}",
            acc,
            str(s.messages_sent),
            str(s.tokens_generated),
        )
    return table
