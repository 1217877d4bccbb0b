"""Tournaments: schedules, a resumable store, ratings with uncertainty, and a self-contained report.

One room per job, data flowing one way::

    config.py   TournamentConfig (YAML): games, participants, schedule format, seed, store path
    schedule.py deterministic round-robin / Swiss / cross-play schedules -> ScheduledGame (unique key + seed)
    store.py    SQLite (WAL): scheduled games and results, each game recorded once; resume = play what is missing
    results.py  GameResult (what ratings and reports read) and pairwise/cross-play aggregations
    ratings.py  OpenSkill (online, teams, draws) and Bradley-Terry with bootstrap CIs, on an Elo-like scale
    routing.py  one backend for the runner: registered backend kinds (adapters by name) and OpenAI endpoints, routed
    run.py      plays each round's missing games through Runner.play, recording each game as it ends
    report.py   offline HTML (inline PNG plots) and a Markdown summary

Tournaments read :class:`~llmmarl.records.EpisodeRecord` s from the runner and never reach into training.
"""

from llmmarl.tournament.config import TournamentConfig
from llmmarl.tournament.run import run_tournament

__all__ = ["TournamentConfig", "run_tournament"]
