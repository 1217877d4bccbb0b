"""The CUDA path in its default precision (bfloat16): generation, grammar, prefix cache, mixed adapters, one GRPO and
one PPO update, the Kuhn NashConv reader and the turn-ablation harness. Skipped without a CUDA GPU (see
``conftest.py``); ``scripts/gpu_check.sh`` runs them.

Tolerance. In bfloat16 (8 significant bits) every matmul rounds to ~0.4% of its size, and a KV-cached decode step, a
shared-prefix batch or a mixed-adapter batch rounds in another order than one plain forward pass over prompt and
answer. The log-probs a generation records therefore match a recomputation only to ``BF16_LOGPROB_ATOL``: 0.05
nats, 25x the largest error seen with the tiny model in bf16 (0.002), yet below what a stale prefix or another
adapter gives: the random adapters here move the same tokens' log-probs by 0.3 to 0.6 nats, and the tests assert
that the recorded log-probs are at least ``3 * BF16_LOGPROB_ATOL`` away from every other adapter's.
Exact equalities (mixed batch == separate calls, prefix cache on == off) are the float32 tests of ``test_backend.py``,
which run on CUDA as well.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from llmmarl.backends.base import GenerationRequest
from llmmarl.backends.transformers import TransformersBackend

pytestmark = pytest.mark.gpu

BF16_LOGPROB_ATOL = 0.05  # see the module docs
RULES = "Tic-tac-toe on a 3x3 grid. Players take turns placing their mark; three in a row wins. " * 5
USERS = ["You are player_1.\nLegal actions: 1, 2, 3, 4, 5, 6, 7, 8, 9", "You are player_2.\nLegal actions: 1, 2", "Go."]


def _chat(user: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": f"You play tictactoe_v3.\nRules: {RULES}"}, {"role": "user", "content": user}]


def _save_lora(path: Path, seed: int) -> None:
    """A random (non-zero) LoRA adapter for the tiny model, so it answers differently from the base."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from llmmarl.models import resolve_model

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(resolve_model("tiny"))
    cfg = LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(base, cfg).save_pretrained(path)


@pytest.fixture(scope="module")
def gpu(tmp_path_factory: pytest.TempPathFactory) -> TransformersBackend:
    b = TransformersBackend("tiny", seed=0)  # device and dtype left to the backend: cuda, bfloat16
    for i, name in enumerate(("a", "b")):
        path = tmp_path_factory.mktemp(name)
        _save_lora(path, seed=i)
        b.load_adapter(name, path)
    return b


def _recomputed(b: TransformersBackend, adapter: str | None, prompt: list[int], answer: list[int]) -> torch.Tensor:
    """Log-probs of ``answer`` after ``prompt`` from one plain forward pass under ``adapter`` (None: base), on CPU."""
    ids = torch.tensor([prompt + answer], device=b.device)
    with torch.no_grad():
        if adapter is None:
            with b.model.disable_adapter():
                logits = b.model(ids).logits
        else:
            b.model.set_adapter(adapter)
            logits = b.model(ids).logits
    lp = torch.log_softmax(logits[0, len(prompt) - 1 : -1].float(), -1)
    return lp.gather(1, torch.tensor(answer, device=b.device)[:, None]).squeeze(1).cpu()


def _assert_answered_by(b: TransformersBackend, adapter: str | None, g: Any) -> None:
    """``g``'s recorded log-probs are ``adapter``'s (within the bf16 tolerance) and no other adapter's."""
    recorded = torch.tensor(g.logprobs)
    own = _recomputed(b, adapter, g.prompt_ids, g.completion_ids)
    assert torch.allclose(own, recorded, atol=BF16_LOGPROB_ATOL), (adapter, (own - recorded).abs().max())
    for other in {None, *b.adapters} - {adapter}:
        gap = (_recomputed(b, other, g.prompt_ids, g.completion_ids) - recorded).abs().max()
        assert gap > 3 * BF16_LOGPROB_ATOL, (adapter, other, gap)  # the check can tell the adapters apart


def test_the_backend_runs_on_cuda_in_bf16(gpu: TransformersBackend) -> None:
    params = list(gpu.model.parameters())
    assert all(p.device.type == "cuda" for p in params)
    assert gpu.model.get_base_model().dtype == torch.bfloat16


def test_generation_records_the_models_logprobs(gpu: TransformersBackend) -> None:
    reqs = [GenerationRequest(messages=_chat(u), adapter="a", temperature=1.0, max_new_tokens=16) for u in USERS]
    gpu.prefix_cache = False
    try:
        gens = gpu.generate(reqs)
    finally:
        gpu.prefix_cache = True
    for g in gens:
        assert len(g.logprobs) == len(g.completion_ids) > 0
        assert all(x <= 0.0 for x in g.logprobs)
        _assert_answered_by(gpu, "a", g)


def test_grammar_decoding(gpu: TransformersBackend) -> None:
    pytest.importorskip("xgrammar")
    grammar = 'root ::= "ACTION: " ("1" | "2" | "3" | "10")'
    reqs = [
        GenerationRequest(messages=_chat(u), adapter=a, grammar=grammar if i % 2 else None, max_new_tokens=12)
        for i, (u, a) in enumerate(zip(USERS * 2, ["a", "a", "a", None, None, None], strict=True))
    ]
    gens = gpu.generate(reqs)
    for r, g in zip(reqs, gens, strict=True):
        if r.grammar:
            assert g.text in {"ACTION: 1", "ACTION: 2", "ACTION: 3", "ACTION: 10"}, g.text
    apply = gpu._bitmask_apply
    assert apply.kernel in ("triton", "torch_native")
    print(f"grammar mask kernel on CUDA: {apply.kernel} {apply.note}")


def test_prefix_cache_serves_the_right_keys_and_values(gpu: TransformersBackend) -> None:
    gpu.clear_prefix_cache()
    reqs = [GenerationRequest(messages=_chat(u), adapter="b", temperature=1.0, max_new_tokens=10) for u in USERS]
    shared = gpu.stats["prefix_shared_tokens"]
    first = gpu.generate(reqs)
    hits = gpu.stats["prefix_cache_hit_tokens"]
    again = gpu.generate(reqs)  # the system prompt's keys/values now come from the cache
    assert gpu.stats["prefix_shared_tokens"] > shared and gpu.stats["prefix_cache_hit_tokens"] > hits
    for g in [*first, *again]:
        _assert_answered_by(gpu, "b", g)  # a prefix computed under another adapter, or stale, would not pass


def test_mixed_adapters_in_one_batch(gpu: TransformersBackend) -> None:
    adapters = ["a", None, "b"] * 2
    reqs = [
        GenerationRequest(messages=_chat(USERS[i % 3]), adapter=a, temperature=0.0, max_new_tokens=10)
        for i, a in enumerate(adapters)
    ]
    gpu.prefix_cache = False  # all adapters in one PEFT batch (adapter_names=...)
    before = gpu.stats["batches"]
    try:
        gens = gpu.generate(reqs)
    finally:
        gpu.prefix_cache = True
    assert gpu.stats["batches"] - before == 1
    for r, g in zip(reqs, gens, strict=True):
        _assert_answered_by(gpu, r.adapter, g)  # each row was answered by its own adapter


# ---- one update of each trainer ---------------------------------------------------------------------------------
def _cfg(tmp_path: Path, algorithm: str) -> Any:
    from llmmarl.train.config import TrainConfig

    return TrainConfig.model_validate(
        {
            "model": "tiny",
            "algorithm": algorithm,
            "env": "kuhn_poker",
            "learners": [{"name": "alice", "lora": {"r": 4}}],
            "setting": "fixed_opponents",
            "opponents": ["random"],
            "games_per_update": 4,
            "group_size": 2 if algorithm == "grpo" else 1,
            "steps": 1,
            "constrained": True,
            "max_new_tokens": 64,
            "learning_rate": 1e-2,
            "micro_batch_size": 4,
            "eval_games": 0,
            "output_dir": str(tmp_path / "run"),
        }
    )


def _lora(model: torch.nn.Module, name: str) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters() if f".{name}." in k and "lora_" in k}


def _force_advantages(monkeypatch: pytest.MonkeyPatch) -> None:
    """Random weights make every answer alike (zero advantages, zero gradient): alternate +-0.5 so a step moves."""
    import llmmarl.train.grpo as grpo_module

    real = grpo_module.group_relative

    def assign(samples: list[Any], *args: Any, **kwargs: Any) -> None:
        real(samples, *args, **kwargs)
        for i, s in enumerate(samples):
            s.advantage += 0.5 if i % 2 == 0 else -0.5

    monkeypatch.setattr(grpo_module, "group_relative", assign)


def test_one_grpo_update(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from llmmarl.train.grpo import MultiAgentGRPO

    _force_advantages(monkeypatch)
    trainer = MultiAgentGRPO(_cfg(tmp_path, "grpo"), progress=False)
    assert trainer.engine.backend.device.startswith("cuda")
    before = _lora(trainer.model, "alice")
    assert all(v.device.type == "cuda" for v in before.values())
    logs = trainer.update()
    after = _lora(trainer.model, "alice")
    assert sum(not torch.equal(before[k], after[k]) for k in before) > 0
    assert torch.isfinite(torch.tensor(logs["alice"]["loss"]))


def test_one_ppo_update(tmp_path: Path) -> None:
    from llmmarl.train.ppo import MultiAgentPPO, critic_name

    trainer = MultiAgentPPO(_cfg(tmp_path, "ppo"), progress=False)
    assert all(p.device.type == "cuda" for p in trainer.heads["alice"].parameters())
    before = {n: _lora(trainer.model, n) for n in ("alice", critic_name("alice"))}
    logs = trainer.update()["alice"]
    for name, weights in before.items():
        now = _lora(trainer.model, name)
        assert sum(not torch.equal(weights[k], now[k]) for k in weights) > 0, name
    for key in ("ppo/policy_loss", "ppo/value_loss", "grad_norm"):
        assert torch.isfinite(torch.tensor(logs[key])), key


def test_the_nashconv_reader_and_the_ablation_harness_on_cuda(gpu: TransformersBackend, tmp_path: Path) -> None:
    """The Kuhn policy reader on the bf16 CUDA backend, then the turn-ablation harness's two extreme arms (reactive
    and full) end to end with the tiny model, each learner trained, evaluated and read on the GPU."""
    import json

    from conftest import run_ablation

    from llmmarl.agents.specs import LLMAgentSpec
    from llmmarl.envs.games.kuhn_poker.exploitability import decision_points, evaluate_reading, info_states
    from llmmarl.eval.policy import read_policy

    spec = LLMAgentSpec(name="a", adapter="a", constrained=True, reask=False, max_new_tokens=64)
    reading = read_policy(spec, gpu, decision_points())
    assert set(reading.table()) == {key for key, *_ in info_states()}
    assert all(abs(sum(p) - 1.0) < 1e-9 for p in reading.table().values())
    assert 0.0 <= evaluate_reading(reading).nash_conv <= 3.0

    run_ablation(
        "configs/ablate_kuhn.yaml", tmp_path, "reactive,full", ["train.constrained=true", "train.max_new_tokens=100"]
    )
    for arm in ("reactive", "full"):
        result = json.loads((tmp_path / "runs" / "kuhn" / arm / "seed_0" / "result.json").read_text())
        assert 0.0 <= result["nash_conv"]["kuhn"]["nash_conv"] <= 3.0
        assert result["eval"] and result["train_tokens_per_sample"] > 0
    assert json.loads((tmp_path / "report" / "ablation.json").read_text())["seeds_done"] == 1


def test_the_exact_reader_and_the_probe_suite_on_cuda(gpu: TransformersBackend) -> None:
    """The exact policy reader on the bf16 CUDA backend (an ACTION-only Kuhn agent read exactly, agreeing with
    sampled answers), then the probe suite's runs unchanged: one probe per kind of learner, every algorithm."""
    from collections import Counter

    from llmmarl.agents.specs import LLMAgentSpec
    from llmmarl.envs.games.kuhn_poker.exploitability import BET, decision_points
    from llmmarl.eval.policy import read_policy
    from llmmarl.studies.probes import PROBES, run_probe

    spec = LLMAgentSpec(name="r", temperature=1.0, constrained=True, lines=frozenset(), max_new_tokens=16)
    reading = read_policy(spec, gpu, decision_points())
    assert reading.exact and all(0.0 <= s.mean(BET) <= 1.0 for s in reading.states.values())
    from llmmarl.agents.llm import LLMAgents
    from llmmarl.agents.policy_read import read_decisions
    from llmmarl.envs.games.kuhn_poker.exploitability import KuhnDecisionEnv

    env = KuhnDecisionEnv(0, 1, "")
    env.reset(seed=0)
    decision = LLMAgents(gpu).start(spec, env, env.seat, env.observe(env.seat), [])
    (read,) = read_decisions(gpu, [decision])
    n = 1000
    counts = Counter(g.text for g in gpu.generate([decision.ask(seed=s) for s in range(n)]))
    for label, p in read.probs.items():  # 99.9% binomial intervals (bf16 logits: a little wider)
        assert abs(counts[f"ACTION: {label}"] / n - p) <= 3.29 * (p * (1 - p) / n) ** 0.5 + 0.02, (label, p, counts)
    for probe, algorithms in (("bandit", ("grpo", "rloo", "ppo")), ("coordination", ("ppo_central",))):
        for algorithm in algorithms:
            r = run_probe(PROBES[probe], algorithm, "tiny", updates=2, read_every=1, overrides=["games_per_update=8"])
            # A run stops once it reaches the threshold, which the tiny recipe can do after one update.
            assert 1 <= r.updates <= 2 and len(r.curve) == r.updates + 1 and all(0.0 <= v <= 1.0 for _, v in r.curve)


def test_the_shared_prefix_pass_scores_as_full_rows_in_bf16(tmp_path: Path) -> None:
    """GRPO's log-probs through the shared-prefix pass (three cached passes) against TRL's full rows, on CUDA in
    bfloat16: equal to the bf16 tolerance (float32 equality, loss and gradients: ``test_shared_prefix.py``)."""
    from test_shared_prefix import _completion_mask, _samples

    from llmmarl.train.grpo import MultiAgentGRPO

    trainer = MultiAgentGRPO(_cfg(tmp_path, "grpo"), progress=False)
    learner = trainer.trainers["alice"]
    samples = _samples(trainer.tokenizer)
    learner.shared_prefix = False
    full = learner._rollout_logps(samples)
    learner.shared_prefix = True
    shared = learner._rollout_logps(samples)
    assert shared.device.type == "cuda" and shared.shape == full.shape
    mask = _completion_mask(samples, full.shape[1]).to(full.device)
    assert float((shared - full)[mask].abs().max()) < BF16_LOGPROB_ATOL
