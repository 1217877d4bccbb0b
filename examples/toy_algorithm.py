"""A new algorithm in one file: plain REINFORCE, registered as ``algorithm: toy_reinforce``.

The shared loop (:class:`~llmmarl.train.loop.MultiAgentTrainer`) owns the update (rollout, samples, metrics,
engine sync), evaluation, checkpoints and export; an algorithm says how one learner steps on its samples of an
update (``learn``), and which optimizers a checkpoint saves. Each answer's log-probability is pushed up in
proportion to its game's return (no baseline, no clipping).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from llmmarl.train import register_algorithm
from llmmarl.train.checkpoint import AdamWHolder
from llmmarl.train.loop import MultiAgentTrainer
from llmmarl.train.rollout import TurnSample


class ToyReinforce(MultiAgentTrainer):
    algorithm = "toy_reinforce"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.optims = {
            name: AdamWHolder([p for n, p in self.model.named_parameters() if f".{name}." in n], self.cfg.learning_rate)
            for name in self.learners
        }

    def optimizers(self) -> Mapping[str, AdamWHolder]:
        return self.optims

    def log(self, learner: str, metrics: dict[str, float]) -> dict[str, Any]:
        return dict(metrics)  # metrics.jsonl only

    def learn(self, learner: str, samples: list[TurnSample]) -> dict[str, float]:
        return {"loss": self._step(learner, samples), "samples": float(len(samples))}

    def _step(self, name: str, samples: list[TurnSample]) -> float:
        opt = self.optims[name]
        self.model.set_adapter(name)  # PEFT: this adapter's weights are the trainable ones
        self.model.train()
        total = 0.0
        for s in samples:
            ids = torch.tensor([s.prompt_ids + s.completion_ids], device=self.model.device)
            logits = self.model(input_ids=ids).logits[0, len(s.prompt_ids) - 1 : -1].float()
            logp = logits.log_softmax(-1).gather(-1, ids[0, len(s.prompt_ids) :, None]).sum()
            loss = -s.episode_return * logp / max(len(samples), 1)
            loss.backward()
            total += float(loss)
        opt.optimizer.step()
        opt.lr_scheduler.step()
        opt.optimizer.zero_grad(set_to_none=True)
        opt.state.global_step += 1
        return total


register_algorithm("toy_reinforce", lambda: ToyReinforce)
