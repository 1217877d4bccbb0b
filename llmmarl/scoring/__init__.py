"""Scores of the checkable parts of a turn: FORECAST lines (:mod:`.forecast`), PLAN lines and named-action
messages (:mod:`.plans`). The runner calls :func:`score_turns` on every finished episode."""

from __future__ import annotations

from collections.abc import Mapping

from llmmarl.envs.base import ForecastSpec
from llmmarl.records import EpisodeRecord
from llmmarl.scoring.forecast import score_episode
from llmmarl.scoring.plans import score_messages, score_plans

__all__ = ["score_turns"]


def score_turns(episode: EpisodeRecord, forecasts: Mapping[str, ForecastSpec]) -> None:
    """Score, in place, an episode's forecasts (``forecasts``: each seat's spec), plans and followed messages."""
    if episode.error:
        return
    score_episode(episode, forecasts)
    score_plans(episode)
    score_messages(episode)
