"""Tournament reports: one self-contained HTML file and a Markdown summary, both built from the store.

:func:`build_report` computes everything once into a :class:`TournamentReport` (pydantic, so it also dumps to
JSON); :func:`render_html` and :func:`render_markdown` only lay it out. The HTML opens offline and can be mailed
as one file: inline CSS, plots as base64 PNG data URIs drawn with matplotlib's object API (``Figure`` renders
through Agg without touching pyplot's global state), no scripts, fonts or links.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from pydantic import BaseModel, Field

from llmmarl.tournament.ratings import Rating, bradley_terry, cross_play_scores, openskill_ratings
from llmmarl.tournament.results import GameResult, cross_play, duplicate_boards, head_to_head, tally
from llmmarl.tournament.store import SeatStats, TournamentStore


class ParticipantRow(BaseModel):
    participant: str
    games: int = 0
    wins: int = 0
    draws: int = 0
    losses: int = 0
    mean_payoff: float | None = None
    bradley_terry: Rating | None = None
    openskill: Rating | None = None
    cross_play: Rating | None = None
    llm_turns: int = 0
    invalid_rate: float | None = Field(None, description="Share of LLM turns whose first answer was not legal.")
    fallback_rate: float | None = Field(None, description="Share of LLM turns played by the fallback.")


class GameSection(BaseModel):
    game: str
    env: str
    cooperative: bool
    games: int = Field(description="Finished games without errors (the rated ones).")
    errors: int
    participants: list[str]
    rows: list[ParticipantRow] = Field(description="Best first.")
    h2h: list[list[float | None]] = Field(description="Row's score vs column (wins + draws/2), None if unplayed.")
    h2h_games: list[list[int]]
    cross_play: list[list[float | None]] = Field(description="Mean team payoff, row with column (cooperative).")
    cross_play_games: list[list[int]]
    cross_play_seats: tuple[str, str] | None = Field(None, description="Seats of rows and columns, if seat-ordered.")
    scoring: str = Field("outcome", description="outcome (per game) or duplicate (per board; see GameSpec.scoring).")
    boards: int = Field(0, description="Duplicate scoring: boards rated (seat-swapped games sharing a deal).")
    unpaired: int = Field(0, description="Duplicate scoring: rated games left out because their board is incomplete.")


class TournamentReport(BaseModel):
    name: str
    generated: str
    schedule: str
    participants: dict[str, str] = Field(default_factory=dict, description="Name -> what it is, in one line.")
    scheduled: int
    finished: int
    errors: int
    sections: list[GameSection]


# ---- building ----------------------------------------------------------------------------------------------------
def build_report(
    store: TournamentStore,
    tournament: str | None = None,
    *,
    bootstrap: int | None = None,
    scoring: str | None = None,
) -> TournamentReport:
    """Compute ratings, matrices and rates for each game of a stored tournament (default: the latest one).

    ``scoring`` overrides every competitive game's ``scoring`` setting (outcome or duplicate).
    """
    names = store.tournaments()
    if not names:
        raise ValueError(f"{store.path} holds no tournament yet")
    tournament = tournament or names[-1]
    config = store.config(tournament)
    participants = [p["name"] for p in config["participants"]]
    bootstrap = config.get("bootstrap", 200) if bootstrap is None else bootstrap
    seed = int(config.get("seed", 0))
    scheduled, finished, errors = store.counts(tournament)
    stats = {(s.game, s.participant): s for s in store.seat_stats(tournament)}
    envs = {g.game: g.env for g in store.games(tournament)}
    scorings = {g.get("label") or g["env"]: g.get("scoring", "outcome") for g in config.get("games", [])}
    sections = []
    for game, env in envs.items():
        results = store.results(tournament, game=game, include_errors=True)
        how = scoring or scorings.get(game, "outcome")
        sections.append(_section(game, env, results, participants, stats, bootstrap, seed, how))
    return TournamentReport(
        name=tournament,
        generated=dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        schedule=_describe_schedule(config.get("schedule", {})),
        participants={p["name"]: _describe_participant(p, config) for p in config["participants"]},
        scheduled=scheduled,
        finished=finished,
        errors=errors,
        sections=sections,
    )


def _section(
    game: str,
    env: str,
    all_results: Sequence[GameResult],
    participants: list[str],
    stats: dict[tuple[str, str], SeatStats],
    bootstrap: int,
    seed: int,
    scoring: str = "outcome",
) -> GameSection:
    results = [r for r in all_results if r.ok]
    cooperative = bool(results) and all(r.cooperative for r in results)
    rows = {p: ParticipantRow(participant=p) for p in participants}
    payoffs: dict[str, list[float]] = {p: [] for p in participants}
    for r in results:
        for seat, p in r.seats.items():
            payoffs[p].append(r.returns[seat])
    tallies = tally(results)
    for p, row in rows.items():
        row.wins, row.draws, row.losses = tallies[p].wins, tallies[p].draws, tallies[p].losses
        row.games = len(payoffs[p])
        row.mean_payoff = float(np.mean(payoffs[p])) if payoffs[p] else None
        if (s := stats.get((game, p))) is not None:
            row.llm_turns, row.invalid_rate, row.fallback_rate = s.llm_turns, s.invalid_rate, s.fallback_rate
    if cooperative:
        for rating in cross_play_scores(results, participants, bootstrap=bootstrap, seed=seed):
            rows[rating.participant].cross_play = rating
        order = sorted(participants, key=lambda p: _sort_key(rows[p].cross_play))
    rated, boards, unpaired = results, 0, 0
    if scoring == "duplicate" and not cooperative:
        rated, unpaired = duplicate_boards(results)
        boards = len(rated)
    if not cooperative:
        for rating in bradley_terry(rated, participants, bootstrap=bootstrap, seed=seed):
            rows[rating.participant].bradley_terry = rating
        for rating in openskill_ratings(rated, participants):
            rows[rating.participant].openskill = rating
        order = sorted(participants, key=lambda p: _sort_key(rows[p].bradley_terry))
    h2h, h2h_games = head_to_head(rated, participants)
    xp, xp_games, xp_seats = cross_play(results, participants)
    return GameSection(
        game=game,
        env=env,
        cooperative=cooperative,
        games=len(results),
        errors=len(all_results) - len(results),
        participants=participants,
        rows=[rows[p] for p in order],
        h2h=_nan_to_none(h2h),
        h2h_games=h2h_games.tolist(),
        cross_play=_nan_to_none(xp),
        cross_play_games=xp_games.tolist(),
        cross_play_seats=xp_seats,
        scoring="outcome" if cooperative else scoring,
        boards=boards,
        unpaired=unpaired,
    )


def _sort_key(rating: Rating | None) -> float:
    return -rating.rating if rating is not None and not math.isnan(rating.rating) else math.inf


def _nan_to_none(matrix: np.ndarray) -> list[list[float | None]]:
    return [[None if math.isnan(x) else float(x) for x in row] for row in matrix]


def _describe_schedule(schedule: dict[str, object]) -> str:
    if schedule.get("format") == "swiss":
        return f"Swiss, {schedule.get('rounds')} rounds, {schedule.get('games_per_pairing')} games per pairing"
    swap = "in every seat order" if schedule.get("swap_seats", True) else "in listed seat order only"
    return f"round robin, {schedule.get('games_per_pairing')} games per pairing {swap}"


def _describe_participant(p: dict[str, object], config: dict[str, object]) -> str:
    # Endpoint URLs are left out on purpose: the report carries no links.
    if p.get("kind") == "scripted":
        return f"scripted policy {p.get('policy')}"
    if p.get("kind") == "openai":
        what = f"served model {p.get('model')} (OpenAI-compatible endpoint)"
    else:
        what = f"{p.get('base_model') or config.get('base_model')}" + (
            f" + adapter {p['adapter']}" if p.get("adapter") else ""
        )
    extras = [f"template {p['template']}"] if p.get("template") else []
    extras += [f"temperature {p.get('temperature')}", f"max {p.get('max_new_tokens')} tokens"]
    extras += ["constrained"] if p.get("constrained") else []
    return f"LLM {what}; " + ", ".join(extras)


# ---- plots (PNG bytes) ---------------------------------------------------------------------------------------------
def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    # No "Software" metadata: the PNG stays small and carries no URL.
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _legend_below(ax: Any) -> None:
    # Below the axes, never over the data (bbox_inches="tight" in _png keeps it in the picture).
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=2, fontsize=8, frameon=False)


def plot_ratings(section: GameSection) -> str:
    """Horizontal interval plot: each participant's estimate and 95% interval, best at the top."""
    rows = list(reversed(section.rows))
    fig = Figure(figsize=(6.4, 0.5 * len(rows) + 1.3))
    ax = fig.subplots()
    y = np.arange(len(rows))
    if section.cooperative:
        series = [("cross-play mean payoff", [r.cross_play for r in rows], "tab:green", 0.0)]
        ax.set_xlabel("mean team payoff with other partners (95% bootstrap CI)")
    else:
        series = [
            ("Bradley-Terry (bootstrap 95% CI)", [r.bradley_terry for r in rows], "tab:blue", 0.12),
            ("OpenSkill μ ± 1.96σ", [r.openskill for r in rows], "tab:orange", -0.12),
        ]
        ax.set_xlabel("rating (Elo-like: field mean 1500, +400 = 10:1 odds)")
        ax.axvline(1500, color="0.8", lw=1, zorder=0)
    for label, ratings, color, dy in series:
        pts = [(i, r) for i, r in enumerate(ratings) if r is not None and r.games and not math.isnan(r.rating)]
        if not pts:
            continue
        xs = np.array([r.rating for _, r in pts])
        err = np.array([[r.rating - r.low for _, r in pts], [r.high - r.rating for _, r in pts]])
        ax.errorbar(xs, [i + dy for i, _ in pts], xerr=err, fmt="o", color=color, capsize=4, label=label)
    ax.set_yticks(y, [r.participant for r in rows])
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.grid(axis="x", color="0.92")
    _legend_below(ax)
    ax.set_title(f"{section.game}: ratings", loc="left", fontsize=11)
    return _png(fig)


def _heatmap(
    matrix: list[list[float | None]],
    counts: list[list[int]],
    labels: list[str],
    title: str,
    colorbar: str,
    vmin: float,
    vmax: float,
    fmt: str,
    axis_labels: tuple[str, str],
) -> str:
    n = len(labels)
    data = np.array([[np.nan if v is None else v for v in row] for row in matrix], dtype=float)  # (P, P)
    fig = Figure(figsize=(1.0 * n + 2.6, 0.8 * n + 1.6))
    ax = fig.subplots()
    cmap = matplotlib.colormaps["RdYlGn"].with_extremes(bad="0.93")  # unplayed cells in light grey
    im = ax.imshow(np.ma.masked_invalid(data), cmap=cmap, vmin=vmin, vmax=vmax)
    for i in range(n):
        for j in range(n):
            if counts[i][j]:
                shade = (data[i, j] - vmin) / (vmax - vmin)  # the colormap is dark at both ends: white text there
                color = "white" if shade < 0.2 or shade > 0.8 else "black"
                text = f"{format(data[i, j], fmt)}\nn={counts[i][j]}"
                ax.text(j, i, text, ha="center", va="center", fontsize=8, color=color)
    ax.set_xticks(range(n), labels, rotation=30, ha="right")
    ax.set_yticks(range(n), labels)
    ax.set_ylabel(axis_labels[0])
    ax.set_xlabel(axis_labels[1])
    ax.set_title(title, loc="left", fontsize=11)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label=colorbar)
    return _png(fig)


def plot_head_to_head(section: GameSection) -> str:
    return _heatmap(
        section.h2h,
        section.h2h_games,
        section.participants,
        f"{section.game}: head to head",
        "score of row vs column (win 1, draw ½)",
        0.0,
        1.0,
        ".0%",
        ("row participant", "opponent"),
    )


def plot_cross_play(section: GameSection) -> str:
    values = [v for row in section.cross_play for v in row if v is not None]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    seats = section.cross_play_seats
    return _heatmap(
        section.cross_play,
        section.cross_play_games,
        section.participants,
        f"{section.game}: cross-play (diagonal = self-play)",
        "mean team payoff",
        min(lo, 0.0),
        max(hi, lo + 1e-9),
        ".2f",
        (f"in seat {seats[0]}", f"in seat {seats[1]}") if seats else ("participant", "partner"),
    )


def plot_invalid(section: GameSection) -> str | None:
    """Bars of invalid first answers and fallback moves per LLM participant; None if no LLM played."""
    rows = [r for r in section.rows if r.llm_turns]
    if not rows:
        return None
    fig = Figure(figsize=(6.4, 0.5 * len(rows) + 1.3))
    ax = fig.subplots()
    y = np.arange(len(rows))
    for dy, rates, label in (
        (0.18, [r.invalid_rate for r in rows], "first answer not a legal move"),
        (-0.18, [r.fallback_rate for r in rows], "played by the fallback (re-ask failed too)"),
    ):
        values = [100 * (x or 0.0) for x in rates]
        bars = ax.barh(y + dy, values, 0.36, label=label)
        ax.bar_label(bars, labels=[f"{v:.0f}%" for v in values], padding=3, fontsize=8)
    ax.set_yticks(y, [f"{r.participant} ({r.llm_turns} turns)" for r in rows])
    ax.set_xlim(0, 110)  # room for the labels of full bars
    ax.set_xticks(range(0, 101, 20))
    ax.set_xlabel("% of LLM turns")
    _legend_below(ax)
    ax.set_title(f"{section.game}: invalid actions", loc="left", fontsize=11)
    return _png(fig)


# ---- HTML --------------------------------------------------------------------------------------------------------
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


def _fmt_rating(r: Rating | None, digits: int = 0) -> str:
    if r is None or not r.games or math.isnan(r.rating):
        return "-"
    return f"{r.rating:.{digits}f} [{r.low:.{digits}f}, {r.high:.{digits}f}]"


def _fmt_rate(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def _table_rows(section: GameSection) -> tuple[list[str], list[list[str]]]:
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
            parts.append(f'<p class="note">{e(_duplicate_note(s))}</p>')
        head, cells = _table_rows(s)
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


# ---- Markdown ----------------------------------------------------------------------------------------------------
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
            lines += [_duplicate_note(s), ""]
        head, cells = _table_rows(s)
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


def _duplicate_note(s: GameSection) -> str:
    left = f"; {s.unpaired} games without their seat-swapped twin are left out" if s.unpaired else ""
    return (
        f"Duplicate scoring: ratings and head to head compare {s.boards} boards - the seat-swapped games of a "
        f"pairing, dealt the same cards - by the payoff summed over each board{left}. W/D/L counts single games."
    )


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
