"""Everything llmmarl takes from TRL, in one place: GRPO's loss and its optimizer, one learner at a time.

:class:`AgentGRPOTrainer` is TRL's ``GRPOTrainer`` for one learner's adapter, fed our samples and advantages instead
of generating and scoring; :func:`grpo_args` its TRL settings. :mod:`llmmarl.train.grpo` (the algorithm) uses them
and nothing else of TRL.

How a step goes through TRL: :meth:`AgentGRPOTrainer.update` queues a chunk of samples and calls ``training_step``
-> ``_prepare_inputs`` -> ``_generate_and_score_completions`` -> ``_generate`` -> our ``rollout_func``, which
serves the queued chunk (prompt/completion ids, logprobs, reward terms as extra columns). TRL then scores the
reward terms (so ``rewards/<term>/mean`` is logged per term) and normalises them per contiguous group of
``num_generations`` rows - which is not our grouping. ``_generate_and_score_completions`` is overridden: it calls
super() and replaces ``output["advantages"]`` (shape ``(B,)``, already this process's rows) with ours. TRL shuffles
and slices only after that, so rows and advantages stay aligned. TRL has no hook for external advantages besides
this. ``train()`` owns one policy's whole loop (dataloader, steps, checkpoints), which cannot interleave several
learners on one rollout, so the optimizer steps are ours, with the optimizer and scheduler TRL creates.

TRL touch points (checked against trl 1.16.0; :data:`TOUCH_POINTS` lists them for
``tests/test_trl_adapter.py``, which fails when an upgrade of TRL changes one):

* classes and functions: ``trl.GRPOTrainer``, ``trl.GRPOConfig``,
  ``trl.trainer.utils.selective_log_softmax_and_entropy`` (:func:`_logps_and_entropy`, in plain torch, computes the
  same where Triton cannot run);
* ``GRPOTrainer.__init__`` keywords: ``model``, ``reward_funcs``, ``args``, ``train_dataset`` (a placeholder: TRL
  requires one, ours never reaches its dataloader), ``processing_class``, ``rollout_func``;
* the ``rollout_func`` contract: called as ``rollout_func(prompts, trainer)`` with one prompt per row; returns
  ``prompt_ids``, ``completion_ids``, ``logprobs`` and extra columns, which TRL hands to the reward functions as
  keyword arguments; a reward function's ``__name__`` names its logged ``rewards/<name>/mean``;
* methods we override: ``_generate_and_score_completions(inputs)`` (the advantages overwrite, and
  ``old_per_token_logps`` of a multi-step update), ``_get_per_token_logps_and_entropies(model, input_ids,
  attention_mask, logits_to_keep, batch_size, compute_entropy, compute_aux_loss, ...)`` (log-probs of the
  completion positions only) and ``_compute_loss(model, inputs)`` (the use_vllm flag flip, below);
* methods we call: ``training_step(model, inputs, num_items_in_batch)``, ``create_optimizer_and_scheduler(
  num_training_steps)``, ``log(logs)``;
* keys of the batch ``_generate_and_score_completions`` returns: ``advantages``, ``old_per_token_logps``,
  ``sampling_per_token_logps``, ``importance_sampling_ratio``, ``prompt_ids``, ``prompt_mask``,
  ``completion_ids``, ``completion_mask``; and its monitor ``frac_reward_zero_std`` in ``_metrics`` (dropped: with
  groups of one row it always reads 1);
* attributes we set: ``num_generations`` and ``num_generations_eval`` (1, so that TRL's grouping takes any number
  of rows), ``beta`` (after init: TRL's init would look for an adapter named "default" to copy as reference),
  ``current_gradient_accumulation_steps`` (the dapo loss's divisor: our micro-batches per step), ``use_vllm`` and
  ``vllm_importance_sampling_correction`` (the use_vllm flag flip: both True around ``_compute_loss`` only, the
  one condition under which TRL multiplies each token's loss by ``inputs["importance_sampling_ratio"]``; set at
  other times they would also make TRL sync weights to its own vLLM client), ``_metrics`` and
  ``state.num_input_tokens_seen`` (restored after a scoring pass), ``state.global_step``;
* attributes we read: ``accelerator.device``, ``temperature``, ``optimizer``, ``lr_scheduler``, ``model``,
  ``args.max_grad_norm``, ``state.log_history``, ``callback_handler.callbacks`` (a TensorBoard callback's
  ``logging_dir``, set in ``on_train_begin``, which never runs here);
* ``GRPOConfig`` fields: those :func:`grpo_args` sets, ``loss_type="dapo"`` among them.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer
from trl.trainer.utils import selective_log_softmax_and_entropy

from llmmarl.backends.device import triton_status
from llmmarl.train.batch import answer_length, micro_batches
from llmmarl.train.config import TrainConfig
from llmmarl.train.importance import MismatchMonitor, Mode, importance_weights
from llmmarl.train.logprobs import last_logits
from llmmarl.train.samples import TERMS, TurnSample, split

__all__ = ["TOUCH_POINTS", "AgentGRPOTrainer", "TouchPoints", "grpo_args"]


@dataclass(frozen=True)
class TouchPoints:
    """What this module relies on in TRL, in a form a test can check against the installed TRL."""

    init_keywords: tuple[str, ...]  # GRPOTrainer.__init__ parameters we pass by name
    overrides: tuple[str, ...]  # GRPOTrainer methods AgentGRPOTrainer overrides: the same leading parameters
    calls: dict[str, tuple[str, ...]]  # GRPOTrainer method we call -> its leading parameters
    sources: dict[str, tuple[str, ...]]  # GRPOTrainer method -> text its source must hold (what we rely on inside)
    utils: dict[str, tuple[str, ...]]  # trl.trainer.utils function -> its leading parameters


TOUCH_POINTS = TouchPoints(
    init_keywords=("model", "reward_funcs", "args", "train_dataset", "processing_class", "rollout_func"),
    overrides=("_generate_and_score_completions", "_get_per_token_logps_and_entropies", "_compute_loss"),
    calls={
        "training_step": ("self", "model", "inputs", "num_items_in_batch"),
        "create_optimizer_and_scheduler": ("self", "num_training_steps"),
        "log": ("self", "logs"),
    },
    sources={
        "__init__": (
            "self.rollout_func = rollout_func",
            "self.num_generations =",
            "self.num_generations_eval =",
            "self.temperature =",
            "self.use_vllm =",
            "self.vllm_importance_sampling_correction =",
            "self.beta =",
            "self._metrics =",
        ),
        "_generate": ("self.rollout_func(prompts, self)", '"prompt_ids"', '"completion_ids"', '"logprobs"'),
        "_generate_and_score_completions": (
            '"advantages"',
            '"old_per_token_logps"',
            '"sampling_per_token_logps"',
            '"importance_sampling_ratio"',
            '"prompt_mask"',
            '"completion_mask"',
            '"frac_reward_zero_std"',
        ),
        "_compute_loss": (
            'inputs["advantages"]',
            'inputs.get("old_per_token_logps")',
            "self.use_vllm and self.vllm_importance_sampling_correction",
            "importance_sampling_ratio",
            "self.current_gradient_accumulation_steps",
        ),
    },
    utils={"selective_log_softmax_and_entropy": ("logits", "index", "entropy_requires_grad", "temperature")},
)


# ---- TRL side: reward terms as reward functions, and the trainer of one adapter ------------------------------
def _term_reward(term: str) -> Callable[..., list[float | None]]:
    """A TRL reward function returning one precomputed term (a rollout column), so TRL logs it by name."""

    def reward(completions: list[Any], **columns: Any) -> list[float | None]:
        return [float(x) for x in columns[f"term_{term}"]]

    reward.__name__ = term  # TRL logs rewards/<__name__>/mean and /std
    return reward


def _serve_rollout(prompts: list[Any], trainer: GRPOTrainer) -> dict[str, list[Any]]:
    """TRL's ``rollout_func``: hand over the samples the trainer was given instead of generating."""
    assert isinstance(trainer, AgentGRPOTrainer)
    batch = trainer.batch
    if len(prompts) != len(batch):
        raise RuntimeError(f"TRL asked for {len(prompts)} completions but {len(batch)} samples are queued")
    return {
        "prompt_ids": [s.prompt_ids for s in batch],
        "completion_ids": [s.completion_ids for s in batch],
        "logprobs": [s.logprobs for s in batch],
        **{f"term_{t}": [s.terms[t] for s in batch] for t in TERMS},
    }


class AgentGRPOTrainer(GRPOTrainer):
    """TRL's GRPOTrainer for one learner's adapter, fed from the shared rollout instead of generating."""

    def __init__(self, model: Any, adapter: str, args: GRPOConfig, tokenizer: Any, beta: float = 0.0) -> None:
        self.adapter = adapter
        self.batch: list[TurnSample] = []
        self.old_logps: torch.Tensor | None = None  # rollout-policy log-probs of self.batch (multi-step updates)
        # Correction for samples from another engine (see llmmarl.train.importance); set per update by the loop.
        self.importance: Mode = "none"
        self.importance_cap = 2.0
        self.shared_prefix = False  # compute a micro-batch's shared prompt prefix once (llmmarl.train.logprobs)
        self.monitor: MismatchMonitor | None = None
        # TRL requires a dataset; ours never reaches its dataloader (update() passes the rows itself).
        placeholder = Dataset.from_dict({"prompt": [[{"role": "user", "content": ""}]]})
        super().__init__(
            model=model,
            reward_funcs=[_term_reward(t) for t in TERMS],
            args=args,
            train_dataset=placeholder,
            processing_class=tokenizer,
            rollout_func=_serve_rollout,
        )
        # Our advantages replace TRL's group statistics, so TRL's grouping must accept any number of rows: with
        # groups of 1 its reshape always fits (and its own advantages, all 0, are discarded). Eval mode has its own
        # group size: the reference pass of a multi-step update may run with the model in eval mode.
        self.num_generations = self.num_generations_eval = 1
        # KL to the base model: with several adapters on one PeftModel TRL's init would look for an adapter named
        # "default" to copy as "ref"; set after init, TRL disables the adapters for the reference pass instead.
        self.beta = beta
        self.current_gradient_accumulation_steps = 1
        # The optimizer takes the parameters that require grad, i.e. those of the active adapter only.
        model.set_adapter(adapter)
        self.create_optimizer_and_scheduler(num_training_steps=args.max_steps)
        for cb in self.callback_handler.callbacks:  # loggers set their folder in on_train_begin, never called here
            if type(cb).__name__ == "TensorBoardCallback":
                cb.logging_dir = str(Path(str(args.output_dir)) / "tensorboard")

    def _get_per_token_logps_and_entropies(
        self,
        model: Any,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        logits_to_keep: int,
        batch_size: int | None = None,
        compute_entropy: bool = False,
        compute_aux_loss: bool = False,
        **multimodal: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Log-probs (and entropies) of the completion tokens, (B, logits_to_keep).

        Off GPU, TRL's fused LM head projects *every* position through the vocabulary (its compact path is
        Triton-only); our completions (~64 tokens) follow ~300-token prompts, so that is ~5x the LM-head work,
        and its CPU fallback is slow besides. Here only the completion positions get logits. Text-only models.
        On a GPU where Triton cannot run (it needs a C compiler at run time), TRL's kernels would fail: this path,
        in plain torch, serves there too. With ``shared_prefix`` it serves on every device: the prompt prefix the
        rows share is computed once (:func:`~llmmarl.train.logprobs.last_logits`), whatever TRL would do.
        """
        on_cpu = self.accelerator.device.type == "cpu"
        plain = not on_cpu and not triton_status()[0]
        ours = on_cpu or plain or self.shared_prefix
        if not ours or compute_aux_loss or any(v is not None for v in multimodal.values()):
            return super()._get_per_token_logps_and_entropies(
                model,
                input_ids,
                attention_mask,
                logits_to_keep,
                batch_size,
                compute_entropy,
                compute_aux_loss,
                **multimodal,
            )
        # Position t predicts token t+1: the last K+1 positions' logits, minus the final one, score the K tokens.
        logits = last_logits(model, input_ids, attention_mask, logits_to_keep + 1, shared_prefix=self.shared_prefix)
        logits = logits[:, :-1, :].float()  # (B, K, V)
        index = input_ids[:, -logits_to_keep:]  # (B, K)
        # Entropy is a monitor here (no entropy bonus by default), so it needs no gradient.
        if plain:
            logps, entropy = _logps_and_entropy(logits, index, self.temperature)
        else:
            logps, entropy = selective_log_softmax_and_entropy(
                logits, index, entropy_requires_grad=False, temperature=self.temperature
            )
        return logps, (entropy if compute_entropy else None), None

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        output = super()._generate_and_score_completions(inputs)
        ours = torch.tensor([s.advantage for s in self.batch], dtype=torch.float32, device=output["advantages"].device)
        if ours.shape != output["advantages"].shape:
            raise RuntimeError(f"advantages {tuple(ours.shape)} do not match TRL's {tuple(output['advantages'].shape)}")
        output["advantages"] = ours  # (B,): this process's rows, in rollout order (TRL shuffles after this)
        if self.old_logps is not None:  # a later step of a multi-step update: TRL clips the ratio against these
            output["old_per_token_logps"] = self.old_logps
        if self.monitor is not None:
            self._add_importance(output)
        self._add_exploration(output)
        # TRL's share of zero-spread groups is always 1 with groups of one row: a misleading monitor, dropped.
        model: Any = self.model
        self._metrics["train" if model.training else "eval"].pop("frac_reward_zero_std", None)
        return output

    def _add_importance(self, output: dict[str, Any]) -> None:
        """Weights of the engine's samples, (B, T), from the learner's log-probs before this step: the old ones of a
        multi-step update, else one no-grad pass (TRL's own vLLM correction does the same)."""
        assert self.monitor is not None
        engine = output["sampling_per_token_logps"]  # (B, T): the engine's, at the sampling temperature
        mask = output["completion_mask"]
        learner = output.get("old_per_token_logps")
        if learner is None:
            with torch.no_grad():
                ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
                attn = torch.cat([output["prompt_mask"], mask], dim=1)
                learner, _, _ = self._get_per_token_logps_and_entropies(self.model, ids, attn, mask.size(1))
        self.monitor.add(learner, engine, mask)
        if self.importance != "none":
            output["importance_sampling_ratio"] = importance_weights(
                learner, engine, mask, self.importance, self.importance_cap
            )

    def _add_exploration(self, output: dict[str, Any]) -> None:
        """Each row's pi / mu under label-level exploration (llmmarl.train.exploration), multiplied into the
        per-token ratio the loss applies, with the engine correction's when that is there too."""
        weights = [s.weight for s in self.batch]
        if all(w == 1.0 for w in weights):
            return
        mask = output["completion_mask"]
        column = torch.tensor(weights, dtype=torch.float32, device=mask.device)[:, None]
        ratio = output.get("importance_sampling_ratio")
        output["importance_sampling_ratio"] = (ratio if ratio is not None else torch.ones_like(mask).float()) * column

    def _compute_loss(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        if "importance_sampling_ratio" not in inputs:
            return super()._compute_loss(model, inputs)
        # TRL multiplies each token's loss by inputs["importance_sampling_ratio"] only under these two flags, which
        # elsewhere would also make it sync weights to its own vLLM client: set them for the loss alone.
        self.use_vllm = self.vllm_importance_sampling_correction = True
        try:
            return super()._compute_loss(model, inputs)
        finally:
            self.use_vllm = self.vllm_importance_sampling_correction = False

    def _rollout_logps(self, chunk: Sequence[TurnSample]) -> torch.Tensor:
        """Per-token log-probs of ``chunk``'s completions under the current adapter, laid out as TRL lays out
        the same chunk in its loss (so that they line up with its ``per_token_logps``)."""
        self.batch, self.old_logps = list(chunk), None
        monitor, self.monitor = self.monitor, None  # a scoring pass: no weights, no monitors
        # TRL's scoring also logs (reward means, tokens seen): the training pass logs these rows, not this one.
        seen, logged = self.state.num_input_tokens_seen, copy.deepcopy(self._metrics)
        with torch.no_grad():
            out = self._generate_and_score_completions([{"prompt": s.messages} for s in chunk])
            self.state.num_input_tokens_seen, self._metrics = seen, logged
            ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
            mask = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
            logps, _, _ = self._get_per_token_logps_and_entropies(self.model, ids, mask, out["completion_ids"].size(1))
        self.monitor = monitor
        return logps

    def update(
        self, samples: Sequence[TurnSample], micro_batch_size: int, steps: int = 1, importance: bool = False
    ) -> dict[str, float]:
        """``steps`` optimizer steps of this adapter on ``samples``: as many mini-batches, each in micro-batches
        whose gradients add up.

        With one step the update is on-policy and TRL's ratio is 1. With more, the samples are split into disjoint
        mini-batches and later steps are off-policy by the earlier ones, so the rollout policy's log-probs are
        computed first (one no-grad pass) and TRL's loss clips the ratio against them, as TRL does for its own
        ``steps_per_generation``: more learning per (expensive) rollout for a bounded change of policy.

        ``importance``: the samples come from another engine; reweight their tokens (see
        :mod:`llmmarl.train.importance`) and return the ``is/...`` monitors.
        """
        model: Any = self.model
        optimizer: Any = self.optimizer
        scheduler: Any = self.lr_scheduler
        model.set_adapter(self.adapter)  # train this adapter; the others get requires_grad=False
        self.monitor = MismatchMonitor(self.importance_cap) if importance else None  # monitored even with "none"
        rows = list(samples)
        if steps > 1:  # mini-batches mix games and seats; the rollout lists them game by game
            random.Random(f"{self.state.global_step}/minibatches").shuffle(rows)
        plans = [micro_batches(mb, micro_batch_size, answer_length) for mb in split(rows, steps)]
        old = [[self._rollout_logps(c) for c in plan] for plan in plans] if len(plans) > 1 else None
        loss, grad_norms = 0.0, []
        for i, plan in enumerate(plans):
            # dapo loss: each micro-batch is divided by its tokens and by the number of micro-batches.
            self.current_gradient_accumulation_steps = len(plan)
            for j, chunk in enumerate(plan):
                self.batch, self.old_logps = chunk, (old[i][j] if old is not None else None)
                loss += float(self.training_step(model, [{"prompt": s.messages} for s in chunk], None))
            params = [p for p in model.parameters() if p.requires_grad]
            grad_norms.append(float(torch.nn.utils.clip_grad_norm_(params, self.args.max_grad_norm)))
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        self.batch, self.old_logps = [], None
        monitors = self.monitor.metrics() if self.monitor is not None else {}
        self.monitor = None
        self.state.global_step += 1  # one per update, whatever the steps: the update count is the run's clock
        return {
            "loss": loss / len(plans),
            "grad_norm": sum(grad_norms) / len(plans),
            "learning_rate": float(scheduler.get_last_lr()[0]),
            **monitors,
        }


def _logps_and_entropy(
    logits: torch.Tensor, index: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain-torch log-probs of ``index`` (B, K) under ``logits / temperature`` (B, K, V), and entropies without grad;
    what TRL's ``selective_log_softmax_and_entropy`` computes, without its Triton kernel."""
    logp_all = torch.log_softmax(logits / temperature, dim=-1)
    logps = logp_all.gather(-1, index[..., None]).squeeze(-1)
    with torch.no_grad():
        entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logps, entropy


# ---- TRL settings ------------------------------------------------------------------------------------------------
def grpo_args(cfg: TrainConfig, learner: str, device: str, dtype: torch.dtype = torch.float32) -> GRPOConfig:
    """TRL settings of one learner's trainer. Batch-shape settings are placeholders: update() batches.

    ``device`` and ``dtype`` are the learner model's (:mod:`llmmarl.backends.device` chose them): bf16 autocast
    on CUDA when the model is bf16 (its LoRA weights stay float32, PEFT upcasts them), never on the CPU, where
    TRL's default ``bf16=True`` fails.
    """
    on_cpu = device == "cpu"
    return GRPOConfig(
        output_dir=str(Path(cfg.output_dir) / "trainers" / learner),
        use_cpu=on_cpu,
        bf16=not on_cpu and dtype == torch.bfloat16,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="constant",
        max_grad_norm=cfg.max_grad_norm,
        max_steps=cfg.steps,
        per_device_train_batch_size=2,
        num_generations=2,
        gradient_accumulation_steps=1,
        num_iterations=1,  # on-policy: TRL then skips recomputing old logprobs (ratio 1 at the step)
        beta=0.0,
        temperature=cfg.temperature,  # the loss scores tokens at the temperature they were sampled at
        max_completion_length=cfg.max_new_tokens,
        reward_weights=[cfg.rewards.as_dict()[t] for t in TERMS],
        loss_type="dapo",
        gradient_checkpointing=False,  # memory is not the limit on CPU for these models; compute is
        report_to=cfg.report_to or "none",
        logging_steps=1,
        save_strategy="no",
        log_completions=False,
        seed=cfg.seed,
    )
