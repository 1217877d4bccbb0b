"""The report's plots, as base64 PNG data URIs: ratings with intervals, head-to-head and cross-play heatmaps,
invalid-action rates.

Drawn with matplotlib's object API (``Figure`` renders through Agg without touching pyplot's global state), so the
HTML report that embeds them needs no files, scripts or links.
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from llmmarl.tournament.report_data import GameSection


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
