"""The report as text: each game's leaderboard cells (shared with the HTML page) and the Markdown summary."""

from __future__ import annotations

import math
from collections.abc import Sequence

from llmmarl.tournament.ratings import Rating
from llmmarl.tournament.report_data import GameSection, TournamentReport


def _fmt_rating(r: Rating | None, digits: int = 0) -> str:
    if r is None or not r.games or math.isnan(r.rating):
        return "-"
    return f"{r.rating:.{digits}f} [{r.low:.{digits}f}, {r.high:.{digits}f}]"


def _fmt_rate(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def table_rows(section: GameSection) -> tuple[list[str], list[list[str]]]:
    """Header and cells of a game's leaderboard, shared by the HTML and Markdown renderers."""
    if section.cooperative:
        head = ["#", "participant", "cross-play payoff [95% CI]", "games", "mean payoff", "invalid", "fallback"]
    else:
        head = ["#", "participant", "Bradley-Terry [95% CI]", "OpenSkill [95% CI]", "W/D/L", "mean payoff"]
        head += ["invalid", "fallback"]
    cells = []
    for i, r in enumerate(section.rows, 1):
        payoff = "-" if r.mean_payoff is None else f"{r.mean_payoff:+.3f}"
        if section.cooperative:
            row = [str(i), r.participant, _fmt_rating(r.cross_play, 2), str(r.games), payoff]
        else:
            row = [str(i), r.participant, _fmt_rating(r.bradley_terry), _fmt_rating(r.openskill)]
            row += [f"{r.wins}/{r.draws}/{r.losses}", payoff]
        cells.append([*row, _fmt_rate(r.invalid_rate), _fmt_rate(r.fallback_rate)])
    return head, cells


def render_markdown(report: TournamentReport) -> str:
    lines = [
        f"# Tournament {report.name}",
        "",
        f"{report.schedule}. {report.finished} of {report.scheduled} scheduled games played"
        + (f", {report.errors} with an error." if report.errors else "."),
        "",
        *(f"- **{n}**: {w}" for n, w in report.participants.items()),
    ]
    for s in report.sections:
        kind = "cooperative" if s.cooperative else "competitive"
        lines += ["", f"## {s.game} ({kind}, {s.games} rated games)", ""]
        if s.scoring == "duplicate":
            lines += [duplicate_note(s), ""]
        head, cells = table_rows(s)
        lines += [_md_row(head), _md_row(["---"] * len(head)), *(_md_row(c) for c in cells)]
        matrix, counts, what = (
            (s.cross_play, s.cross_play_games, "Cross-play, mean team payoff (row with column)")
            if s.cooperative
            else (s.h2h, s.h2h_games, "Head to head, score of row vs column")
        )
        lines += ["", f"{what}:", "", _md_row(["", *s.participants]), _md_row(["---"] * (len(s.participants) + 1))]
        for p, row, n in zip(s.participants, matrix, counts, strict=True):
            fmt = "{:.2f}" if s.cooperative else "{:.0%}"
            lines.append(
                _md_row([p, *("-" if v is None else f"{fmt.format(v)} ({k})" for v, k in zip(row, n, strict=True))])
            )
    return "\n".join(lines) + "\n"


def duplicate_note(s: GameSection) -> str:
    left = f"; {s.unpaired} games without their seat-swapped twin are left out" if s.unpaired else ""
    return (
        f"Duplicate scoring: ratings and head to head compare {s.boards} boards - the seat-swapped games of a "
        f"pairing, dealt the same cards - by the payoff summed over each board{left}. W/D/L counts single games."
    )


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
