"""``metrics.jsonl``: one :class:`MetricsRow` per line, appended by the training loop, read by plots and reports.

A row is one of four kinds, told apart by which fields are set:

* a **pre-training** (``pretrain``, at step 0; only with ``pretrain:`` in the config): every learner's supervised
  FORECAST pre-training before RL, its held-out loss before and after, examples and seconds;
* an **update** (``learners``, ``time``, ``engine``, and ``rollout_games_retried`` with rollout workers): after
  each update, every learner's monitors (``game/...``, ``samples/...``, ``terms/...``, with ``group_size >= 2``
  ``groups/count`` and ``groups/dead_share`` - the share of groups whose rewards all tie - and the algorithm's own,
  e.g. ``loss``), the seconds it took, and the games replayed after a rollout actor died;
* an **evaluation** (``eval``, ``engine``, and one key per game measure when the run measures some, e.g.
  ``nash_conv``: ``{learner: metrics}``): ``{lineup: {learner: metrics}}``, the run's own evaluation at that step,
  and the engine that played it;
* an **evaluation under other game settings** (``eval_with``): the same games with ``env_overrides`` applied, e.g.
  ``{"talk": false}``; kept apart so that readers never take it for the run's evaluation.

Write rows with :func:`append_metrics` and read them with :func:`read_metrics`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError, model_validator

from llmmarl.jsonl import append_jsonl, iter_jsonl

Metrics = dict[str, int | float]  # monitor name -> value
Evaluation = dict[str, dict[str, Metrics]]  # lineup -> learner -> metrics


class UpdateTimes(BaseModel):
    """Seconds one update took, by part."""

    rollout_s: float = Field(description="Playing the update's games.")
    learner_s: float = Field(description="Every learner's optimisation, summed.")
    sync_s: float = Field(description="Handing the new adapters to the rollout engine(s).")


class EvalWith(BaseModel):
    """An evaluation played under other game settings."""

    env_overrides: dict[str, Any] = Field(description="The game settings changed for it, e.g. {'talk': False}.")
    eval: Evaluation = Field(description="lineup -> learner -> metrics.")


class MetricsRow(BaseModel):
    """One line of ``metrics.jsonl`` (see the module docs for the three kinds). Unset fields are not written."""

    step: int = Field(description="Updates done when the row was written.")
    learners: dict[str, Metrics] | None = Field(None, description="Update: learner -> its monitors.")
    time: UpdateTimes | None = Field(None, description="Update: seconds it took, by part.")
    engine: str | None = Field(
        None, description="Update or evaluation: the engine that played its games (transformers or vllm)."
    )
    rollout_games_retried: int | None = Field(
        None, description="Update with rollout workers: games played again after an actor died, so far."
    )
    eval: Evaluation | None = Field(None, description="Evaluation: lineup -> learner -> metrics.")
    measures: dict[str, dict[str, Metrics]] | None = Field(
        None,
        description="Evaluation: the game's measures (eval_measures), measure -> learner -> metrics. Each is written "
        "as a key of the row named after the measure (e.g. nash_conv), and read back from there.",
    )
    eval_with: EvalWith | None = Field(None, description="Evaluation under other game settings.")
    pretrain: dict[str, Metrics] | None = Field(
        None, description="Pre-training: learner -> its FORECAST pre-training monitors (llmmarl.train.pretrain)."
    )

    @model_validator(mode="before")
    @classmethod
    def _gather_measures(cls, data: Any) -> Any:
        """The keys that are no field are the game measures the row was written with (see :meth:`to_json`)."""
        if not isinstance(data, dict):
            return data
        named = {k: v for k, v in data.items() if k not in cls.model_fields}
        if not named:
            return data
        kept = {k: v for k, v in data.items() if k in cls.model_fields}
        return kept | {"measures": {**(kept.get("measures") or {}), **named}}

    @property
    def is_update(self) -> bool:
        return self.learners is not None

    def to_json(self) -> str:
        row = self.model_dump(exclude_none=True)
        clash = set(row.get("measures", {})) & set(type(self).model_fields)
        if clash:
            raise ValueError(f"game measures named like metrics row fields: {sorted(clash)}")
        row |= row.pop("measures", {})
        # Python-mode dump then json: NaN stays NaN (as json.dumps writes it) rather than becoming null.
        return json.dumps(row, default=float)


def append_metrics(path: str | Path, row: MetricsRow) -> None:
    """Append ``row`` to the ``metrics.jsonl`` at ``path`` (its folder is created; a torn last line left by a killed
    run is ended first, see :mod:`llmmarl.jsonl`)."""
    append_jsonl(path, row.to_json())


def _row(obj: Any) -> MetricsRow:
    try:
        return MetricsRow.model_validate(obj)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise ValueError(f"not a metrics row ({where}: {first['msg']})") from None


def iter_metrics(path: str | Path, torn: list[int] | None = None) -> Iterator[MetricsRow]:
    """The rows of a ``metrics.jsonl``, in order. A line cut short (a killed run) is skipped with a
    :class:`~llmmarl.jsonl.TornLineWarning` and its number appended to ``torn``; a complete line that is not a row is
    a ``ValueError`` naming it."""
    return iter_jsonl(path, _row, torn)


def read_metrics(path: str | Path, torn: list[int] | None = None) -> list[MetricsRow]:
    """Every row of a ``metrics.jsonl`` (see :func:`iter_metrics`)."""
    return list(iter_metrics(path, torn))
