"""The rollout-engine interface: one factory builds backends; a trainer works with a colocated or a separate engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from llmmarl.backends.base import BackendError, GenerationRequest, RolloutEngine
from llmmarl.backends.factory import BackendSpec, build_backend, build_rollout_engine, register_backend
from llmmarl.train.config import TrainConfig

CHAT = [{"role": "user", "content": "Pick a number from 1 to 9."}]


def test_the_factory_builds_engines_and_names_what_it_cannot(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = build_rollout_engine(BackendSpec(model="tiny", dtype="float32"))
    assert isinstance(engine, RolloutEngine) and engine.learner_model() is not None
    with pytest.raises(BackendError, match="unknown backend kind 'nope'"):
        build_backend(BackendSpec(kind="nope"))
    from conftest import CannedBackend

    register_backend("canned", lambda spec: CannedBackend(lambda r: "ACTION: 1"))
    with pytest.raises(BackendError, match="cannot play a trainer's games"):
        build_rollout_engine(BackendSpec(kind="canned"))


def _logprobs(model: Any, adapter: str, prompt: list[int], answer: list[int]) -> torch.Tensor:
    """Log-probs of ``answer`` after ``prompt`` under ``model``'s ``adapter`` (one plain forward pass)."""
    model.set_adapter(adapter)
    device = next(model.parameters()).device
    ids = torch.tensor([prompt + answer], device=device)
    with torch.no_grad():
        logits = model(ids).logits
    lp = torch.log_softmax(logits[0, len(prompt) - 1 : -1].float(), -1)
    return lp.gather(1, torch.tensor(answer, device=device)[:, None]).squeeze(1).cpu()


def test_a_separate_engine_serves_each_new_version(tmp_path: Path) -> None:
    """With ``colocate=False`` the learner is a model of its own and the engine gets its adapters through folders,
    as a vLLM server would: after a refresh the engine's log-probs are the learner's, before it they were not."""
    from llmmarl.train.adapters import attach_adapters, load_base_model

    engine = build_rollout_engine(BackendSpec(model="tiny", dtype="float32", colocate=False, seed=0))
    assert engine.learner_model() is None
    cfg = TrainConfig.model_validate(
        {"env": "tictactoe_v3", "model": "tiny", "learners": [{"name": "ann"}], "eval_games": 0}
    )
    learner = attach_adapters(load_base_model("tiny", engine.device), cfg)
    engine.refresh_adapters(learner, ["ann"], version=0)
    assert engine.adapters == ["ann"]

    request = GenerationRequest(messages=CHAT, adapter="ann", temperature=1.0, max_new_tokens=10)
    with torch.no_grad():  # an update, big enough to move every log-prob: perturb the LoRA B weights
        for name, p in learner.named_parameters():
            if "lora_B.ann." in name:
                p.add_(torch.randn_like(p) * 0.5)
    (stale,) = engine.generate([request])
    new = _logprobs(learner, "ann", stale.prompt_ids, stale.completion_ids)
    gap_stale = (new - torch.tensor(stale.logprobs)).abs().max()

    engine.refresh_adapters(learner, ["ann"], version=1)
    (fresh,) = engine.generate([request])
    new = _logprobs(learner, "ann", fresh.prompt_ids, fresh.completion_ids)
    gap_fresh = (new - torch.tensor(fresh.logprobs)).abs().max()
    assert gap_fresh < 1e-4  # float32, one process: the engine's log-probs are the learner's
    assert gap_stale > 100 * 1e-4  # ...and the stale version's are far off: the check can fail
    assert engine.state_dict() == {"calls": 2}


def test_grpo_trains_with_a_separate_engine(tmp_path: Path) -> None:
    """The trainer needs no change for an engine that does not share its model."""
    from llmmarl.train.grpo import MultiAgentGRPO

    cfg = TrainConfig.model_validate(
        {
            "env": "tictactoe_v3",
            "model": "tiny",
            "learners": [{"name": "ann", "lora": {"r": 4}}],
            "setting": "fixed_opponents",
            "opponents": ["random"],
            "games_per_update": 2,
            "group_size": 2,
            "steps": 1,
            "max_new_tokens": 16,
            "reask": False,
            "learning_rate": 1e-2,
            "eval_games": 0,
            "output_dir": str(tmp_path / "run"),
        }
    )
    engine = build_rollout_engine(BackendSpec(model="tiny", colocate=False, seed=0))
    trainer = MultiAgentGRPO(cfg, backend=engine, progress=False)
    assert trainer.model is not engine.learner_model() and engine.adapters == ["ann"]
    trainer.update()
    assert engine.state_dict()["calls"] > 0 and trainer.state.step == 1  # the engine played the rollout...
    sync = engine._sync_dir  # ...and was handed the updated adapter as a new version
    assert sync is not None and [p.name for p in sync.iterdir()] == ["ann-v1"]
