"""Turn ablations: arms that differ only in which lines of the turn are asked for and which reward terms are on.

An :class:`AblationConfig` is one shared training run (``train``: a :class:`~llmmarl.train.config.TrainConfig`
mapping: game, model, opponents, budget, evaluation) plus named :class:`Arm` s and the seeds every arm is trained
with. :meth:`AblationConfig.run_config` builds the exact config of one arm and seed; nothing else differs between
arms. The statistics are over seeds (one number per seed: its final evaluation), so the interval says how much a
rerun with another seed would move the mean, not how noisy the evaluation games were.

``scripts/ablate_turn.py`` runs the arms and writes the report.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy import stats

from llmmarl.agents.specs import TurnLine
from llmmarl.config_overrides import apply_overrides
from llmmarl.train.config import TrainConfig
from llmmarl.train.settings import RewardWeights


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Arm(_Strict):
    """One arm: the lines its agents are asked for and the reward terms switched on."""

    lines: list[TurnLine] = Field(description="Turn lines asked for besides ACTION; [] = reactive (ACTION only).")
    plan_actions: bool = Field(False, description="PLAN as the agent's own next action labels (checked, scored).")
    rewards: dict[str, float] = Field(
        default_factory=dict,
        description="Reward weights set on top of the shared ones, e.g. {prediction: 0.1}; a term on a line the arm "
        "does not ask for is an error (it would always be 0).",
    )
    pretrain: dict[str, Any] | None = Field(
        None,
        description="FORECAST pre-training of this arm's learners before RL (TrainConfig.pretrain), e.g. {games: "
        "32}: the optional transition pre-training. Needs FORECAST in lines. None = train.pretrain, if any.",
    )


class AblationConfig(_Strict):
    """Arms x seeds of one shared training run. Loaded from YAML; ``--set KEY=VALUE`` overrides apply first."""

    name: str = Field(description="Short name of the study; reports go to reports/ablate_<name>/.")
    train: dict[str, Any] = Field(
        description="The TrainConfig shared by every arm (game, model, opponents, budget, evaluation). Its lines, "
        "plan_actions, seed and output_dir are set per arm and seed."
    )
    arms: dict[str, Arm] = Field(min_length=1, description="Arm name -> what it asks for and rewards.")
    seeds: list[int] = Field(
        default_factory=lambda: [0, 1, 2],
        min_length=1,
        description="Seeds every arm is trained with (at least 3 for an interval worth reading).",
    )
    output_dir: str = Field("runs/ablate", description="Runs go to <output_dir>/<name>/<arm>/seed_<seed>/.")
    report_dir: str | None = Field(None, description="Default: reports/ablate_<name>.")
    baseline: str = Field("reactive", description="The arm every other arm is compared with.")

    @model_validator(mode="after")
    def _check(self) -> AblationConfig:
        if self.baseline not in self.arms:
            raise ValueError(f"baseline {self.baseline!r} is not an arm; arms: {', '.join(self.arms)}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct, got {self.seeds}")
        for key in ("lines", "plan_actions", "seed", "output_dir"):
            if key in self.train:
                raise ValueError(f"train.{key} is set per arm and seed: remove it from train")
        for name in self.arms:
            self.run_config(name, self.seeds[0])  # every arm must make a valid TrainConfig now, not hours later
        return self

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Sequence[str] = ()) -> AblationConfig:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        return cls.model_validate(apply_overrides(data, overrides))

    @property
    def reports(self) -> Path:
        return Path(self.report_dir or f"reports/ablate_{self.name}")

    def run_dir(self, arm: str, seed: int) -> Path:
        return Path(self.output_dir) / self.name / arm / f"seed_{seed}"

    def run_config(self, arm: str, seed: int) -> TrainConfig:
        """The training config of one arm and seed: the shared one with the arm's lines and rewards."""
        a = self.arms[arm]
        shared = RewardWeights.model_validate(self.train.get("rewards", {})).as_dict()
        unknown = set(a.rewards) - set(shared)
        if unknown:
            raise ValueError(f"arm {arm}: unknown reward terms {sorted(unknown)}; terms: {', '.join(shared)}")
        data = {
            **self.train,
            "lines": a.lines,
            "plan_actions": a.plan_actions,
            "rewards": shared | a.rewards,
            **({"pretrain": a.pretrain} if a.pretrain is not None else {}),
            "seed": seed,
            "output_dir": str(self.run_dir(arm, seed)),
        }
        try:
            return TrainConfig.model_validate(data)
        except ValueError as e:
            raise ValueError(f"arm {arm}: {e}") from None


# ---- statistics over seeds -----------------------------------------------------------------------------------------
def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student-t interval of the mean of ``values`` (one per seed): ``(mean, lo, hi)``; a single value has
    an unbounded interval (nan), not a zero-width one."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan, math.nan
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def pooled_sd(groups: Sequence[Sequence[float]]) -> tuple[float, int]:
    """Between-seed standard deviation pooled over arms, and its degrees of freedom (sum of n - 1)."""
    ss = sum(sum((v - sum(g) / len(g)) ** 2 for v in g) for g in groups if len(g) > 1)
    df = sum(len(g) - 1 for g in groups if len(g) > 1)
    return (math.sqrt(ss / df) if df else math.nan), df


def minimum_detectable_effect(sd: float, n_per_arm: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest difference of two arms' means (``n_per_arm`` seeds each) that a two-sided two-sample t-test at
    ``alpha`` detects with ``power``: ``(t_{1-alpha/2} + t_{power}) * sd * sqrt(2 / n)``, df = 2n - 2 (the usual
    normal-approximation formula with t quantiles; Cohen 1988, ch. 2)."""
    if n_per_arm < 2 or not math.isfinite(sd):
        return math.nan
    df = 2 * n_per_arm - 2
    return float(stats.t.ppf(1 - alpha / 2, df) + stats.t.ppf(power, df)) * sd * math.sqrt(2 / n_per_arm)


def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided Welch t-test p-value of two arms' per-seed values (nan with fewer than 2 each)."""
    if len(a) < 2 or len(b) < 2:
        return math.nan
    if max(a) == min(a) and max(b) == min(b):  # no spread at all: equal means are p = 1, unequal p = 0
        return 1.0 if a[0] == b[0] else 0.0
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)
