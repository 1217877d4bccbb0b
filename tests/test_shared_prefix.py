"""The shared-prefix learner pass (``shared_prefix: true``) against full rows: the same per-token log-probs, loss and
LoRA gradients, through the real GRPO and PPO trainer code on the tiny model.

The samples share a long chat prompt (the rules), differ after it (the observation), and have answers of
different lengths, so the suffixes need left padding, GRPO's completions right padding, and the positions must
continue from the prefix. The LoRA weights are randomised first: a fresh adapter's B is zero, which would leave
every gradient of A zero and the comparison half blind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from llmmarl.train import logprobs
from llmmarl.train.config import TrainConfig
from llmmarl.train.logprobs import answer_rows, shared_prefix_length
from llmmarl.train.samples import TERMS, TurnSample

RULES = (
    "You play a two-player card game with three cards: Jack, Queen and King. Each player antes one chip and gets "
    "one card. Players act in turn: check or bet one chip; after a bet, call or fold. The higher card wins the pot "
    "at showdown. Answer with one line: ACTION: <one legal action>."
)
OBSERVATIONS = [
    "Your card: Jack. History: none.",
    "Your card: King. History: check.",
    "Your card: Queen. History: bet.",
]
ANSWERS = ["ACTION: check", "PLAN: bet if they check\nACTION: bet", "ACTION: fold"]


@pytest.fixture(autouse=True)
def _restore_torch_threads() -> Iterator[None]:  # the trainers run with threads=1, which is process-wide
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _cfg(tmp_path: Path, **kw: Any) -> TrainConfig:
    base: dict[str, Any] = {
        "env": "kuhn_poker",
        "model": "tiny",
        "eval_games": 0,
        "learners": [{"name": "ann", "lora": {"r": 4}}],
        "setting": "fixed_opponents",
        "opponents": ["random"],
        "output_dir": str(tmp_path / "run"),
        "threads": 1,
    }
    return TrainConfig.model_validate({**base, **kw})


def _samples(tokenizer: Any) -> list[TurnSample]:
    out = []
    for i, (obs, answer) in enumerate(zip(OBSERVATIONS * 2, ANSWERS + ANSWERS[::-1], strict=True)):
        messages = [{"role": "system", "content": RULES}, {"role": "user", "content": obs}]
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if not isinstance(prompt, list):  # transformers 5 returns a BatchEncoding
            prompt = list(prompt["input_ids"])
        completion = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        out.append(
            TurnSample(
                learner="ann",
                game_id=i,
                group=i,
                seat="player_0",
                step=0,
                attempt=0,
                messages=messages,  # type: ignore[arg-type]
                prompt_ids=prompt,
                completion_ids=completion,
                logprobs=[-1.0] * len(completion),
                usable=True,
                episode_return=0.0,
                terms={t: 0.0 for t in TERMS},
                advantage=(-1.0) ** i * (1 + i / 4),
            )
        )
    lengths = {len(s.completion_ids) for s in out}
    assert len(lengths) > 1  # answers of different lengths: padding is part of what is compared
    return out


def _randomise_lora(model: Any) -> None:
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)


def _grads(model: Any) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}


def _assert_grads_match(full: dict[str, torch.Tensor], shared: dict[str, torch.Tensor]) -> None:
    assert full.keys() == shared.keys() and len(full) > 0
    for name in full:
        scale = float(full[name].abs().max())
        assert scale > 0, name  # every LoRA weight gets a gradient
        assert float((full[name] - shared[name]).abs().max()) <= 1e-3 * scale + 1e-7, name


def test_shared_prefix_length_stops_where_rows_differ_and_keeps_the_scored_positions() -> None:
    pad = 0
    ids = torch.tensor([[pad, 5, 6, 7, 8, 9], [5, 6, 7, 1, 2, 3], [pad, pad, 5, 6, 7, 4]])
    attention = (ids != pad).long()
    assert shared_prefix_length(ids, attention, keep=1) == 3  # 5 6 7, each row from its own first token
    assert shared_prefix_length(ids, attention, keep=2) == 2  # the last row's 7 gets a logit: not in the prefix
    assert shared_prefix_length(ids[:1], attention[:1], keep=1) == 0  # one row: nothing to share
    assert shared_prefix_length(ids[:, 1:] * 0 + torch.arange(5), torch.ones(3, 5, dtype=torch.long), 1) == 4


def _grpo_pass(trainer: Any, samples: list[TurnSample], shared: bool) -> tuple[float, dict[str, torch.Tensor], Any]:
    """One micro-batch of AgentGRPOTrainer.update (TRL's training_step: its loss, its backward), then the
    per-token log-probs the loss saw, in TRL's layout."""
    model = trainer.model
    trainer.shared_prefix = shared
    model.set_adapter(trainer.adapter)
    model.zero_grad(set_to_none=True)
    trainer.current_gradient_accumulation_steps = 1
    trainer.batch, trainer.old_logps = samples, None
    loss = float(trainer.training_step(model, [{"prompt": s.messages} for s in samples], None))
    grads = _grads(model)
    model.zero_grad(set_to_none=True)
    logps = trainer._rollout_logps(samples)  # (B, K), completions right-padded as TRL pads them
    return loss, grads, logps


def _completion_mask(samples: list[TurnSample], width: int) -> torch.Tensor:
    mask = torch.zeros(len(samples), width, dtype=torch.bool)
    for i, s in enumerate(samples):
        mask[i, : len(s.completion_ids)] = True
    return mask


def test_grpo_shared_prefix_gives_the_same_logprobs_loss_and_lora_gradients(tmp_path: Path) -> None:
    from llmmarl.train.grpo import MultiAgentGRPO

    grpo = MultiAgentGRPO(_cfg(tmp_path), progress=False)
    try:
        trainer = grpo.trainers["ann"]
        assert trainer.shared_prefix  # the config's default reaches the trainer
        _randomise_lora(grpo.model)
        samples = _samples(grpo.tokenizer)
        ids = torch.tensor([s.prompt_ids for s in samples[:2]])
        assert shared_prefix_length(ids, torch.ones_like(ids), keep=2) > 40  # the rules are shared
        full_loss, full_grads, full_logps = _grpo_pass(trainer, samples, shared=False)
        loss, grads, logps = _grpo_pass(trainer, samples, shared=True)
        mask = _completion_mask(samples, full_logps.shape[1])
        assert torch.allclose(logps[mask], full_logps[mask], atol=1e-4, rtol=1e-4)
        assert loss == pytest.approx(full_loss, rel=1e-4, abs=1e-6) and full_loss != 0.0
        _assert_grads_match(full_grads, grads)
    finally:
        grpo.close()


def _ppo_actor_grads(ppo: Any, batch: list[Any], shared: bool) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """MultiAgentPPO._actor_step on ``batch``, its optimizer step replaced by reading the gradients."""
    ppo.cfg.shared_prefix = shared
    seen: dict[str, torch.Tensor] = {}

    def read(max_grad_norm: float) -> float:
        seen.update(_grads(ppo.model))
        ppo.model.zero_grad(set_to_none=True)
        return 0.0

    holder = ppo.actors["ann"]
    holder.step = read
    try:
        metrics = ppo._actor_step("ann", batch)
    finally:
        del holder.step
    return metrics, seen


def test_ppo_shared_prefix_gives_the_same_logprobs_loss_and_lora_gradients(tmp_path: Path) -> None:
    from llmmarl.train.ppo import MultiAgentPPO, PPOSample

    cfg = _cfg(tmp_path, algorithm="ppo", micro_batch_size=8, ppo={"kl_coef": 0.1, "entropy_coef": 0.01})
    ppo = MultiAgentPPO(cfg, progress=False)
    try:
        _randomise_lora(ppo.model)
        samples = _samples(ppo.tokenizer)
        batch = [PPOSample(s, [1, 2, 3], advantage=s.advantage) for s in samples]
        ppo.cfg.shared_prefix = False
        ppo.score_old("ann", batch)  # old and reference log-probs from full rows, for both passes
        ppo._set_mode("ann", train=True)
        full_logp, _, mask = ppo._token_logprobs(batch, entropy=False)
        ppo.cfg.shared_prefix = True
        logp, _, _ = ppo._token_logprobs(batch, entropy=False)
        assert torch.allclose(logp[mask.bool()], full_logp[mask.bool()], atol=1e-4, rtol=1e-4)
        full_metrics, full_grads = _ppo_actor_grads(ppo, batch, shared=False)
        metrics, grads = _ppo_actor_grads(ppo, batch, shared=True)
        for key in ("ppo/policy_loss", "ppo/kl_ref", "entropy"):
            assert metrics[key] == pytest.approx(full_metrics[key], rel=1e-4, abs=1e-6), key
        _assert_grads_match(full_grads, grads)
    finally:
        ppo.close()


def test_the_comparison_detects_a_wrong_position_offset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The equality above is not vacuous: suffix positions off by one make the log-probs differ."""
    from llmmarl.train.ppo import MultiAgentPPO, PPOSample

    ppo = MultiAgentPPO(_cfg(tmp_path, algorithm="ppo"), progress=False)
    try:
        _randomise_lora(ppo.model)
        batch = [PPOSample(s, [1]) for s in _samples(ppo.tokenizer)]
        ppo.cfg.shared_prefix = False
        full, _, mask = ppo._token_logprobs(batch, entropy=False)
        right: Callable[[torch.Tensor, int], torch.Tensor] = logprobs.suffix_position_ids
        monkeypatch.setattr(logprobs, "suffix_position_ids", lambda attention, n: right(attention, n) + 1)
        ppo.cfg.shared_prefix = True
        wrong, _, _ = ppo._token_logprobs(batch, entropy=False)
        assert not torch.allclose(wrong[mask.bool()], full[mask.bool()], atol=1e-4, rtol=1e-4)
    finally:
        ppo.close()


def test_shared_pass_runs_the_common_prefix_and_each_distinct_prompt_once() -> None:
    """What the model is fed: the common prefix as one row, each distinct prompt rest once, then the answers."""
    from transformers import AutoModelForCausalLM

    from llmmarl.models import resolve_model
    from llmmarl.train.logprobs import answer_logits

    model = AutoModelForCausalLM.from_pretrained(resolve_model("tiny"), dtype=torch.float32).eval()
    shapes: list[tuple[int, ...]] = []
    model.get_input_embeddings().register_forward_hook(lambda m, args, out: shapes.append(tuple(args[0].shape)))
    rules = list(range(100, 140))  # 40 shared tokens
    pairs = [([*rules, 7, 8], [20, 21]), ([*rules, 9], [22, 23]), ([*rules, 7, 8], [24, 25])]
    rows = answer_rows(pairs, 0, "cpu")
    with torch.no_grad():
        full = answer_logits(model, rows)
        assert shapes == [(3, 44)]
        shapes.clear()
        shared = answer_logits(model, rows, shared_prefix=True)
    # 40 prefix tokens once; 2 distinct prompt rests (7 8 | 9), padded to 2; the 2-token answers of all 3 rows.
    assert shapes == [(1, 40), (2, 2), (3, 2)]
    assert torch.allclose(shared, full, atol=1e-4)
