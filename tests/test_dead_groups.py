"""Dead groups: the share of a learner's groups whose rewards all tie (no group-relative gradient), per update."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import pytest
from conftest import turn_sample

from llmmarl.train import TrainConfig, trainer_class
from llmmarl.train.advantages import group_relative
from llmmarl.train.monitors import DEAD_GROUP_TOLERANCE, group_metrics, is_dead, monitor_line
from llmmarl.train.samples import TERMS, TurnSample


def _sample(group: int, seat: str, reward: float) -> TurnSample:
    return turn_sample("a", group, seat, reward, terms=dict.fromkeys(TERMS, 0.0))


def test_a_group_is_dead_when_its_rewards_tie() -> None:
    assert is_dead([1.0, 1.0, 1.0]) and is_dead([0.0]) and is_dead([-0.5, -0.5])
    assert not is_dead([1.0, 0.0, 1.0]) and not is_dead([0.0, 0.25])
    # Equal outcomes summed in another order differ in the last bits: still a tie.
    assert 0.1 + 0.2 != 0.3 and is_dead([0.1 + 0.2, 0.3])
    assert is_dead([1e6, 1e6 * (1 + 1e-12)])  # relative to the rewards' size
    # A real difference, however small next to the rewards, is not.
    assert not is_dead([0.0, 1e-6]) and not is_dead([1.0, 1.0 + 10 * DEAD_GROUP_TOLERANCE])
    with pytest.raises(ValueError, match="at least one reward"):
        is_dead([])


def test_a_tie_within_the_tolerance_gives_no_group_advantage() -> None:
    """The tolerance is where GRPO's advantages vanish too: a tie is a group that moves nothing."""
    tied = [_sample(0, "x", r) for r in (0.3, 0.1 + 0.2, 0.3, 0.2 + 0.1)]
    group_relative(tied, credit="group")
    assert is_dead([s.reward for s in tied]) and max(abs(s.advantage) for s in tied) < 1e-9


def test_share_of_dead_groups_per_group_and_seat() -> None:
    samples = [
        *(_sample(0, "x", r) for r in (1.0, 1.0, 1.0)),  # dead
        *(_sample(0, "o", r) for r in (1.0, -1.0)),  # same games, other seat: its own group, alive
        *(_sample(1, "x", r) for r in (0.0, 0.0 + 1e-15)),  # dead: rounding only
        *(_sample(2, "x", r) for r in (0.0, 0.5, 0.0)),  # alive
    ]
    m = group_metrics(samples)
    assert m == {"groups/count": 4.0, "groups/dead_share": 0.5}
    assert group_metrics([]) == {"groups/count": 0.0}
    assert "dead 50%" in monitor_line({"ann": {"game/return": 0.0, "game/win_rate": 0.0, **m}})
    assert "dead" not in monitor_line({"ann": {"game/return": 0.0, "game/win_rate": 0.0}})


def test_an_update_logs_the_share_its_samples_have(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cls = trainer_class("rloo")
    seen: dict[str, list[TurnSample]] = {}
    real_learn = cls.learn

    def learn(self: object, learner: str, samples: list[TurnSample]) -> dict[str, float]:
        seen[learner] = list(samples)
        return real_learn(self, learner, samples)  # type: ignore[arg-type]

    monkeypatch.setattr(cls, "learn", learn)
    cfg = TrainConfig.model_validate(
        {
            # One word of three pays: a group of four games ties when none or all of them found it, so a random
            # network's updates have both dead and live groups.
            "env": "probe_bandit",
            "env_kwargs": {"arms": 3, "seed": 0},
            "model": "tiny",
            "algorithm": "rloo",
            "learners": [{"name": "ann", "lora": {"r": 4}}],
            "setting": "self_play",
            "lines": [],
            "games_per_update": 16,
            "group_size": 4,
            "steps": 3,
            "constrained": True,
            "max_new_tokens": 16,
            "micro_batch_size": 16,
            "eval_games": 0,
            "save_every": 10,
            "output_dir": str(tmp_path / "run"),
            "threads": 1,
        }
    )
    trainer = cls(cfg, progress=False)
    shares = []
    for _ in range(cfg.steps):
        seen.clear()
        logs = trainer.update()
        groups: dict[tuple[int, str], set[float]] = defaultdict(set)
        for s in seen["ann"]:
            groups[(s.group, s.seat)].add(s.reward)
        # The bandit's rewards are exact values (0 or 1 plus the format term): dead iff one distinct reward.
        expected = sum(len(r) == 1 for r in groups.values()) / len(groups)
        m = logs["ann"]
        assert m["groups/count"] == len(groups) == cfg.games_per_update // cfg.group_size  # one seat: one per group
        assert m["groups/dead_share"] == pytest.approx(expected)
        shares.append(expected)
    assert any(0.0 < x < 1.0 for x in shares)  # both kinds of group were seen and told apart
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    logged = [r["learners"]["ann"]["groups/dead_share"] for r in rows]
    assert all(0.0 <= x <= 1.0 and not math.isnan(x) for x in logged) and logged == pytest.approx(shares)


def test_no_share_without_groups(tmp_path: Path) -> None:
    cfg = TrainConfig.model_validate(
        {
            "env": "tictactoe_v3",
            "model": "tiny",
            "learners": [{"name": "ann", "lora": {"r": 4}}],
            "setting": "fixed_opponents",
            "opponents": ["random"],
            "games_per_update": 2,
            "group_size": 1,
            "grpo": {"credit": "role"},
            "steps": 1,
            "constrained": True,
            "max_new_tokens": 40,
            "eval_games": 0,
            "output_dir": str(tmp_path / "run"),
            "threads": 1,
        }
    )
    logs = trainer_class("grpo")(cfg, progress=False).update()
    # One game per group compares a seat's turns of that game only: not what the share means, so not logged.
    assert "samples/count" in logs["ann"] and not any(k.startswith("groups/") for k in logs["ann"])
