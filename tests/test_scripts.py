"""The reference scripts run end to end (tiny model, smoke budgets): they are documentation that must not rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_script(name: str, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TRL_EXPERIMENTAL_SILENCE": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / name), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        cwd=ROOT,
    )
    if ok and proc.returncode != 0:
        pytest.fail(f"{name} {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def smoke(script: str, out: Path, *extra: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    """``script`` on its smoke budget with the tiny model, writing to ``out``."""
    return run_script(script, "--smoke", "--model", "tiny", "--output-dir", str(out), *extra, ok=ok)


@pytest.mark.parametrize("script", ["train_tictactoe_selfplay.py", "train_signal.py", "train_kuhn.py"])
def test_a_training_script_runs_end_to_end_and_exports_its_adapter(script, tmp_path):
    out = tmp_path / "run"
    proc = smoke(script, out)
    manifest = json.loads((out / "adapters" / "manifest.json").read_text())
    for entry in manifest["adapters"]:
        assert (out / "adapters" / entry["path"] / "adapter_config.json").is_file()
        assert entry["steps"] == 2
    assert "95% CI" in proc.stdout


def test_a_finished_run_can_be_evaluated_again_on_more_games_but_not_trained_over(tmp_path):
    out = tmp_path / "run"
    smoke("train_tictactoe_selfplay.py", out)
    proc = smoke("train_tictactoe_selfplay.py", out, "--eval-only", "--eval-games", "12")
    assert "resumed at update 2" in proc.stdout
    # the adapter, random in its seat and the base model, all on the new number of games
    assert proc.stdout.count("over 12 games") == 3
    assert "random-seat vs random" in proc.stdout and "trained beats random with non-overlapping 95% CIs" in proc.stdout
    # the library's run guards the folder: training again without --resume would mix two runs' checkpoints
    again = run_script("train_tictactoe_selfplay.py", "--model", "tiny", "--output-dir", str(out), ok=False)
    assert again.returncode != 0
    assert "already has checkpoints" in again.stderr and "Traceback" not in again.stderr


def test_evaluating_a_run_that_does_not_exist_is_a_clear_error(tmp_path):
    proc = smoke("train_tictactoe_selfplay.py", tmp_path / "none", "--eval-only", ok=False)
    assert proc.returncode != 0
    assert "no checkpoint" in proc.stderr and "Traceback" not in proc.stderr


def test_gpu_check_says_how_to_run_without_a_gpu(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: scripts/gpu_check.sh runs for real")
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 2 and "pass --cpu" in proc.stdout


def test_gpu_check_synthetic_tokenizer_has_the_real_shape(tmp_path: Path) -> None:
    """Without the real model's files, the check trains a tokenizer of SmolLM2's size and special tokens."""
    from transformers import AutoTokenizer

    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import gpu_check
    finally:
        sys.path.pop(0)
    gpu_check._synthetic_tokenizer(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    assert len(tok) == gpu_check.SMOLLM2_135M["vocab_size"]
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (1, 2, 2)
    ids = tok.apply_chat_template([{"role": "user", "content": "Legal actions: 1, 2"}], add_generation_prompt=True)
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    assert ids[0] == 1 and "Legal actions: 1, 2" in tok.decode(ids)
    assert tok.decode([49151]).startswith("<r")  # a padding entry: it decodes like any token


def test_bench_learner_times_both_paths_on_real_prompts(tmp_path):
    out = tmp_path / "learner.json"
    args = ["--model", "tiny", "--envs", "kuhn_poker", "--turns", "action", "--samples", "4", "--micro-batch", "4"]
    run_script("bench_learner.py", *args, "--max-new-tokens", "40", "--threads", "1", "--out", str(out))
    rows = json.loads(out.read_text())["rows"]
    assert [r["algorithm"] for r in rows] == ["grpo", "ppo"]
    for r in rows:
        assert r["env"] == "kuhn_poker" and r["samples"] == 4 and r["prompt_tokens_mean"] > 100
        assert r["full"]["samples_per_s"] > 0 and r["shared_prefix"]["samples_per_s"] > 0 and r["ratio"] > 0
        # The prompts share their rules: the shared path feeds the model fewer positions.
        assert r["model_positions"]["shared_prefix"] < r["model_positions"]["full"]
