"""metrics.jsonl rows: written and read through one typed model, byte for byte what the loop wrote before."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from llmmarl.train.metrics import EvalWith, MetricsRow, UpdateTimes, append_metrics, read_metrics

REPORTS = sorted((Path(__file__).parent.parent / "reports").glob("*metrics.jsonl"))


@pytest.mark.parametrize("path", REPORTS, ids=lambda p: p.name)
def test_published_runs_read_and_write_back_unchanged(path: Path) -> None:
    lines = path.read_text().splitlines()
    rows = read_metrics(path)
    assert [row.to_json() for row in rows] == lines
    assert any(row.is_update for row in rows)


def test_the_three_kinds_of_row_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "run" / "metrics.jsonl"
    update = MetricsRow(
        step=1,
        learners={"a": {"game/return": 0.5, "epoch": 0, "loss": math.nan}},
        time=UpdateTimes(rollout_s=1.0, learner_s=2.0, sync_s=0.1),
        engine="transformers",
        rollout_games_retried=2,
    )
    evaluation = MetricsRow(
        step=1, eval={"vs random": {"a": {"return": 0.25}}}, measures={"nash_conv": {"a": {"nash_conv": 0.1}}}
    )
    other = MetricsRow(step=1, eval_with=EvalWith(env_overrides={"talk": False}, eval={"self": {"a": {"win": 1.0}}}))
    for row in (update, evaluation, other):
        append_metrics(out, row)
    lines = out.read_text().splitlines()
    assert lines[0].startswith('{"step": 1, "learners": {"a": {"game/return": 0.5, "epoch": 0, "loss": NaN}}, "time"')
    assert (
        lines[2]
        == '{"step": 1, "eval_with": {"env_overrides": {"talk": false}, "eval": {"self": {"a": {"win": 1.0}}}}}'
    )
    back = read_metrics(out)
    assert back[0].learners is not None and math.isnan(back[0].learners["a"]["loss"])
    assert back[0].learners["a"]["epoch"] == 0 and isinstance(back[0].learners["a"]["epoch"], int)
    assert lines[0].endswith('"engine": "transformers", "rollout_games_retried": 2}')
    assert [r.is_update for r in back] == [True, False, False] and back[1].eval == evaluation.eval
    # A game measure is written under its own name, as runs wrote NashConv before games declared measures.
    assert lines[1].endswith('"nash_conv": {"a": {"nash_conv": 0.1}}}') and '"measures"' not in lines[1]
    assert back[1].measures == {"nash_conv": {"a": {"nash_conv": 0.1}}}


def test_a_line_that_is_not_a_row_is_named(tmp_path: Path) -> None:
    out = tmp_path / "metrics.jsonl"
    out.write_text('{"step": 1, "eval": {}}\n{"step": "two"}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2: not a metrics row \(step"):
        read_metrics(out)
