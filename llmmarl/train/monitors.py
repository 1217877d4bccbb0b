"""What a run shows of itself: per-learner monitors of an update's samples and games, and the one-line summaries
the progress bar, the evaluation log and the scripts print.

These are derived numbers and text; the file they are written to is :mod:`llmmarl.train.metrics`'s.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from llmmarl.records import AgentSummary
from llmmarl.train.samples import TERMS, TurnSample


def summary_metrics(s: AgentSummary) -> dict[str, float]:
    """An agent's metrics over a set of games (an evaluation lineup, or an update's training games)."""
    m = {
        "return": s.mean_return,
        "ci95": s.ci95,
        "win_rate": s.wins / s.games if s.games else 0.0,
        "draw_rate": s.draws / s.games if s.games else 0.0,
        "invalid_rate": s.invalid_rate,
        "fallback_rate": s.fallback_rate,
        "games": float(s.games),
        "messages_per_game": s.messages_sent / s.games if s.games else 0.0,
    }
    if s.decisions:
        m["tokens_per_turn"] = s.tokens_generated / s.decisions  # decoding cost: every attempt's answer tokens
    for key in ("prediction_accuracy", "forecast_skill", "plan_following", "message_following"):
        if (value := getattr(s, key)) is not None:
            m[key] = value
    return m


def format_metrics(label: str, m: Mapping[str, float]) -> str:
    """One evaluation line - return with its 95% interval, win, draw and invalid rates - as the scripts print it."""
    lo, hi = m["return"] - m["ci95"], m["return"] + m["ci95"]
    line = (
        f"{label}: return {m['return']:+.3f} (95% CI {lo:+.3f}..{hi:+.3f}), win {m['win_rate']:.0%}, "
        f"draw {m['draw_rate']:.0%}, invalid {m['invalid_rate']:.1%} over {int(m['games'])} games"
    )
    if "prediction_accuracy" in m:
        line += f", prediction accuracy {m['prediction_accuracy']:.0%}"
    return line


def separated(better: Mapping[str, float], worse: Mapping[str, float]) -> bool:
    """Whether ``better``'s mean return beats ``worse``'s with non-overlapping 95% intervals."""
    return better["return"] - better["ci95"] > worse["return"] + worse["ci95"]


def sample_metrics(samples: Sequence[TurnSample]) -> dict[str, float]:
    """Reward, usability and answer length of one learner's samples of an update."""
    if not samples:
        return {"samples/count": 0.0}
    n = len(samples)
    mean = sum(s.reward for s in samples) / n
    m = {
        "samples/count": float(n),
        "samples/reward_mean": mean,
        "samples/reward_var": sum((s.reward - mean) ** 2 for s in samples) / n,
        "samples/usable_rate": sum(s.usable for s in samples) / n,
        "samples/completion_tokens": sum(len(s.completion_ids) for s in samples) / n,
        # Answer length can collapse (or run to the cap) under RL in free-text games: watch both ends.
        "samples/completion_tokens_min": float(min(len(s.completion_ids) for s in samples)),
        "samples/completion_tokens_max": float(max(len(s.completion_ids) for s in samples)),
        "samples/cut_rate": sum(s.cut for s in samples) / n,
    }
    for t in TERMS:
        m[f"terms/{t}"] = sum(s.terms[t] for s in samples) / n
    return m


# Rewards are weighted sums of a few terms, so two equal outcomes can differ by rounding (~1e-15 of their size). A
# spread at or below this, relative to the rewards' size, counts as none: GRPO divides by (std + 1e-4), so it would
# move an advantage by at most ~1e-5 of a standard deviation, while any real difference of outcome is far larger.
DEAD_GROUP_TOLERANCE = 1e-9


def is_dead(rewards: Sequence[float], tol: float = DEAD_GROUP_TOLERANCE) -> bool:
    """Whether ``rewards`` all equal each other (up to ``tol`` relative to their size, at least absolute ``tol``): a
    group-relative advantage is then zero for every member, and the group gives no gradient."""
    if not rewards:
        raise ValueError("a group has at least one reward")
    return max(rewards) - min(rewards) <= tol * max(1.0, max(abs(r) for r in rewards))


def group_metrics(samples: Sequence[TurnSample]) -> dict[str, float]:
    """How many of one learner's groups carry signal. A group is the learner's answers in one seat of one group of
    games (the set ``credit: group`` and RLOO compare); a dead one has zero reward spread (see :func:`is_dead`).
    Only meaningful with ``group_size >= 2``: a group of one game compares a seat's turns of that game only."""
    groups: dict[tuple[int, str], list[float]] = defaultdict(list)
    for s in samples:
        groups[(s.group, s.seat)].append(s.reward)
    if not groups:
        return {"groups/count": 0.0}
    dead = sum(is_dead(rewards) for rewards in groups.values())
    return {"groups/count": float(len(groups)), "groups/dead_share": dead / len(groups)}


def monitor_line(logs: dict[str, dict[str, Any]]) -> str:
    """The progress bar's postfix after an update: each learner's return, win rate and what its algorithm logs."""
    parts = []
    for name, m in logs.items():
        ret, win, inv = m.get("game/return", math.nan), m.get("game/win_rate", math.nan), m.get("game/invalid_rate")
        line = f"{name}: R {ret:+.2f} win {win:.0%}"
        if inv is not None:
            line += f" inv {inv:.0%}"
        if "entropy" in m:
            line += f" H {m['entropy']:.2f}"
        if "ppo/explained_variance" in m:
            line += f" EV {m['ppo/explained_variance']:+.2f}"
        if "groups/dead_share" in m:  # groups whose rewards all tie: no group-relative gradient from them
            line += f" dead {m['groups/dead_share']:.0%}"
        parts.append(line)
    return " | ".join(parts)


def eval_line(results: dict[str, dict[str, dict[str, float]]]) -> str:
    """One evaluation (``{lineup: {learner: metrics}}``) on one line, as the run logs it."""
    return "; ".join(
        f"{lineup} [{name}] R {m['return']:+.2f}±{m['ci95']:.2f} win {m['win_rate']:.0%} inv {m['invalid_rate']:.0%}"
        for lineup, r in results.items()
        for name, m in r.items()
    )
