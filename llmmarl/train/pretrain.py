"""FORECAST pre-training: a supervised phase before RL that teaches each learner's adapter to forecast.

Transition pre-training as in SPA (Chen et al. 2025, world-model learning before RL) and Early Experience (Zhang et
al. 2025, implicit world modelling): before the first update, each learner's LoRA adapter is trained by plain
cross-entropy to answer the FORECAST line of recorded decisions of its seats with what then happened (the examples
and why realised outcomes are the right targets: :mod:`llmmarl.train.pretrain_data`). Only the FORECAST value's
tokens carry loss; the ACTION of the recorded (often random) player is never imitated.

It runs once, from :meth:`~llmmarl.train.loop.MultiAgentTrainer.train` of a fresh run (step 0), and is recorded in
the checkpoints (``pretrained``), so a resumed run does not pre-train again. The trainer writes a ``pretrain`` row to
``metrics.jsonl`` with each learner's held-out loss before and after, the examples and the seconds.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from llmmarl.agents.specs import LLMAgentSpec
from llmmarl.envs import make
from llmmarl.envs.base import TextEnv
from llmmarl.records import EpisodeRecord
from llmmarl.train.adapters import adapter_parameters
from llmmarl.train.config import TrainConfig
from llmmarl.train.logprobs import answer_logits, answer_rows
from llmmarl.train.metrics import Metrics
from llmmarl.train.pretrain_data import ForecastExample, build_examples, random_games, recorded_games
from llmmarl.train.settings import PretrainSettings


def forecast_loss(
    model: torch.nn.Module, batch: Sequence[ForecastExample], pad_id: int, device: str, shared_prefix: bool = False
) -> tuple[torch.Tensor, int, int]:
    """Summed cross-entropy of the FORECAST value tokens of ``batch`` under the active adapter, their count, and the
    examples whose every value token is the model's most likely one (greedy decoding would write the target).
    ``shared_prefix``: compute the prompt tokens the examples share once (see :mod:`llmmarl.train.logprobs`)."""
    rows = answer_rows([(x.prompt_ids, x.answer_ids) for x in batch], pad_id, device)
    logits = answer_logits(model, rows, shared_prefix).float()  # (B, K, V), fp32 even when the model runs in bf16
    targets = rows.input_ids[:, -rows.k :]  # (B, K)
    mask = torch.zeros_like(rows.mask, dtype=torch.bool)  # (B, K): answers are right-aligned, so are their masks
    for i, x in enumerate(batch):
        mask[i, rows.k - len(x.value_mask) :] = torch.tensor(x.value_mask, device=mask.device)
    loss = torch.nn.functional.cross_entropy(logits[mask], targets[mask], reduction="sum")
    hits = (logits.argmax(-1) == targets) | ~mask
    return loss, int(mask.sum()), int(hits.all(-1).sum())


@torch.no_grad()
def held_out_loss(
    model: torch.nn.Module,
    examples: Sequence[ForecastExample],
    batch_size: int,
    pad_id: int,
    device: str,
    shared_prefix: bool = False,
) -> tuple[float, float]:
    """Mean cross-entropy per FORECAST value token over ``examples``, and the share of them written exactly by
    greedy decoding (teacher-forced)."""
    total, tokens, exact = 0.0, 0, 0
    for start in range(0, len(examples), batch_size):
        loss, n, hits = forecast_loss(model, examples[start : start + batch_size], pad_id, device, shared_prefix)
        total, tokens, exact = total + float(loss), tokens + n, exact + hits
    return total / max(tokens, 1), exact / max(len(examples), 1)


def split_by_game(
    examples: Sequence[ForecastExample], share: float, rng: random.Random
) -> tuple[list[ForecastExample], list[ForecastExample]]:
    """(train, held out): the examples of a ``share`` of the games (at least one, never all) are held out; turns of
    one game are not independent, so a game is never split."""
    games = sorted({x.game_id for x in examples}, key=str)
    if len(games) < 2:
        raise ValueError(
            f"pretrain needs decisions of the learners' seats in at least 2 games to hold some out; got {len(games)}"
        )
    rng.shuffle(games)
    held = set(games[: min(len(games) - 1, max(1, round(share * len(games))))])
    return [x for x in examples if x.game_id not in held], [x for x in examples if x.game_id in held]


def gather_games(cfg: TrainConfig, settings: PretrainSettings) -> list[EpisodeRecord]:
    """The recorded games (``records``) and the fresh random ones (``games``), on a game instance of their own."""
    env = make(cfg.env, **cfg.env_kwargs)
    try:
        episodes = recorded_games(settings.records, env) if settings.records else []
        return episodes + random_games(env, settings.games, cfg.seed)
    finally:
        env.close()


def pretrain(
    cfg: TrainConfig,
    env: TextEnv,
    model: Any,  # a PEFT model with one adapter per learner
    tokenizer: Any,
    specs: Sequence[LLMAgentSpec],
    device: str,
    progress: bool = True,
) -> dict[str, Metrics]:
    """Pre-train every learner's adapter to forecast (see the module docs); ``specs``: the learners as training
    decodes them, in ``cfg.learners``' order. Returns each one's metrics."""
    settings = cfg.pretrain
    assert settings is not None and settings.enabled
    t0 = time.perf_counter()
    episodes = gather_games(cfg, settings)
    pad = tokenizer.pad_token_id  # never None: the backend sets it (to eos) when the model has none
    results: dict[str, Metrics] = {}
    for lr, spec in zip(cfg.learners, specs, strict=True):
        t1 = time.perf_counter()
        seats = lr.seats or env.possible_agents
        examples, skipped = build_examples(env, spec, seats, episodes, tokenizer, cfg.seed)
        rng = random.Random(f"{cfg.seed}/pretrain/{lr.name}")
        train, held = split_by_game(examples, settings.held_out, rng)
        model.set_adapter(lr.name)  # PEFT: this adapter's weights are the trainable ones
        model.eval()
        before, exact_before = held_out_loss(model, held, cfg.micro_batch_size, pad, device, cfg.shared_prefix)
        bar = tqdm(
            total=settings.epochs * -(-len(train) // settings.batch_size),
            desc=f"pretrain {lr.name}",
            unit="step",
            disable=not progress,
        )
        with bar:
            steps, train_loss = train_adapter(model, lr.name, train, cfg, pad, device, rng, bar)
        after, exact_after = held_out_loss(model, held, cfg.micro_batch_size, pad, device, cfg.shared_prefix)
        results[lr.name] = {
            "games": len(episodes),
            "examples": len(train),
            "held_out_examples": len(held),
            "skipped_decisions": skipped,
            "value_tokens": sum(sum(x.value_mask) for x in examples),
            "steps": steps,
            "loss_before": before,
            "loss_after": after,
            "exact_before": exact_before,
            "exact_after": exact_after,
            "last_train_loss": train_loss,
            "seconds": time.perf_counter() - t1,
        }
        if progress:
            tqdm.write(
                f"pretrain {lr.name}: held-out FORECAST loss {before:.3f} -> {after:.3f}, exact {exact_before:.0%} -> "
                f"{exact_after:.0%} ({len(train)} examples, {len(held)} held out, {time.perf_counter() - t1:.0f} s)"
            )
    return {name: {**m, "total_seconds": time.perf_counter() - t0} for name, m in results.items()}


def train_adapter(
    model: Any,  # a PEFT model
    name: str,
    train: Sequence[ForecastExample],
    cfg: TrainConfig,
    pad: int,
    device: str,
    rng: random.Random,
    bar: tqdm,
) -> tuple[int, float]:
    """``pretrain.epochs`` shuffled passes of AdamW steps on adapter ``name``, each on ``pretrain.batch_size``
    examples in micro-batches of ``micro_batch_size``; returns the steps taken and the last step's loss per value
    token."""
    settings, micro_batch_size = cfg.pretrain, cfg.micro_batch_size
    assert settings is not None
    params = adapter_parameters(model, name)
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate)
    steps, last = 0, 0.0
    model.set_adapter(name)  # PEFT: this adapter's weights are the trainable ones
    model.train()
    try:
        for _ in range(settings.epochs):
            order = list(train)
            rng.shuffle(order)
            for start in range(0, len(order), settings.batch_size):
                batch = order[start : start + settings.batch_size]
                optimizer.zero_grad(set_to_none=True)
                tokens = max(sum(sum(x.value_mask) for x in batch), 1)
                last = 0.0
                for micro in range(0, len(batch), micro_batch_size):  # gradients add up to the batch's
                    chunk = batch[micro : micro + micro_batch_size]
                    loss, _, _ = forecast_loss(model, chunk, pad, device, cfg.shared_prefix)
                    part = loss / tokens  # the batch's mean per value token, whatever the micro-batches
                    part.backward()
                    last += float(part.detach())
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                optimizer.step()
                steps += 1
                bar.update(1)
                bar.set_postfix_str(f"loss {last:.3f}", refresh=False)
    finally:
        model.eval()
    return steps, last
