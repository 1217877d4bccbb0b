"""The report as one self-contained HTML page: inline CSS, plots as PNG data URIs, no scripts, fonts or links.

It opens offline and can be mailed as one file.
"""

from __future__ import annotations

import html
from pathlib import Path

from llmmarl.tournament.report_data import TournamentReport
from llmmarl.tournament.report_plots import plot_cross_play, plot_head_to_head, plot_invalid, plot_ratings
from llmmarl.tournament.report_text import duplicate_note, table_rows

_CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 980px; margin: 2em auto;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
.meta { color: #666; } table { border-collapse: collapse; margin: 1em 0; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 10px; border-bottom: 1px solid #eee; text-align: right; }
th:first-child, td:first-child, th:nth-child(2), td:nth-child(2) { text-align: left; }
th { background: #f6f6f6; } img { max-width: 100%; display: block; margin: 1em 0; }
.note { color: #555; font-size: 0.92em; }
"""


def render_html(report: TournamentReport) -> str:
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Tournament {e(report.name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Tournament {e(report.name)}</h1>",
        f'<p class="meta">{e(report.schedule)}. {report.finished} of {report.scheduled} scheduled games played'
        f"{f', {report.errors} ended with an error' if report.errors else ''}. Generated {e(report.generated)}.</p>",
        "<table><tr><th>participant</th><th>what</th></tr>",
        *(f"<tr><td>{e(n)}</td><td>{e(w)}</td></tr>" for n, w in report.participants.items()),
        "</table>",
    ]
    for s in report.sections:
        kind = "cooperative" if s.cooperative else "competitive"
        parts.append(f"<h2>{e(s.game)} <small>({e(s.env)}, {kind}, {s.games} rated games)</small></h2>")
        if s.scoring == "duplicate":
            parts.append(f'<p class="note">{e(duplicate_note(s))}</p>')
        head, cells = table_rows(s)
        parts.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in cells]
        parts.append("</table>")
        if s.cooperative:
            parts.append(
                '<p class="note">A cooperative game has no rival: each participant is scored by its mean team payoff '
                "with other partners; the matrix shows every pairing, self-play on the diagonal.</p>"
            )
        else:
            parts.append(
                '<p class="note">Bradley-Terry: maximum-likelihood fit (choix ILSR, draws = half wins), 95% '
                "percentile bootstrap over games. OpenSkill: Weng-Lin Plackett-Luce, online in schedule order, "
                "μ ± 1.96σ. Both on an Elo-like scale centred on the field mean (1500).</p>"
            )
        plots = [("ratings", plot_ratings(s))]
        plots.append(
            ("cross-play matrix", plot_cross_play(s)) if s.cooperative else ("head to head", plot_head_to_head(s))
        )
        if (inv := plot_invalid(s)) is not None:
            plots.append(("invalid-action rates", inv))
        else:
            parts.append('<p class="note">No LLM turns in this game: no invalid-action rates to show.</p>')
        parts += [f'<img alt="{e(s.game)}: {e(alt)}" src="{uri}">' for alt, uri in plots]
    parts.append("</body></html>")
    return "\n".join(parts)


def write_html(report: TournamentReport, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(report), encoding="utf-8")
    return path
