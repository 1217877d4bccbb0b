"""RLOO (``algorithm: rloo``): the leave-one-out advantages, and one update on the tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import turn_sample

from llmmarl.train import TrainConfig, algorithms, trainer_class
from llmmarl.train.samples import TERMS, TurnSample


def _sample(group: int, seat: str, reward: float, learner: str = "a") -> TurnSample:
    return turn_sample(learner, group, seat, reward, terms=dict.fromkeys(TERMS, 0.0))


def test_advantages_are_reward_minus_the_mean_of_the_others() -> None:
    from llmmarl.train.advantages import leave_one_out

    group = [_sample(0, "x", r) for r in (1.0, 0.0, -1.0, 2.0)]
    other_seat = [_sample(0, "o", r) for r in (3.0, 5.0)]
    other_group = [_sample(1, "x", 7.0)]
    leave_one_out(group + other_seat + other_group)
    rewards = [s.reward for s in group]
    expected = [r - (sum(rewards) - r) / 3 for r in rewards]  # 1 - 1/3, 0 - 2/3, -1 - 1, 2 - 0
    assert [s.advantage for s in group] == pytest.approx(expected)
    assert [s.advantage for s in group] == pytest.approx([2 / 3, -2 / 3, -2.0, 2.0])
    assert [s.advantage for s in other_seat] == pytest.approx([-2.0, 2.0])  # its own seat's set, not x's
    assert other_group[0].advantage == 0.0  # alone in its set: no baseline, no gradient


def _cfg(tmp_path: Path, **kw: object) -> TrainConfig:
    base: dict[str, object] = {
        "env": "tictactoe_v3",
        "model": "tiny",
        "algorithm": "rloo",
        "learners": [{"name": "ann", "lora": {"r": 4}}],
        "setting": "fixed_opponents",
        "opponents": ["random"],
        "games_per_update": 8,
        "group_size": 4,
        "steps": 1,
        "constrained": True,  # legal answers, so the games (and the rewards within a group) differ
        "max_new_tokens": 40,
        "learning_rate": 1e-2,
        "micro_batch_size": 8,
        "eval_games": 0,
        "output_dir": str(tmp_path / "run"),
        "threads": 1,
    }
    return TrainConfig.model_validate({**base, **kw})


def test_one_update_changes_only_the_learners_adapter(tmp_path: Path) -> None:
    assert "rloo" in algorithms()
    cfg = _cfg(tmp_path)
    assert cfg.algorithm_settings() is None and not {"grpo", "ppo"} & set(cfg.model_dump())
    trainer = trainer_class("rloo")(cfg, progress=False)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" in n}
    logs = trainer.update()
    after = dict(trainer.model.named_parameters())
    changed = [n for n in before if not torch.equal(before[n], after[n])]
    m = logs["ann"]
    assert m["samples/count"] > 0 and m["samples/reward_var"] > 0 and m["rloo/advantage_abs"] > 0
    assert changed and all(".ann." in n for n in changed)
    assert any("lora_B" in n for n in changed)  # B starts at zero: a step moved it
    assert trainer.state.step == 1 and trainer.optims["ann"].state.global_step == 1
    assert m["loss"] != 0.0 and m["grad_norm"] > 0


def test_rloo_needs_groups(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="group_size >= 2"):
        trainer_class("rloo")(_cfg(tmp_path, group_size=1, games_per_update=2), progress=False)
    with pytest.raises(ValueError, match="remove the grpo: block"):
        _cfg(tmp_path, grpo={"credit": "group"})
