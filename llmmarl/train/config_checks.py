"""The cross-checks of a :class:`~llmmarl.train.config.TrainConfig` that need several of its fields, or the game
itself; each error says what to change. The config runs them when it is built (and ``check_env`` with the game)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmmarl.envs.base import TextEnv
from llmmarl.envs.measures import UnknownMeasureError
from llmmarl.envs.registry import game_measure

if TYPE_CHECKING:
    from llmmarl.train.config import TrainConfig


def check_batches(cfg: TrainConfig) -> None:
    """Learner names are unique, and an update's games fill whole groups."""
    names = [lr.name for lr in cfg.learners]
    if len(set(names)) != len(names):
        raise ValueError(f"learner names must be unique, got {names}")
    if cfg.games_per_update % cfg.group_size:
        lower = cfg.games_per_update // cfg.group_size * cfg.group_size or cfg.group_size
        raise ValueError(
            f"games_per_update ({cfg.games_per_update}) must be a multiple of group_size ({cfg.group_size}), "
            f"e.g. {lower} or {lower + cfg.group_size}"
        )


def check_lines(cfg: TrainConfig) -> None:
    """Every reward term and the pre-training have the answer line they read."""
    # A reward term on a line nobody is asked for is always 0: a silent no-op, so an error.
    needs = {"prediction": "PREDICT", "forecast": "FORECAST", "plan": "PLAN", "message": "MESSAGE"}
    for term, line in needs.items():
        if getattr(cfg.rewards, term) and line not in cfg.lines:
            raise ValueError(f"rewards.{term} is set but lines has no {line}: add {line} to lines or set it to 0")
    if cfg.pretrain is not None and cfg.pretrain.enabled and "FORECAST" not in cfg.lines:
        raise ValueError(
            "pretrain teaches the FORECAST line, but lines has no FORECAST: add it to lines (e.g. --set "
            "lines=[PLAN,PREDICT,FORECAST,MESSAGE]) or remove the pretrain block"
        )
    if cfg.rewards.plan and not cfg.plan_actions:
        raise ValueError("rewards.plan scores plans given as action labels: set plan_actions: true")


def check_exploration(cfg: TrainConfig) -> None:
    """Label exploration runs on ACTION-only grammar turns, with the in-process model."""
    if cfg.exploration is None:
        return
    if not (cfg.constrained or cfg.canonical) or cfg.lines:
        raise ValueError(
            "exploration draws labels for ACTION-only turns under the grammar: set constrained: true (or "
            "canonical: true) and lines: []"
        )
    if cfg.rollout_backend != "transformers" or cfg.rollout_workers:
        raise ValueError(
            "exploration scores the answers it plays with the trainer's in-process model: use rollout_backend: "
            "transformers and rollout_workers: 0"
        )


def check_lineup(cfg: TrainConfig) -> None:
    """The setting has the learners and opponents it needs, and an evaluation has someone to be measured against."""
    n_learners, n_opponents = len(cfg.learners), len(cfg.opponents)
    if cfg.setting == "self_play" and (n_learners != 1 or n_opponents):
        raise ValueError(
            "setting: self_play trains one learner in every seat: give exactly one learner and no opponents "
            "(use fixed_opponents to play against opponents, independent for several learners)"
        )
    if cfg.setting == "fixed_opponents" and not n_opponents:
        raise ValueError("setting: fixed_opponents needs opponents, e.g. opponents: [random]")
    if cfg.setting in ("independent", "team") and n_learners < 2:
        raise ValueError(
            f"setting: {cfg.setting} is for several learners in one game; with one learner use self_play "
            "or fixed_opponents"
        )
    if (
        cfg.eval_games
        and not cfg.eval_opponents
        and (cfg.setting == "self_play" or (cfg.setting == "league" and not cfg.opponents))
    ):
        raise ValueError(
            f"setting: {cfg.setting} has no fixed opponent to be measured against: set eval_opponents "
            "(e.g. [random, llm]) or eval_games: 0"
        )


def check_against_game(cfg: TrainConfig, env: TextEnv) -> None:
    """Cross-checks against the game itself: seat names and whether the lineup fills every seat."""
    seats = env.possible_agents
    for lr in cfg.learners:
        unknown = [s for s in lr.seats if s not in seats]
        if unknown:
            raise ValueError(f"learner {lr.name}: seats {unknown} are not seats of {env.name}; its seats: {seats}")
    if cfg.setting in ("independent", "team"):
        if len(cfg.learners) > len(seats):
            raise ValueError(f"{len(cfg.learners)} learners but {env.name} has only {len(seats)} seats")
        if len(cfg.learners) < len(seats) and not cfg.opponents:
            raise ValueError(
                f"{env.name} has {len(seats)} seats and {len(cfg.learners)} learners: add opponents for the "
                "remaining seats"
            )
    if cfg.setting == "team":
        teams = {env.teams[s] for lr in cfg.learners for s in lr.seats}
        if len(teams) > 1:
            raise ValueError(f"setting: team, but the learners' pinned seats are on different teams: {teams}")
        if not any(len(env.teammates(s)) >= 1 for s in seats):
            raise ValueError(f"setting: team needs a game with teams; {env.name} has none (use independent)")
    for measure in cfg.eval_measures:
        try:
            game_measure(cfg.env, measure)
        except UnknownMeasureError as e:
            raise ValueError(f"eval_measures: {e}") from None
    if cfg.rewards.message and env.message_rules.mode == "off":
        raise ValueError(f"rewards.message is set but {env.name} does not allow messages: set it to 0")


def legacy_measures(data: dict[str, Any]) -> dict[str, Any]:
    """``eval_nash_conv: N``, the key before games declared their measures, as ``eval_measures``."""
    if "eval_nash_conv" not in data:
        return data
    data = dict(data)
    n = data.pop("eval_nash_conv")
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"eval_nash_conv must be a whole number >= 0 (answers per state; 0: off), got {n!r}")
    measures = [m for m in data.get("eval_measures") or [] if m != "nash_conv"]
    if n:
        measures.append("nash_conv")
        data["eval_measure_samples"] = n
    data["eval_measures"] = measures
    return data
