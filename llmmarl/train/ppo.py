"""Turn-level multi-agent PPO: each learner's adapter is the actor, a second adapter plus a value head its critic.

An update is::

    episodes = Runner(backend).play(matches)             # the same ONE rollout as GRPO, all learners at once
    samples  = episodes_to_samples(episodes, ...)        # each learner's own answers, with reward terms
    for each learner:
        V      = critic(critic_input(turn, episode))     # value of the state before each answer (no grad)
        A, R   = gae(turn_rewards(trajectory), V)        # per (game, seat): that seat's own turns, in order
        A      = (A - mean) / std                        # over the learner's samples of this update
        for epoch, minibatch:                            # ppo_epochs x minibatches optimizer steps
            actor step:  clipped ratio loss - entropy bonus + KL to the base model
            critic step: (V - R)^2, optionally clipped

Design choices:

* **Time step = one answer.** A turn is one action of the agent, and its answer's tokens one decision with one
  advantage. A seat's trajectory is its own answers in one game; the other seats' moves happen inside the
  environment between two of them, so ``gamma`` discounts per own turn. A re-asked answer is a step of its own
  (the re-ask prompt is a new state); rewards and terminal steps are described in
  :mod:`llmmarl.train.advantages` (its ``gae`` estimator).
* **Token ratios, turn averages.** The ratio ``pi_new / pi_old`` and its clip are per token (a whole-answer ratio,
  the product over ~50 tokens, is almost always outside the clip range). Each turn's loss is the mean over its
  tokens, and the batch loss the mean over turns: every decision weighs the same whatever its length, and the
  step size does not grow with answer length. Entropy and KL terms are averaged the same way.
* **Old log-probabilities are recomputed** with the adapters as they are before the update, in the same
  (tempered, padded, batched) forward pass the loss uses, so the first ratio is exactly 1. The rollout's own
  log-probabilities come from a differently batched, possibly lower-precision pass and would trip the clip.
  Logits are divided by the sampling temperature (as TRL's GRPO does); top-p and grammar masks are not modelled.
* **A cheap critic.** One critic per learner: its own LoRA adapter (``<learner>__critic``, the learner's LoRA
  shape) on the shared base model and a linear head on the final hidden state of its input's last token. Its input
  is a compact state text, decentralised or centralised (see :mod:`llmmarl.train.critic`). Actor and critic have
  separate AdamW optimizers (``learning_rate`` and ``ppo.critic_lr``) and are clipped separately; a minibatch steps
  the actor, then the critic.
* **KL to the base model** (``ppo.kl_coef``) is a loss term, not a reward: the k3 estimator
  ``exp(ref - logp) - (ref - logp) - 1`` per token, with the base model's log-probabilities from a pass with the
  adapters disabled, computed once per update.

The run around the updates (lineups, league, evaluation, checkpoints, export) is :mod:`llmmarl.train.loop`'s;
checkpoints add the critics' adapters, their optimizers and the value heads. The exported adapters (actors only)
and their manifest are the same as GRPO's, with ``algorithm: ppo``.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from llmmarl.backends.base import RolloutEngine
from llmmarl.records import EpisodeRecord, TurnRecord
from llmmarl.train.adapters import adapter_parameters
from llmmarl.train.advantages import trajectory_gae
from llmmarl.train.algorithm_settings import CRITIC_SUFFIX, PPOSettings
from llmmarl.train.batch import answer_length, micro_batches
from llmmarl.train.checkpoint import AdamWHolder, OptimizerHolder
from llmmarl.train.config import TrainConfig
from llmmarl.train.critic import ValueHead, critic_input, critic_values
from llmmarl.train.importance import MismatchMonitor, importance_weights, right_aligned
from llmmarl.train.logprobs import answer_logprobs, per_answer
from llmmarl.train.loop import MultiAgentTrainer, run
from llmmarl.train.samples import TurnSample, split, subsample
from llmmarl.train.settings import LoraSettings

__all__ = ["MultiAgentPPO", "PPOSample", "critic_name", "train"]


def critic_name(learner: str) -> str:
    """The adapter name of ``learner``'s critic."""
    return f"{learner}{CRITIC_SUFFIX}"


@dataclass
class PPOSample:
    """One answer of a learner with what PPO adds: the critic's input, its value, GAE's advantage and return."""

    sample: TurnSample
    critic_ids: list[int]
    value: float = 0.0  # the critic's value before the update
    ret: float = 0.0  # advantage + value: the critic's target
    advantage: float = 0.0
    old_logprobs: list[float] = field(default_factory=list)  # per answer token, before the update
    ref_logprobs: list[float] = field(default_factory=list)  # per answer token, adapters disabled (KL term only)
    is_weights: list[float] = field(default_factory=list)  # per answer token: engine correction (empty = all 1)


def _answer_length(x: PPOSample) -> int:
    return answer_length(x.sample)


def _critic_length(x: PPOSample) -> int:
    return len(x.critic_ids)


def explained_variance(values: Sequence[float], returns: Sequence[float]) -> float:
    """``1 - Var(R - V) / Var(R)``: 1 = the critic predicts the returns, 0 = no better than their mean."""
    n = len(returns)
    if n < 2:
        return math.nan
    mean_r = sum(returns) / n
    var_r = sum((r - mean_r) ** 2 for r in returns) / n
    diff = [r - v for r, v in zip(returns, values, strict=True)]
    mean_d = sum(diff) / n
    var_d = sum((d - mean_d) ** 2 for d in diff) / n
    return math.nan if var_r == 0 else 1.0 - var_d / var_r


class MultiAgentPPO(MultiAgentTrainer):
    """Turn-level PPO for every learner of a :class:`TrainConfig` (``algorithm: ppo``), from shared rollouts.

    Its arguments are :class:`~llmmarl.train.loop.MultiAgentTrainer`'s.
    """

    algorithm: ClassVar[str] = "ppo"

    def __init__(self, cfg: TrainConfig, backend: RolloutEngine | None = None, progress: bool = True) -> None:
        super().__init__(cfg, backend, progress)
        device = self.device
        hidden = self.model.config.get_text_config(decoder=True).hidden_size
        self.heads = {name: ValueHead(hidden, seed=cfg.seed + i).to(device) for i, name in enumerate(self.learners)}
        self.actors = {
            name: AdamWHolder(adapter_parameters(self.model, name), cfg.learning_rate) for name in self.learners
        }
        self.critics = {
            name: AdamWHolder(
                [*adapter_parameters(self.model, critic_name(name)), *self.heads[name].parameters()],
                self.settings.critic_lr,
            )
            for name in self.learners
        }
        self.writers: dict[str, Any] = {}
        self.monitor: MismatchMonitor | None = None  # this learner's engine mismatch during an update
        self.turns: dict[tuple[int, int, str], tuple[TurnRecord, EpisodeRecord]] = {}  # the update's, by sample key
        self.rng = random.Random(cfg.seed)  # the update's shuffles and subsampling; reseeded by begin_update
        if "tensorboard" in cfg.report_to:
            from torch.utils.tensorboard import SummaryWriter

            self.writers = {n: SummaryWriter(str(self.out / "tensorboard" / n)) for n in self.learners}

    @property
    def settings(self) -> PPOSettings:
        """The config's ``ppo:`` block (validation fills it in for ``algorithm: ppo``)."""
        return self.cfg.settings_of(PPOSettings)

    # ---- hooks of the loop -------------------------------------------------------------------------------------
    def extra_adapters(self) -> list[tuple[str, LoraSettings]]:
        return [(critic_name(lr.name), lr.lora) for lr in self.cfg.learners]

    def optimizers(self) -> Mapping[str, OptimizerHolder]:
        return {**self.actors, **{critic_name(n): opt for n, opt in self.critics.items()}}

    def extra_state(self) -> dict[str, Any]:
        return {"value_heads": {n: head.state_dict() for n, head in self.heads.items()}}

    def load_extra_state(self, extra: dict[str, Any]) -> None:
        for name, state in extra["value_heads"].items():
            self.heads[name].load_state_dict(state)

    def log(self, learner: str, metrics: dict[str, float]) -> dict[str, Any]:
        writer = self.writers.get(learner)
        if writer is not None:
            step = self.actors[learner].state.global_step
            for k, v in metrics.items():
                writer.add_scalar(k, v, step)
            writer.flush()
        return dict(metrics)

    # ---- one update --------------------------------------------------------------------------------------------
    def begin_update(self, episodes: Sequence[EpisodeRecord]) -> None:
        self.turns = {(int(ep.game_id), t.step, t.seat): (t, ep) for ep in episodes if not ep.error for t in ep.turns}
        self.rng = random.Random(f"{self.cfg.seed}/{self.state.step}/ppo")

    def learn(self, learner: str, samples: list[TurnSample]) -> dict[str, float]:
        """The critic's values, GAE, then ``ppo.ppo_epochs * ppo.minibatches`` actor and critic steps."""
        cfg = self.cfg
        batch = self.prepare(learner, samples, self.turns)
        metrics = self._advantage_metrics(batch)
        # After GAE: every answer's value fed its trajectory's GAE.
        batch = subsample(batch, cfg.max_samples_per_learner, self.rng)
        self.monitor = MismatchMonitor(cfg.vllm.importance_cap) if self.corrects_engine_mismatch else None
        if batch:  # none if every game broke, or the learner never reached an LLM turn
            metrics.update(self.optimise(learner, batch, self.rng))
        if self.monitor is not None:
            metrics.update(self.monitor.metrics())
        for opt in (self.actors[learner], self.critics[learner]):
            opt.state.global_step += 1  # every optimizer's count equals the update count
        return metrics

    def prepare(
        self,
        name: str,
        samples: Sequence[TurnSample],
        turns: Mapping[tuple[int, int, str], tuple[TurnRecord, EpisodeRecord]],
    ) -> list[PPOSample]:
        """The critic's inputs and values, then GAE per trajectory and per-learner advantage normalisation."""
        cfg = self.cfg
        tokenizer = self.tokenizer
        batch = []
        for s in samples:
            turn, episode = turns[(s.game_id, s.step, s.seat)]
            text = critic_input(turn, episode, self.settings.critic == "centralised", s.attempt)
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            batch.append(PPOSample(s, ids[-self.settings.critic_max_tokens :]))  # the end holds the latest state
        with torch.no_grad():
            self._set_mode(critic_name(name), train=False)
            for micro in micro_batches(batch, cfg.micro_batch_size, _critic_length, even=False):
                for x, v in zip(micro, self._values(name, micro).tolist(), strict=True):
                    x.value = v
        settings = self.settings
        advantages, returns = trajectory_gae(
            [x.sample for x in batch],
            [x.value for x in batch],
            cfg.rewards.as_dict(),
            settings.gamma,
            settings.gae_lambda,
            cfg.normalize_advantages,
        )
        for x, a, r in zip(batch, advantages, returns, strict=True):
            x.advantage, x.ret = a, r
        return batch

    def optimise(self, name: str, batch: Sequence[PPOSample], rng: random.Random) -> dict[str, float]:
        """``ppo_epochs`` passes over ``batch`` in ``minibatches`` shuffled parts: an actor and a critic step each."""
        ppo = self.settings
        self.score_old(name, batch)
        stats: dict[str, list[float]] = defaultdict(list)
        for _ in range(ppo.ppo_epochs):
            order = list(batch)
            rng.shuffle(order)
            for minibatch in split(order, ppo.minibatches):
                for k, v in self._actor_step(name, minibatch).items():
                    stats[k].append(v)
                for k, v in self._critic_step(name, minibatch).items():
                    stats[k].append(v)
        self.model.eval()
        out = {k: sum(v) / len(v) for k, v in stats.items()}
        out["learning_rate"] = self.cfg.learning_rate
        return out

    # ---- passes ----------------------------------------------------------------------------------------------
    def _set_mode(self, adapter: str, train: bool) -> None:
        # PEFT's set_adapter makes this adapter's weights the only trainable LoRA weights.
        self.model.set_adapter(adapter)
        self.model.train(train)

    def _values(self, name: str, micro: Sequence[PPOSample]) -> torch.Tensor:
        pad = self.tokenizer.pad_token_id
        return critic_values(self.model, self.heads[name], [x.critic_ids for x in micro], pad, self.device)

    def _token_logprobs(
        self, micro: Sequence[PPOSample], entropy: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Log-probabilities of the answer tokens under the active adapter: (B, K), entropies (B, K), mask (B, K);
        the layout is :func:`~llmmarl.train.logprobs.answer_logprobs`'s."""
        scored = answer_logprobs(
            self.model,
            [x.sample for x in micro],
            self.tokenizer.pad_token_id,
            self.cfg.temperature,
            self.device,
            self.cfg.shared_prefix,
        )
        ent = None
        if entropy:
            with torch.set_grad_enabled(torch.is_grad_enabled() and self.settings.entropy_coef > 0):
                ent = -(scored.log_softmax.exp() * scored.log_softmax).sum(-1)
        return scored.token, ent, scored.mask

    @torch.no_grad()
    def score_old(self, name: str, batch: Sequence[PPOSample]) -> None:
        """The answer tokens' log-probabilities before the update, and the base model's for the KL term."""
        self._set_mode(name, train=False)
        size = self.cfg.micro_batch_size
        for micro in micro_batches(batch, size, _answer_length, even=False):
            logp, _, mask = self._token_logprobs(micro, entropy=False)
            for x, row, m in zip(micro, logp, mask, strict=True):
                x.old_logprobs = row[m.bool()].tolist()
            if self.monitor is not None:  # samples from the vLLM engine: weight by learner / engine probability
                engine = right_aligned([x.sample.logprobs for x in micro], logp)
                self.monitor.add(logp, engine, mask)
                w = importance_weights(logp, engine, mask, self.cfg.vllm.importance, self.cfg.vllm.importance_cap)
                for x, row, m in zip(micro, w, mask, strict=True):
                    x.is_weights = row[m.bool()].tolist()
            if self.settings.kl_coef > 0:
                with self.model.disable_adapter():
                    ref, _, _ = self._token_logprobs(micro, entropy=False)
                for x, row, m in zip(micro, ref, mask, strict=True):
                    x.ref_logprobs = row[m.bool()].tolist()

    def _aligned(self, values: Sequence[list[float]], mask: torch.Tensor) -> torch.Tensor:
        """Per-token lists, right-aligned into the (B, K) layout of :meth:`_token_logprobs`."""
        out = torch.zeros_like(mask)
        for i, v in enumerate(values):
            if v:
                out[i, mask.shape[1] - len(v) :] = torch.tensor(v, device=mask.device)
        return out

    def _actor_step(self, name: str, minibatch: Sequence[PPOSample]) -> dict[str, float]:
        ppo, n = self.settings, len(minibatch)
        self._set_mode(name, train=True)
        sums: dict[str, float] = defaultdict(float)
        tokens = 0.0
        for micro in micro_batches(minibatch, self.cfg.micro_batch_size, _answer_length, even=False):
            logp, ent, mask = self._token_logprobs(micro, entropy=True)
            assert ent is not None
            old = self._aligned([x.old_logprobs for x in micro], mask)
            adv = torch.tensor([x.advantage for x in micro], device=mask.device)[:, None]
            log_ratio = (logp - old) * mask
            ratio = log_ratio.exp()
            clipped = ratio.clamp(1.0 - ppo.clip_range, 1.0 + ppo.clip_range)
            weights = self._aligned([x.is_weights or [1.0] * len(x.old_logprobs) for x in micro], mask)
            # times pi / mu of each answer under label-level exploration (llmmarl.train.exploration); 1 without it
            weights = weights * torch.tensor([x.sample.weight for x in micro], device=mask.device)[:, None]
            policy = per_answer(-torch.min(ratio * adv, clipped * adv) * weights, mask)
            loss = policy - ppo.entropy_coef * per_answer(ent, mask)
            if ppo.kl_coef > 0:
                ref_gap = self._aligned([x.ref_logprobs for x in micro], mask) - logp
                kl = per_answer(ref_gap.exp() - ref_gap - 1.0, mask)
                loss = loss + ppo.kl_coef * kl
                sums["ppo/kl_ref"] += float(kl.detach().sum())
            (loss.sum() / n).backward()  # the minibatch's loss is the mean over its turns
            with torch.no_grad():
                sums["ppo/policy_loss"] += float(policy.sum())
                sums["entropy"] += float(per_answer(ent.detach(), mask).sum())
                # CleanRL's monitors, per token: the k3 estimate of KL(old || new) and the share clipped.
                sums["ppo/approx_kl"] += float((((ratio - 1.0) - log_ratio) * mask).sum())
                sums["ppo/clip_fraction"] += float((((ratio - 1.0).abs() > ppo.clip_range).float() * mask).sum())
                tokens += float(mask.sum())
        out = {k: v / (tokens if k in ("ppo/approx_kl", "ppo/clip_fraction") else n) for k, v in sums.items()}
        out["grad_norm"] = self.actors[name].step(self.cfg.max_grad_norm)
        return out

    def _critic_step(self, name: str, minibatch: Sequence[PPOSample]) -> dict[str, float]:
        ppo, n = self.settings, len(minibatch)
        self._set_mode(critic_name(name), train=True)
        total = 0.0
        for micro in micro_batches(minibatch, self.cfg.micro_batch_size, _critic_length, even=False):
            v = self._values(name, micro)
            ret = torch.tensor([x.ret for x in micro], device=v.device)
            err = (v - ret) ** 2
            if ppo.value_clip is not None:
                old = torch.tensor([x.value for x in micro], device=v.device)
                v_clipped = old + (v - old).clamp(-ppo.value_clip, ppo.value_clip)
                err = torch.max(err, (v_clipped - ret) ** 2)
            loss = 0.5 * err
            (ppo.vf_coef * loss.sum() / n).backward()
            total += float(loss.detach().sum())
        return {"ppo/value_loss": total / n, "critic/grad_norm": self.critics[name].step(self.cfg.max_grad_norm)}

    @staticmethod
    def _advantage_metrics(batch: Sequence[PPOSample]) -> dict[str, float]:
        if not batch:
            return {}
        n = len(batch)
        values, returns = [x.value for x in batch], [x.ret for x in batch]
        return {
            "ppo/value_mean": sum(values) / n,
            "ppo/return_mean": sum(returns) / n,
            "ppo/advantage_mean": sum(x.sample.advantage for x in batch) / n,  # before normalisation
            "ppo/explained_variance": explained_variance(values, returns),
        }


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> MultiAgentPPO:
    """Train ``cfg`` to the end (resuming from ``output_dir`` if asked); returns the trainer for inspection."""
    return run(MultiAgentPPO, cfg, resume, progress)
