"""Multi-agent GRPO on TRL: one shared PeftModel, one named LoRA adapter and one GRPOTrainer per learner.

An update is::

    episodes = Runner(backend).play(matches)          # ONE rollout: every game of the update, all learners at once
    samples  = episodes_to_samples(episodes, ...)     # each learner's own turns, with reward terms
    assign_advantages(samples[name], credit=...)      # our baselines: group / role / agent
    for name, trainer in trainers.items():            # one optimizer step per learner, on its own adapter
        trainer.update(samples[name])

The backend that plays the games and the trainers share one model object, so the games are always played by
the current adapters, and every learner is trained on-policy from the same games.

How our advantages reach TRL (checked against trl 1.16.0's ``grpo_trainer.py``): ``training_step`` ->
``_prepare_inputs`` -> ``_generate_and_score_completions`` -> ``_generate`` -> our ``rollout_func``, which serves
the learner's current chunk of samples (prompt/completion ids, logprobs, reward terms as extra columns). TRL
then scores the reward terms (so ``rewards/<term>/mean`` is logged per term) and normalises them per contiguous
group of ``num_generations`` rows - which is not our grouping. :class:`AgentGRPOTrainer` overrides
``_generate_and_score_completions``: it calls super() and replaces ``output["advantages"]`` (shape ``(B,)``,
already this process's rows) with the advantages we computed. TRL shuffles and slices only after that, so
rows and advantages stay aligned. TRL has no hook for external advantages besides this.

TRL's ``train()`` owns one policy's whole loop (dataloader, steps, checkpoints), which cannot interleave several
learners on one rollout; :meth:`AgentGRPOTrainer.update` therefore runs one optimizer step with TRL's own
``training_step`` (generation hook, loss, backward) and the optimizer and scheduler TRL creates.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from tqdm.auto import tqdm
from trl import GRPOConfig, GRPOTrainer
from trl.trainer.utils import selective_log_softmax_and_entropy

from llmmarl.agents.specs import AgentSpec, LLMAgentSpec
from llmmarl.backends.transformers import TransformersBackend
from llmmarl.envs import make
from llmmarl.models import resolve_model
from llmmarl.records import AgentSummary, EpisodeRecord, summarise
from llmmarl.runner import Match, Runner
from llmmarl.train.checkpoint import list_checkpoints, load_checkpoint, save_adapter, save_checkpoint, write_manifest
from llmmarl.train.config import TrainConfig
from llmmarl.train.league import League, Snapshot
from llmmarl.train.lineup import Group, eval_lineups, group_matches, training_groups
from llmmarl.train.rollout import TERMS, TurnSample, assign_advantages, episodes_to_samples, subsample

_SCORE = {"win": 1.0, "draw": 0.5, "loss": 0.0}


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
        # groups of 1 its reshape always fits (and its own advantages, all 0, are discarded).
        self.num_generations = 1
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
        """
        if self.accelerator.device.type != "cpu" or compute_aux_loss or any(v is not None for v in multimodal.values()):
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
        logits = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=logits_to_keep + 1).logits
        logits = logits[:, :-1, :].float()  # (B, K, V)
        index = input_ids[:, -logits_to_keep:]  # (B, K)
        # Entropy is a monitor here (no entropy bonus by default), so it needs no gradient.
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
        # TRL's share of zero-spread groups is always 1 with groups of one row: a misleading monitor, dropped.
        model: Any = self.model
        self._metrics["train" if model.training else "eval"].pop("frac_reward_zero_std", None)
        return output

    def update(self, samples: Sequence[TurnSample], micro_batch_size: int) -> dict[str, float]:
        """One optimizer step of this adapter on ``samples``, in micro-batches whose gradients add up."""
        model: Any = self.model
        optimizer: Any = self.optimizer
        scheduler: Any = self.lr_scheduler
        model.set_adapter(self.adapter)  # train this adapter; the others get requires_grad=False
        # Similar lengths together: less padding. Order is irrelevant to the summed gradient.
        ordered = sorted(samples, key=lambda s: len(s.prompt_ids) + len(s.completion_ids))
        n_chunks = math.ceil(len(ordered) / micro_batch_size)
        bounds = [round(i * len(ordered) / n_chunks) for i in range(n_chunks + 1)]
        # dapo loss: each micro-batch is divided by its tokens and by the number of micro-batches.
        self.current_gradient_accumulation_steps = n_chunks
        loss = 0.0
        for lo, hi in itertools.pairwise(bounds):
            self.batch = ordered[lo:hi]
            rows = [{"prompt": s.messages} for s in self.batch]
            loss += float(self.training_step(model, rows, None))
        self.batch = []
        params = [p for p in model.parameters() if p.requires_grad]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, self.args.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        self.state.global_step += 1
        return {"loss": loss, "grad_norm": float(grad_norm), "learning_rate": float(scheduler.get_last_lr()[0])}


# ---- the model: one base, one adapter per learner --------------------------------------------------------------
def attach_adapters(backend: TransformersBackend, cfg: TrainConfig) -> Any:
    """Give the backend's model one LoRA adapter per learner (fresh, or loaded from ``init_adapter``)."""
    from peft import LoraConfig, PeftModel, get_peft_model

    model = backend.model
    with torch.random.fork_rng():  # seeded adapter init without touching the caller's RNG
        torch.manual_seed(cfg.seed)
        for lr in cfg.learners:
            if lr.init_adapter:
                if isinstance(model, PeftModel):
                    model.load_adapter(lr.init_adapter, adapter_name=lr.name, is_trainable=True)
                else:
                    model = PeftModel.from_pretrained(model, lr.init_adapter, adapter_name=lr.name, is_trainable=True)
                continue
            lora = LoraConfig(
                r=lr.lora.r,
                lora_alpha=lr.lora.alpha,
                lora_dropout=lr.lora.dropout,
                target_modules=lr.lora.target_modules,
                layers_to_transform=lr.lora.layers,
                task_type="CAUSAL_LM",
            )
            if isinstance(model, PeftModel):
                model.add_adapter(lr.name, lora)
            else:
                model = get_peft_model(model, lora, adapter_name=lr.name)
    backend.model = model
    return model


def grpo_args(cfg: TrainConfig, learner: str, device: str) -> GRPOConfig:
    """TRL settings of one learner's trainer. Batch-shape settings are placeholders: update() batches."""
    return GRPOConfig(
        output_dir=str(Path(cfg.output_dir) / "trainers" / learner),
        use_cpu=device == "cpu",
        bf16=False,  # TRL's default bf16 fails on CPU; the backend picks the dtype
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


# ---- playing games for evaluation ---------------------------------------------------------------------------
def play_lineups(
    backend: TransformersBackend,
    env: str,
    env_kwargs: dict[str, Any],
    lineups: dict[str, list[dict[str, AgentSpec]]],
    seed: int,
    concurrency: int = 64,
) -> dict[str, list[AgentSummary]]:
    """Play every seating of every named lineup; the same ``seed`` gives the same games (deals, starts)."""
    out = {}
    for name, seatings in lineups.items():
        rng = random.Random(f"{seed}/eval")  # the same games for every lineup and every evaluation
        matches = [
            Match(game_id=i, env=env, env_kwargs=env_kwargs, seats=s, seed=rng.randrange(2**31))
            for i, s in enumerate(seatings)
        ]
        out[name] = summarise(Runner(backend, concurrency=concurrency, progress=False).play(matches))
    return out


def summary_metrics(s: AgentSummary) -> dict[str, float]:
    m = {
        "return": s.mean_return,
        "ci95": s.ci95,
        "win_rate": s.wins / s.games if s.games else 0.0,
        "draw_rate": s.draws / s.games if s.games else 0.0,
        "invalid_rate": s.invalid_rate,
        "fallback_rate": s.fallback_rate,
        "games": float(s.games),
    }
    if s.prediction_accuracy is not None:
        m["prediction_accuracy"] = s.prediction_accuracy
    return m


def _sample_metrics(samples: Sequence[TurnSample]) -> dict[str, float]:
    if not samples:
        return {"samples/count": 0.0}
    n = len(samples)
    mean = sum(s.reward for s in samples) / n
    m = {
        "samples/count": float(n),
        "samples/reward_mean": mean,
        "samples/reward_var": sum((s.reward - mean) ** 2 for s in samples) / n,
        "samples/usable_rate": sum(s.usable for s in samples) / n,
        "samples/completion_tokens": sum(len(s.completion_ids) for s in samples) / n,
    }
    for t in TERMS:
        m[f"terms/{t}"] = sum(s.terms[t] for s in samples) / n
    return m


# ---- the loop --------------------------------------------------------------------------------------------------
class MultiAgentGRPO:
    """Trains every learner of a :class:`TrainConfig` from shared rollouts; checkpoints, resumes, exports.

    Args:
        cfg: the run.
        backend: reuse a loaded backend (its model gets the learners' adapters); default: load ``cfg.model``.
        progress: show a progress bar with per-agent monitors.
    """

    def __init__(self, cfg: TrainConfig, backend: TransformersBackend | None = None, progress: bool = True) -> None:
        self.cfg = cfg
        self.out = Path(cfg.output_dir)
        self.env = make(cfg.env, **cfg.env_kwargs)
        cfg.check_env(self.env)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.backend = backend or TransformersBackend(
            cfg.model, max_batch_size=cfg.max_batch_size, device=cfg.device, seed=cfg.seed
        )
        self.model = attach_adapters(self.backend, cfg)
        self.trainers = {
            lr.name: AgentGRPOTrainer(
                self.model, lr.name, grpo_args(cfg, lr.name, self.backend.device), self.backend.tokenizer, cfg.beta
            )
            for lr in cfg.learners
        }
        self.learner_specs = [self._spec(lr.name, lr.name, cfg.temperature) for lr in cfg.learners]
        self.opponents = [self._decoding(s, cfg.temperature) for s in cfg.opponent_specs()]
        self.league = (
            League(pool_size=cfg.league.pool_size, sampling=cfg.league.sampling) if cfg.setting == "league" else None
        )
        self.step = 0
        self.role_baselines: dict[str, float] = {}
        self.eval_results: dict[str, dict[str, dict[str, float]]] = {}
        self.progress = progress

    # ---- agents ----------------------------------------------------------------------------------------------
    def _spec(self, name: str, adapter: str | None, temperature: float) -> LLMAgentSpec:
        cfg = self.cfg
        return LLMAgentSpec(
            name=name,
            adapter=adapter,
            template=cfg.template,
            temperature=temperature,
            max_new_tokens=cfg.max_new_tokens,
            reask=cfg.reask,
            constrained=cfg.constrained,
        )

    def _decoding(self, spec: AgentSpec, temperature: float) -> AgentSpec:
        if not isinstance(spec, LLMAgentSpec):
            return spec
        return spec.model_copy(
            update={
                "temperature": temperature,
                "max_new_tokens": self.cfg.max_new_tokens,
                "template": self.cfg.template,
            }
        )

    def _snapshot_spec(self, snap: Snapshot) -> LLMAgentSpec:
        return self._spec(snap.name, snap.path, self.cfg.temperature)

    # ---- one update ------------------------------------------------------------------------------------------
    def update(self) -> dict[str, dict[str, Any]]:
        """Play one rollout and step every learner on it; returns each learner's logged metrics."""
        cfg = self.cfg
        t0 = time.perf_counter()
        groups, seeds = training_groups(
            cfg, self.env, self.step, self.learner_specs, self.opponents, self.league, self._snapshot_spec
        )
        self.model.eval()  # PEFT's mixed-adapter generation refuses training mode
        episodes = Runner(self.backend, concurrency=cfg.concurrency, progress=False).play(
            group_matches(cfg, groups, seeds)
        )
        t_rollout = time.perf_counter() - t0
        self._record_league(groups, episodes)
        samples = episodes_to_samples(
            episodes,
            self.trainers,
            cfg.rewards.as_dict(),
            self.env.forfeit_reward,
            cfg.group_size,
            cfg.train_on,
        )
        summaries = {s.player: s for s in summarise(episodes)}
        rng = random.Random(f"{cfg.seed}/{self.step}/subsample")
        logs: dict[str, dict[str, Any]] = {}
        for name, trainer in self.trainers.items():
            t1 = time.perf_counter()
            assign_advantages(
                samples[name], cfg.credit, cfg.normalize_advantages, self.role_baselines, cfg.role_baseline_ema
            )
            batch = subsample(samples[name], cfg.max_samples_per_learner, rng)
            metrics: dict[str, float] = {**_sample_metrics(samples[name]), "time/rollout_s": t_rollout}
            if name in summaries:
                metrics.update({f"game/{k}": v for k, v in summary_metrics(summaries[name]).items()})
            if batch:  # none if every game broke, or the learner never reached an LLM turn
                metrics.update(trainer.update(batch, cfg.micro_batch_size))
            else:
                trainer.state.global_step += 1  # keep every adapter's step count equal to the update count
            metrics["time/update_s"] = time.perf_counter() - t1
            trainer.log(metrics)  # TRL adds its own (entropy, rewards/<term>, completion lengths) and reports
            logs[name] = dict(trainer.state.log_history[-1])
        self.backend.clear_prefix_cache()  # cached keys/values were computed with the adapters before this step
        self.step += 1
        self._append_metrics({"step": self.step, "learners": logs})
        return logs

    def _record_league(self, groups: Sequence[Group], episodes: Sequence[EpisodeRecord]) -> None:
        if self.league is None:
            return
        snapshot_of = {g: group.snapshot for g, group in enumerate(groups) if group.snapshot}
        learners = set(self.trainers)
        for ep in episodes:
            snap = snapshot_of.get(int(ep.game_id) // self.cfg.group_size)
            if snap is None or ep.error:
                continue
            for seat, player in ep.seats.items():
                if player in learners:
                    self.league.record(snap, _SCORE[ep.outcomes[seat]])

    def _snapshot(self) -> None:
        assert self.league is not None
        for name in self.trainers:
            snap = Snapshot(
                name=f"{name}-s{self.step}",
                learner=name,
                step=self.step,
                path=str(self.out / "league" / f"{name}-s{self.step}"),
            )
            save_adapter(self.model, name, Path(snap.path))
            for old in self.league.add(snap):
                if old.name in self.model.peft_config:
                    self.model.delete_adapter(old.name)
                shutil.rmtree(old.path, ignore_errors=True)

    # ---- evaluation --------------------------------------------------------------------------------------------
    def evaluate(self, games: int | None = None) -> dict[str, dict[str, dict[str, float]]]:
        """Each learner against the evaluation lineups; returns ``{lineup: {learner: metrics}}``."""
        cfg = self.cfg
        n = cfg.eval_games if games is None else games
        if n == 0:
            return {}
        t = cfg.eval_temperature
        learners = [self._spec(lr.name, lr.name, t) for lr in cfg.learners]
        opponents = [self._decoding(s, t) for s in (cfg.eval_opponent_specs() or cfg.opponent_specs())]
        lineups = eval_lineups(cfg.model_copy(update={"eval_games": n}), self.env, learners, opponents)
        self.model.eval()
        played = play_lineups(self.backend, cfg.env, cfg.env_kwargs, lineups, cfg.seed, cfg.concurrency)
        results = {
            lineup: {s.player: summary_metrics(s) for s in summaries if s.player in self.trainers}
            for lineup, summaries in played.items()
        }
        self.eval_results = results
        for name, trainer in self.trainers.items():
            flat = {f"eval/{lineup}/{k}": v for lineup, r in results.items() for k, v in r.get(name, {}).items()}
            trainer.log(flat)
        self._append_metrics({"step": self.step, "eval": results})
        return results

    # ---- checkpoints and export ----------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {
            "config": self.cfg.model_dump(mode="json"),
            "league": self.league.model_dump() if self.league else None,
            "role_baselines": self.role_baselines,
            "backend_calls": self.backend._calls,  # the backend seeds each generate call from this counter
            "eval": self.eval_results,
        }

    def save(self) -> Path:
        """A resumable checkpoint of the current step, and the adapters exported beside their manifest."""
        path = save_checkpoint(
            self.out / "checkpoints", self.step, self.model, self.trainers, self._state(), self.cfg.keep_checkpoints
        )
        self.export()
        return path

    def resume(self) -> bool:
        """Continue from the newest checkpoint in ``output_dir``; False if there is none."""
        found = list_checkpoints(self.out / "checkpoints")
        if not found:
            return False
        state = load_checkpoint(found[-1], self.model, self.trainers)
        saved = state["config"]
        for key in ("env", "env_kwargs", "model", "setting"):
            if saved[key] != self.cfg.model_dump(mode="json")[key]:
                raise ValueError(
                    f"{found[-1]} was written with {key}={saved[key]!r}, this config has {getattr(self.cfg, key)!r}: "
                    "resume with the same config, or use another output_dir"
                )
        if sorted(lr["name"] for lr in saved["learners"]) != sorted(self.trainers):
            raise ValueError(f"{found[-1]} has learners {[lr['name'] for lr in saved['learners']]}: not this config's")
        self.step = state["step"]
        self.role_baselines = state["role_baselines"]
        self.backend._calls = state["backend_calls"]
        self.eval_results = state.get("eval") or {}
        if state.get("league") is not None:
            self.league = League.model_validate(state["league"])
        return True

    def export(self) -> Path:
        """Write every learner's adapter to ``<adapters_dir>/<name>/`` and list them in ``manifest.json``."""
        cfg = self.cfg
        folder = cfg.adapters_path
        entries = []
        for lr in cfg.learners:
            save_adapter(self.model, lr.name, folder / lr.name)
            entries.append(
                {
                    "name": lr.name,
                    "path": lr.name,
                    "base_model": cfg.model,
                    "base_model_path": resolve_model(cfg.model),
                    "game": cfg.env,
                    "env_kwargs": cfg.env_kwargs,
                    "seats": lr.seats or list(self.env.possible_agents),
                    "role": lr.seats[0] if len(lr.seats) == 1 else "any seat",
                    "setting": cfg.setting,
                    "steps": self.step,
                    "config": {"learner": lr.model_dump(mode="json"), **_training_summary(cfg)},
                    "eval": {lineup: r[lr.name] for lineup, r in self.eval_results.items() if lr.name in r},
                }
            )
        return write_manifest(folder, entries, {"output_dir": cfg.output_dir, "config": cfg.model_dump(mode="json")})

    def _append_metrics(self, record: dict[str, Any]) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        with (self.out / "metrics.jsonl").open("a", encoding="utf-8") as f:
            f.write(json.dumps(record, default=float) + "\n")

    # ---- the whole run ---------------------------------------------------------------------------------------
    def train(self, max_updates: int | None = None) -> dict[str, dict[str, dict[str, float]]]:
        """Run until ``cfg.steps`` updates (or ``max_updates`` more); returns the last evaluation."""
        cfg = self.cfg
        if self.league is not None and not self.league.snapshots:
            self._snapshot()  # the pool starts with the untrained adapters
        stop = cfg.steps if max_updates is None else min(cfg.steps, self.step + max_updates)
        bar = tqdm(total=cfg.steps, initial=self.step, desc="updates", unit="upd", disable=not self.progress)
        try:
            while self.step < stop:
                logs = self.update()
                bar.update(1)
                bar.set_postfix_str(_monitor_line(logs), refresh=True)
                if self.league is not None and self.step % cfg.league.snapshot_every == 0:
                    self._snapshot()
                if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < cfg.steps:
                    bar.write(f"step {self.step} eval: {_eval_line(self.evaluate())}")
                if self.step % cfg.save_every == 0 or self.step == cfg.steps:
                    if self.step == cfg.steps:
                        results = self.evaluate()
                        if results:
                            bar.write(f"step {self.step} eval: {_eval_line(results)}")
                    self.save()
        finally:
            bar.close()
        return self.eval_results


def _monitor_line(logs: dict[str, dict[str, Any]]) -> str:
    parts = []
    for name, m in logs.items():
        ret, win, inv = m.get("game/return", math.nan), m.get("game/win_rate", math.nan), m.get("game/invalid_rate")
        line = f"{name}: R {ret:+.2f} win {win:.0%}"
        if inv is not None:
            line += f" inv {inv:.0%}"
        if "entropy" in m:
            line += f" H {m['entropy']:.2f}"
        parts.append(line)
    return " | ".join(parts)


def _eval_line(results: dict[str, dict[str, dict[str, float]]]) -> str:
    return "; ".join(
        f"{lineup} [{name}] R {m['return']:+.2f}±{m['ci95']:.2f} win {m['win_rate']:.0%} inv {m['invalid_rate']:.0%}"
        for lineup, r in results.items()
        for name, m in r.items()
    )


def _training_summary(cfg: TrainConfig) -> dict[str, Any]:
    keys = ("setting", "credit", "learning_rate", "beta", "games_per_update", "group_size", "temperature")
    return {k: getattr(cfg, k) for k in keys} | {"rewards": cfg.rewards.as_dict(), "max_new_tokens": cfg.max_new_tokens}


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> MultiAgentGRPO:
    """Train ``cfg`` to the end (resuming from ``output_dir`` if asked); returns the trainer for inspection."""
    found = list_checkpoints(Path(cfg.output_dir) / "checkpoints")
    if found and not resume:
        raise FileExistsError(
            f"{cfg.output_dir} already has checkpoints (newest: {found[-1].name}): pass --resume to continue that "
            "run, or choose another output_dir"
        )
    trainer = MultiAgentGRPO(cfg, progress=progress)
    if resume and trainer.resume() and progress:
        print(f"resumed {cfg.output_dir} at update {trainer.step}")
    trainer.train()
    return trainer
