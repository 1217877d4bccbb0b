"""The turn ablation: arms differ only in what is asked; every arm trains with the tiny model; finished runs skip."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import ABLATION_SMOKE, run_ablation

from llmmarl.agents.specs import LLMAgentSpec
from llmmarl.agents.turn import turn_grammar
from llmmarl.envs.base import MessageRules
from llmmarl.studies.ablation import AblationConfig, minimum_detectable_effect, pooled_sd, t_interval

ROOT = Path(__file__).resolve().parent.parent


def test_t_interval_and_detectable_effect_match_known_values() -> None:
    mean, lo, hi = t_interval([1.0, 2.0, 3.0])
    # sd 1, n 3: half-width t_{0.975,2} / sqrt(3) = 4.3027 / 1.7321
    assert mean == 2.0 and hi - mean == pytest.approx(2.4841, abs=1e-4) and mean - lo == pytest.approx(2.4841, abs=1e-4)
    assert math.isnan(t_interval([1.0])[1])
    sd, df = pooled_sd([[1.0, 3.0], [2.0, 4.0, 6.0]])
    assert df == 3 and sd == pytest.approx(math.sqrt((2 + 8) / 3))
    # (t_{0.975,4} + t_{0.8,4}) * sqrt(2/3) = (2.7764 + 0.9410) * 0.8165
    assert minimum_detectable_effect(1.0, 3) == pytest.approx(3.0353, abs=1e-3)
    assert math.isnan(minimum_detectable_effect(1.0, 1))


def test_arms_differ_only_in_lines_and_rewards() -> None:
    study = AblationConfig.from_yaml(ROOT / "configs/ablate_signal.yaml")
    a, b = study.run_config("reactive", 0), study.run_config("full", 0)
    differ = {k for k in type(a).model_fields if getattr(a, k) != getattr(b, k)}
    assert differ == {"lines", "plan_actions", "rewards", "output_dir"}
    assert a.lines == [] and set(b.lines) == {"PLAN", "PREDICT", "FORECAST", "MESSAGE"}
    with pytest.raises(ValueError, match=r"rewards\.prediction is set but lines has no PREDICT"):
        AblationConfig.from_yaml(ROOT / "configs/ablate_signal.yaml", ["arms.reactive.rewards={prediction: 0.1}"])
    with pytest.raises(ValueError, match="set per arm"):
        AblationConfig.from_yaml(ROOT / "configs/ablate_signal.yaml", ["train.seed=3"])


def test_default_lines_keep_the_default_turn_and_reactive_grammar_is_action_only() -> None:
    assert LLMAgentSpec(name="a").asks("PLAN") and not LLMAgentSpec(name="a").asks("FORECAST")
    assert LLMAgentSpec(name="a", forecast=True).asks("FORECAST")
    g = turn_grammar(["1", "2"], (), MessageRules(mode="off"), plan=False, max_tokens=32)
    assert g.splitlines()[0] == "root ::= predict" and "PLAN" not in g and "PREDICT" not in g
    assert turn_grammar(["1"], ["o"], MessageRules()) == turn_grammar(["1"], ["o"], MessageRules(), plan=True)


def test_two_arms_train_report_ask_differently_and_resume(tmp_path: Path) -> None:
    """The fast check (about 2 minutes on a loaded 2-core CPU): reactive and full arms of tic-tac-toe."""
    config = "configs/ablate_tictactoe.yaml"
    out = run_ablation(config, tmp_path, arms="reactive,full")
    summary = json.loads((tmp_path / "report" / "ablation.json").read_text())
    assert set(summary["arms"]) == {"reactive", "full"} and (tmp_path / "report" / "ablation.png").stat().st_size
    assert summary["budget"] == {"updates": 1, "games_per_update": 2} and summary["seeds_done"] == 1
    runs = tmp_path / "runs" / "tictactoe"
    prompt = {a: json.loads((runs / a / "seed_0" / "result.json").read_text())["prompt"] for a in ("reactive", "full")}
    assert prompt["reactive"][-1]["content"].endswith(
        "Reply with exactly these lines:\nACTION: <one of the legal actions>"
    )
    assert "PREDICT:" in prompt["full"][-1]["content"] and "FORECAST:" in prompt["full"][-1]["content"]
    assert "Every turn, act." in prompt["reactive"][0]["content"]
    assert "skipped" not in out
    assert run_ablation(config, tmp_path, arms="reactive,full").count("done, skipped") == 2


@pytest.mark.slow
@pytest.mark.parametrize("config", ["configs/ablate_tictactoe.yaml", "configs/ablate_signal.yaml"])
def test_every_arm_trains_reports_and_resumes(tmp_path: Path, config: str) -> None:
    """Every arm with the tiny model (about 7 minutes per game on a loaded 2-core CPU: one run per arm)."""
    out = run_ablation(config, tmp_path)
    report = tmp_path / "report"
    for name in ("ablation.md", "ablation.json", "ablation.png"):
        assert (report / name).stat().st_size > 0
    summary = json.loads((report / "ablation.json").read_text())
    study = AblationConfig.from_yaml(ROOT / config)
    assert set(summary["arms"]) == set(study.arms)
    assert summary["budget"] == {"updates": 1, "games_per_update": 2}
    for arm in study.arms:
        cell = next(iter(summary["arms"][arm]["lineups"].values()))
        assert cell["tokens_per_turn"]["mean"] > 0  # decoding cost recorded per arm
    prompts = {
        arm: json.loads((tmp_path / "runs" / study.name / arm / "seed_0" / "result.json").read_text())["prompt"][-1][
            "content"
        ]
        for arm in study.arms
    }
    reply = {arm: p.split("Reply with exactly these lines:")[1] for arm, p in prompts.items()}
    assert reply["reactive"].strip() == "ACTION: <one of the legal actions>"
    assert "PREDICT:" in reply["predict"] and "PLAN:" not in reply["predict"]
    assert "FORECAST:" in reply["forecast"] and "PREDICT:" not in reply["forecast"]
    assert "PLAN:" in reply["plan"] and "legal action labels" in reply["plan"]
    assert all(line in reply["full"] for line in ("PLAN:", "PREDICT:", "FORECAST:", "ACTION:"))
    if "message" in study.arms:
        assert "MESSAGE" in reply["message"] and "MESSAGE" in reply["full"] and "MESSAGE" not in reply["predict"]
    assert "skipped" not in out
    again = run_ablation(config, tmp_path)
    assert again.count("done, skipped") == len(study.arms)


def test_a_reactive_agent_is_asked_for_action_only_and_cannot_talk_or_predict_anyway() -> None:
    from conftest import CannedBackend, lowest_legal

    from llmmarl.runner import Match, Runner

    def chatty(request):  # writes every line whatever it was asked
        return f"PLAN: win\nPREDICT: speaker_0=x\nMESSAGE: {lowest_legal(request)}\nACTION: {lowest_legal(request)}"

    backend = CannedBackend(chatty)
    reactive = {s: LLMAgentSpec(name=s, lines=frozenset(), constrained=False) for s in ("speaker_0", "listener_0")}
    talkers = {s: LLMAgentSpec(name=s) for s in ("speaker_0", "listener_0")}
    (quiet,) = Runner(backend, progress=False).play([Match(game_id=0, env="signal_v0", seats=reactive, seed=1)])
    asked = [r.messages for r in backend.requests]
    assert all(m[1]["content"].endswith("lines:\nACTION: <one of the legal actions>") for m in asked)
    assert all(t.message is None and not t.prediction_hits for t in quiet.turns)
    (loud,) = Runner(backend, progress=False).play([Match(game_id=0, env="signal_v0", seats=talkers, seed=1)])
    assert any(t.message is not None for t in loud.turns)


@pytest.mark.vllm
def test_harness_and_nashconv_reader_run_unchanged_on_the_vllm_engine(tmp_path: Path) -> None:
    """Kuhn's reactive and full arms with vLLM rollouts, evaluated and read on the engine (about 5 minutes on CPU).

    The default model (vLLM needs a real checkpoint), under the turn grammar so that the policy read is the model's
    and not the fallback's. The final adapter is then read again in-process: both engines decode greedily in
    float32, so the NashConv and the evaluation must agree.
    """
    from llmmarl.serve import ServeError, find_vllm_python
    from llmmarl.train.grpo import MultiAgentGRPO

    try:
        python = find_vllm_python()
    except ServeError as e:
        pytest.skip(f"no Python with vLLM: {e}")
    config = "configs/ablate_kuhn.yaml"
    extra = (
        "train.model=default",
        "train.constrained=true",
        "train.max_new_tokens=100",  # room for the full turn under the grammar
        "train.rollout_backend=vllm",
        f"train.vllm.python={python}",
        "train.vllm.kv_cache_gib=0.5",
        "train.vllm.max_model_len=2048",
    )
    run_ablation(config, tmp_path, arms="reactive,full", extra=extra)
    summary = json.loads((tmp_path / "report" / "ablation.json").read_text())
    assert set(summary["arms"]) == {"reactive", "full"}
    study = AblationConfig.from_yaml(
        ROOT / config,
        [
            *ABLATION_SMOKE,
            f"output_dir={tmp_path / 'runs'}",
            *extra,
            "train.eval_backend=trainer",
            "train.rollout_backend=transformers",
        ],
    )
    for arm in ("reactive", "full"):
        rows = [json.loads(x) for x in (study.run_dir(arm, 0) / "metrics.jsonl").read_text().splitlines()]
        updates, evals = [r for r in rows if "learners" in r], [r for r in rows if "eval" in r]
        assert updates and all(r["engine"] == "vllm" for r in updates)
        assert evals and all(r["engine"] == "vllm" for r in evals)
        on_engine = evals[-1]["nash_conv"]["kuhn"]["nash_conv"]
        assert 0.0 <= on_engine <= 3.0
        # The same adapter read in-process: the engine served exactly what the learner trained.
        trainer = MultiAgentGRPO(study.run_config(arm, 0), progress=False)
        try:
            assert trainer.checkpointer.resume() and trainer.state.step == 1
            in_process = trainer.evaluator.measure()["nash_conv"]["kuhn"]["nash_conv"]
            assert in_process == pytest.approx(on_engine, abs=1e-9), (arm, in_process, on_engine)
            results = trainer.evaluator.evaluate()
        finally:
            trainer.close()
        for lineup, per_learner in results.items():
            assert per_learner["kuhn"]["return"] == pytest.approx(evals[-1]["eval"][lineup]["kuhn"]["return"]), lineup
