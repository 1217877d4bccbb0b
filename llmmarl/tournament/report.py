"""Tournament reports: one self-contained HTML file and a Markdown summary, both built from the store.

:func:`build_report` computes everything once into a :class:`TournamentReport` (pydantic, so it also dumps to
JSON); :func:`render_html` and :func:`render_markdown` only lay it out. This module gathers the public names of:

* :mod:`llmmarl.tournament.report_data`: the report's models and :func:`build_report` (ratings, matrices, rates);
* :mod:`llmmarl.tournament.report_text`: leaderboard cells and the Markdown summary;
* :mod:`llmmarl.tournament.report_plots`: the plots, as PNG data URIs;
* :mod:`llmmarl.tournament.report_html`: the HTML page (opens offline, can be mailed as one file).
"""

from __future__ import annotations

from llmmarl.tournament.report_data import GameSection, ParticipantRow, TournamentReport, build_report
from llmmarl.tournament.report_html import render_html, write_html
from llmmarl.tournament.report_plots import plot_cross_play, plot_head_to_head, plot_invalid, plot_ratings
from llmmarl.tournament.report_text import render_markdown

__all__ = [
    "GameSection",
    "ParticipantRow",
    "TournamentReport",
    "build_report",
    "plot_cross_play",
    "plot_head_to_head",
    "plot_invalid",
    "plot_ratings",
    "render_html",
    "render_markdown",
    "write_html",
]
