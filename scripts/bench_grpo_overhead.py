"""GRPO step overhead: our multi-agent trainer's optimizer step vs TRL's own GRPOTrainer, on the same samples.

Every learner of :class:`~llmmarl.train.grpo.MultiAgentGRPO` runs one optimizer step per update through
:meth:`AgentGRPOTrainer.update`, which drives TRL's ``training_step`` itself, one micro-batch at a time. This
script measures what that orchestration costs against TRL driving the same work with its own ``train()`` loop.
Everything runs in one process on one base model; each trainer gets its own fresh LoRA adapter of the same shape:

* **ours**: ``AgentGRPOTrainer.update(samples, micro_batch_size)``, timed around the call;
* **trl**: a plain ``trl.GRPOTrainer`` whose ``rollout_func`` serves the same prompt/completion token ids, with
  ``per_device_train_batch_size * gradient_accumulation_steps`` = the samples of one step, timed by a callback
  from ``on_step_begin`` to ``on_step_end`` (serving, scoring, forward/backward of every micro-batch, clipping,
  optimizer and scheduler step; not logging);
* **trl + our logprobs**: the same GRPOTrainer with only ``AgentGRPOTrainer._get_per_token_logps_and_entropies``
  borrowed. On CPU ours projects only the completion positions through the vocabulary while TRL projects all of
  them, so this row isolates the orchestration overhead. Off CPU both use TRL's path and it equals **trl**.

The samples are real: a few tic-tac-toe games of the grammar-constrained learner against a random player, turned
into samples and advantages exactly as a training update does. The first step of each trainer is a warm-up and is
not counted. ``--rounds`` repeats everything, ours first in even rounds and last in odd ones, so a machine whose
load drifts favours no trainer; medians are over all timed steps. Target: ours at most 1.10x TRL's seconds per
step, judged against **trl + our logprobs**.

Work that still differs, reported rather than hidden: TRL pads the whole step's samples to its longest prompt and
completion, ours pads each micro-batch (sorted by length) to its own (``positions_per_step`` in the JSON); TRL
scores one reward column once per step, ours four reward terms once per micro-batch.

    python scripts/bench_grpo_overhead.py --samples 32 --micro-batch 8 --steps 5 --out benchmarks/grpo_overhead.json

On a machine whose cores are busy with other work, add ``--threads 1`` (and ``OMP_NUM_THREADS=1``). TRL's own
logprob path is slow on CPU (seconds per step even with the tiny model); ``--skip-trl-as-is`` leaves that row out.
"""

from __future__ import annotations

import os

# Nothing here needs the network (local models, reward functions instead of reward models): stay offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# TRL warns that rollout_func is experimental on every trainer it builds; using it is the point here.
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import argparse
import json
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from transformers import PrinterCallback, TrainerCallback
from trl import GRPOConfig, GRPOTrainer

from llmmarl.benchmarking import machine_info
from llmmarl.train.adapters import lora_config
from llmmarl.train.advantages import group_relative
from llmmarl.train.algorithm_settings import GRPOSettings
from llmmarl.train.config import TrainConfig
from llmmarl.train.grpo import MultiAgentGRPO
from llmmarl.train.samples import TurnSample, episodes_to_samples
from llmmarl.train.settings import LoraSettings
from llmmarl.train.trl_adapter import AgentGRPOTrainer

TARGET = 1.10  # ours may cost at most this many times TRL's step
ROWS = {"ours": "ours (AgentGRPO)", "trl": "TRL as-is", "trl_our_logps": "TRL + our logprobs"}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default", help="base model: default (SmolLM2-135M), tiny, a folder or hub id")
    p.add_argument("--env", default="tictactoe_v3", help="game whose turns become the samples")
    p.add_argument("--games", type=int, default=16, help="games played (vs random) to collect samples")
    p.add_argument("--samples", type=int, default=32, help="samples per optimizer step (cycled if fewer)")
    p.add_argument("--micro-batch", type=int, default=8, help="samples per forward/backward; must divide --samples")
    p.add_argument(
        "--num-generations", type=int, default=4, help="TRL's group size (>= 2, divides --samples); no effect on work"
    )
    p.add_argument("--steps", type=int, default=5, help="timed optimizer steps per trainer, after one warm-up step")
    p.add_argument(
        "--rounds", type=int, default=1, help="repeat the measurements, alternating which trainer goes first"
    )
    p.add_argument("--max-new-tokens", type=int, default=48, help="answer budget of the sample games")
    p.add_argument("--lora-r", type=int, default=16, help="LoRA rank of every adapter")
    p.add_argument(
        "--skip-trl-as-is", action="store_true", help="skip the TRL as-is row (its logprob path is slow on CPU)"
    )
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads; default: torch's choice")
    p.add_argument("--device", default=None, help="cpu or cuda; default: cuda if available")
    p.add_argument("--seed", type=int, default=0, help="seeds the games, sampling and adapter initialisation")
    p.add_argument("--out", type=Path, default=Path("benchmarks/grpo_overhead.json"), help="JSON of the figures")
    args = p.parse_args()
    if args.samples % args.micro_batch:
        p.error("--micro-batch must divide --samples (TRL's accumulation steps are samples / micro-batch)")
    if args.num_generations < 2 or args.samples % args.num_generations:
        p.error("--num-generations must be >= 2 and divide --samples (TRL's generation batch is --samples)")
    return args


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def sync() -> None:
    """Wait for queued GPU work, so a timestamp counts it (a no-op on CPU)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


# ---- 1. the samples: real turns of real games, with rewards and advantages --------------------------------------
def make_config(args: argparse.Namespace, output_dir: str) -> TrainConfig:
    """One learner vs random, decoding and loss settings as in configs/train_tictactoe_vs_random.yaml."""
    return TrainConfig(
        env=args.env,
        model=args.model,
        setting="fixed_opponents",
        learners=[{"name": "ours", "lora": {"r": args.lora_r, "alpha": 2 * args.lora_r}}],
        opponents=["random"],
        games_per_update=args.games,
        group_size=1,
        grpo={"credit": "role"},
        constrained=True,  # well-formed answers of realistic length even from an untrained (or random) model
        max_new_tokens=args.max_new_tokens,
        temperature=1.0,
        learning_rate=1e-4,
        micro_batch_size=args.micro_batch,
        steps=args.steps + 1,
        output_dir=output_dir,
        eval_games=0,
        threads=args.threads,
        device=args.device,
        seed=args.seed,
    )


def make_samples(grpo: MultiAgentGRPO, n: int) -> list[TurnSample]:
    """``n`` samples of the learner from one rollout (cycled if it gave fewer), advantages assigned."""
    cfg = grpo.cfg
    episodes, _ = grpo.rollout()
    found = episodes_to_samples(
        episodes, grpo.learners, cfg.rewards.as_dict(), grpo.env.forfeit_reward, cfg.group_size, cfg.train_on
    )["ours"]
    if not found:
        raise RuntimeError("the games gave no trainable samples: play more games (--games)")
    group_relative(found, cfg.settings_of(GRPOSettings).credit, cfg.normalize_advantages)
    return [found[i % len(found)] for i in range(n)]


def model_tokens(samples: Sequence[TurnSample], micro_batch: int) -> dict[str, int]:
    """Token positions through the model per step: real ones, and with each trainer's padding.

    Ours sorts by length and pads each micro-batch to its own longest prompt + completion. TRL pads the whole
    generation batch (all samples of the step) to the longest prompt + longest completion, then slices it.
    """
    ordered = sorted(samples, key=lambda s: len(s.prompt_ids) + len(s.completion_ids))
    ours = 0
    for lo in range(0, len(ordered), micro_batch):
        chunk = ordered[lo : lo + micro_batch]
        ours += len(chunk) * (max(len(s.prompt_ids) for s in chunk) + max(len(s.completion_ids) for s in chunk))
    trl = len(samples) * (max(len(s.prompt_ids) for s in samples) + max(len(s.completion_ids) for s in samples))
    real = sum(len(s.prompt_ids) + len(s.completion_ids) for s in samples)
    return {"real": real, "ours_padded": ours, "trl_padded": trl}


# ---- 2. ours: what MultiAgentGRPO.update runs for each learner ----------------------------------------------------
def time_ours(trainer: AgentGRPOTrainer, samples: list[TurnSample], micro_batch: int, steps: int) -> list[float]:
    seconds = []
    for step in range(steps + 1):
        sync()
        t0 = time.perf_counter()
        trainer.update(samples, micro_batch)
        sync()
        if step > 0:  # step 0 warms up allocations and kernel choices
            seconds.append(time.perf_counter() - t0)
    return seconds


# ---- 3. TRL's own loop, fed the same token ids ------------------------------------------------------------------
class SampleServer:
    """TRL's ``rollout_func``: hands out the samples in order, as many as TRL asks for (one step's worth)."""

    def __init__(self, samples: list[TurnSample]) -> None:
        self.samples = samples
        self.served = 0

    def __call__(self, prompts: list[Any], trainer: GRPOTrainer) -> dict[str, list[Any]]:
        # TRL asks once per optimizer step for its whole generation batch; anything else is not the same work.
        if len(prompts) != len(self.samples):
            raise RuntimeError(f"TRL asked for {len(prompts)} completions per step, ours trains {len(self.samples)}")
        self.served += len(prompts)
        return {
            "prompt_ids": [s.prompt_ids for s in self.samples],
            "completion_ids": [s.completion_ids for s in self.samples],
            "logprobs": [s.logprobs for s in self.samples],
            "reward": [s.reward for s in self.samples],  # an extra column: TRL passes it to the reward functions
        }


def sample_reward(completions: list[Any], **columns: Any) -> list[float | None]:
    """The sample's own (weighted) reward, served by :class:`SampleServer`."""
    return [float(r) for r in columns["reward"]]


class StepTimer(TrainerCallback):
    """Seconds of each optimizer step of ``Trainer.train()``, from ``on_step_begin`` to ``on_step_end``."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._t0 = 0.0

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        sync()
        self._t0 = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        sync()
        self.seconds.append(time.perf_counter() - self._t0)


class GRPOTrainerWithOurLogps(GRPOTrainer):
    """TRL's GRPOTrainer with nothing of ours but the completion-only logprob path."""

    def _get_per_token_logps_and_entropies(self, *args: Any, **kwargs: Any) -> Any:
        # Ours defers to TRL's own path off CPU; its super() call needs an AgentGRPOTrainer, so defer here instead.
        if self.accelerator.device.type != "cpu":
            return super()._get_per_token_logps_and_entropies(*args, **kwargs)
        borrowed: Callable[..., Any] = AgentGRPOTrainer._get_per_token_logps_and_entropies
        return borrowed(self, *args, **kwargs)


def ours_grpo_config(grpo: MultiAgentGRPO) -> GRPOConfig:
    """The GRPOConfig our learner's trainer runs with (built by ``grpo_args``)."""
    config = grpo.trainers["ours"].args
    assert isinstance(config, GRPOConfig)
    return config


def trl_args(ours: GRPOConfig, args: argparse.Namespace, output_dir: str) -> GRPOConfig:
    """Our learner's settings (loss, temperature, lr, clipping...), with TRL batching one step's samples itself."""
    return replace(
        ours,
        output_dir=output_dir,
        per_device_train_batch_size=args.micro_batch,
        gradient_accumulation_steps=args.samples // args.micro_batch,
        num_generations=args.num_generations,
        generation_batch_size=None,  # recomputed: per-device batch * accumulation = the samples of one step
        steps_per_generation=None,
        max_steps=args.steps + 1,
        reward_weights=None,  # one reward function: the samples' weighted reward
        report_to=[],
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
    )


def settings_differences(ours: GRPOConfig, trl: GRPOConfig) -> dict[str, list[Any]]:
    """Settings that differ between the trainers: should be batch shape and bookkeeping only."""
    a, b = ours.to_dict(), trl.to_dict()
    keys = sorted((set(a) | set(b)) - {"output_dir", "logging_dir"})  # scratch folders, not settings
    return {k: [a.get(k), b.get(k)] for k in keys if a.get(k) != b.get(k)}


def time_trl(
    trainer_cls: type[GRPOTrainer],
    grpo: MultiAgentGRPO,
    adapter: str,
    lora: LoraSettings,
    samples: list[TurnSample],
    args: argparse.Namespace,
    output_dir: str,
) -> tuple[list[float], int]:
    """Train a fresh adapter ``adapter`` for ``args.steps + 1`` steps with TRL's loop; drop the first step."""
    model = grpo.model
    with torch.random.fork_rng():  # the same initialisation as our learner's adapter
        torch.manual_seed(grpo.cfg.seed)
        model.add_adapter(adapter, lora_config(lora))
    model.set_adapter(adapter)  # TRL's optimizer takes the parameters that require grad: this adapter's only
    # Prompts only decide how many rows TRL asks for per step: the served token ids are what is trained on.
    rows_per_step = len(samples) // args.num_generations
    dataset = Dataset.from_dict({"prompt": [samples[i % len(samples)].messages for i in range(rows_per_step)]})
    server = SampleServer(samples)
    timer = StepTimer()
    # Built right before its trainer: a new TrainingArguments resets accelerate's process-wide state, which only
    # the next trainer's Accelerator sets up again (building it earlier would break the trainer built before it).
    config = trl_args(ours_grpo_config(grpo), args, output_dir)
    trainer = trainer_cls(
        model=model,
        reward_funcs=[sample_reward],
        args=config,
        train_dataset=dataset,
        processing_class=grpo.engine.backend.tokenizer,
        rollout_func=server,
        callbacks=[timer],
    )
    trainer.remove_callback(PrinterCallback)  # the end-of-training summary would break the table
    trainer.train()
    if server.served != len(samples) * config.max_steps:
        raise RuntimeError(f"TRL was served {server.served} samples, expected {len(samples)} x {config.max_steps}")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    model.set_adapter(grpo.learners[0])  # deleting the active adapter would make PEFT pick one and warn
    model.delete_adapter(adapter)  # each run starts fresh; adapters of earlier rounds would only take memory
    return timer.seconds[1:], trainable


# ---- rounds: alternate the order, so that a machine getting busier or quieter favours no trainer ---------------
def measure_round(
    rnd: int, grpo: MultiAgentGRPO, samples: list[TurnSample], args: argparse.Namespace, output_dir: str
) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Timed steps and trainable parameters of every trainer; even rounds run ours first, odd rounds last."""
    lora = grpo.cfg.learners[0].lora
    trl_classes = {"trl": GRPOTrainer, "trl_our_logps": GRPOTrainerWithOurLogps}
    if args.skip_trl_as_is:
        del trl_classes["trl"]
    order = ["ours", *trl_classes]
    seconds: dict[str, list[float]] = {}
    trainable: dict[str, int] = {}
    for name in order if rnd % 2 == 0 else order[::-1]:
        if name == "ours":
            seconds[name] = time_ours(grpo.trainers["ours"], samples, args.micro_batch, args.steps)
            trainable[name] = sum(p.numel() for p in grpo.model.parameters() if p.requires_grad)  # "ours" active
        else:
            seconds[name], trainable[name] = time_trl(
                trl_classes[name], grpo, f"{name}_{rnd}", lora, samples, args, str(Path(output_dir) / name)
            )
    return seconds, trainable


# ---- 4. report --------------------------------------------------------------------------------------------------
def summary(seconds: list[float], samples: int) -> dict[str, Any]:
    median = statistics.median(seconds)
    return {"median_s": median, "min_s": min(seconds), "samples_per_s": samples / median, "seconds": seconds}


def print_table(rows: dict[str, dict[str, Any]]) -> dict[str, float]:
    """The table of seconds per step; returns ours / each TRL row."""
    ours = rows["ours"]["median_s"]
    ratios = {f"ours_vs_{name}": ours / r["median_s"] for name, r in rows.items() if name != "ours"}
    print(f"\n{'trainer':<22}{'s/step (median)':>16}{'samples/s':>11}{'ours / this':>13}")
    for name, r in rows.items():
        ratio = ratios.get(f"ours_vs_{name}")
        shown = f"{ratio:.3f}x" if ratio is not None else "-"
        print(f"{ROWS[name]:<22}{r['median_s']:>16.3f}{r['samples_per_s']:>11.2f}{shown:>13}")
    verdict = "meets" if ratios["ours_vs_trl_our_logps"] <= TARGET else "misses"
    print(f"orchestration overhead (ours vs TRL + our logprobs) {verdict} the {TARGET:.2f}x target")
    return ratios


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    with tempfile.TemporaryDirectory() as tmp:  # trainers want output folders; nothing is kept
        cfg = make_config(args, str(Path(tmp) / "ours"))
        grpo = MultiAgentGRPO(cfg, progress=False)
        samples = make_samples(grpo, args.samples)
        tokens = model_tokens(samples, args.micro_batch)
        prompt_mean = statistics.mean(len(s.prompt_ids) for s in samples)
        completion_mean = statistics.mean(len(s.completion_ids) for s in samples)
        print(
            f"{args.samples} samples: {prompt_mean:.0f} prompt + {completion_mean:.0f} completion tokens on average;"
            f" positions per step: {tokens['real']} real, padded {tokens['ours_padded']} ours,"
            f" {tokens['trl_padded']} TRL"
        )

        seconds: dict[str, list[float]] = {}
        trainable: dict[str, int] = {}
        for rnd in range(args.rounds):
            got, params = measure_round(rnd, grpo, samples, args, tmp)
            for name, s in got.items():
                seconds.setdefault(name, []).extend(s)
            trainable |= params
        ours_config = ours_grpo_config(grpo)
        differences = settings_differences(ours_config, trl_args(ours_config, args, str(Path(tmp) / "trl")))
    if len(set(trainable.values())) != 1:
        raise RuntimeError(f"the trainers train different numbers of parameters: {trainable}")

    rows = {name: summary(seconds[name], args.samples) for name in ROWS if name in seconds}  # table order
    ratios = print_table(rows)
    report = {
        "machine": machine_info(grpo.engine.backend.device),
        "model": args.model,
        "env": args.env,
        "samples": args.samples,
        "micro_batch": args.micro_batch,
        "accumulation_steps": args.samples // args.micro_batch,
        "num_generations": args.num_generations,
        "steps": args.steps,
        "rounds": args.rounds,
        "warmup_steps_per_round": 1,
        "lora_r": args.lora_r,
        "trainable_params": trainable["ours"],
        "prompt_tokens_mean": prompt_mean,
        "completion_tokens_mean": completion_mean,
        "positions_per_step": tokens,
        "settings_ours_vs_trl": differences,
        "rows": rows,
        "ratios": ratios,
        "target": TARGET,
        "meets_target": ratios["ours_vs_trl_our_logps"] <= TARGET,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
