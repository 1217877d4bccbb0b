"""FORECAST pre-training before RL: its examples, its loss mask, its training step, resume, and its config checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from llmmarl.agents.specs import LLMAgentSpec
from llmmarl.agents.turn import Turn, parse_turn
from llmmarl.envs import make
from llmmarl.envs.base import ForecastSpec
from llmmarl.records import EpisodeRecord, TurnRecord, outcomes_from_returns
from llmmarl.scoring.forecast import forecast_skill, score_forecast
from llmmarl.train.config import TrainConfig
from llmmarl.train.pretrain_data import build_examples, forecast_value, random_games, recorded_games

ROOT = Path(__file__).resolve().parents[1]
ASKED = frozenset({"PLAN", "PREDICT", "FORECAST", "MESSAGE"})
LINES = ["PLAN", "PREDICT", "FORECAST"]


@pytest.fixture(autouse=True)
def _restore_torch_threads() -> Iterator[None]:  # trainers run with threads=1, which is process-wide
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    from llmmarl.models import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model("tiny"))


def _spec(**kw: Any) -> LLMAgentSpec:
    return LLMAgentSpec(name="ann", adapter="ann", lines=ASKED, **kw)


def _turn(step: int, seat: str, action: str, legal: list[str], **kw: Any) -> TurnRecord:
    return TurnRecord(
        step=step,
        seat=seat,
        player="p",
        observation=f"board at step {step}",
        legal_actions=legal,
        action=action,
        action_id=legal.index(action),
        **kw,
    )


def _episode(env_name: str, turns: list[TurnRecord], returns: dict[str, float], game_id: int = 0) -> EpisodeRecord:
    env = make(env_name)
    return EpisodeRecord(
        game_id=game_id,
        env=env_name,
        seed=0,
        seats=dict.fromkeys(env.possible_agents, "p"),
        teams=dict(env.teams),
        returns=returns,
        outcomes=outcomes_from_returns(returns, env.teams),
        turns=turns,
    )


def _tictactoe_win() -> EpisodeRecord:
    """X (player_1) takes the top row in five moves: 1, 4, 2, 5, 3."""
    cells = [str(i) for i in range(1, 10)]
    moves = [("player_1", "1"), ("player_2", "4"), ("player_1", "2"), ("player_2", "5"), ("player_1", "3")]
    turns, free = [], list(cells)
    for step, (seat, cell) in enumerate(moves):
        turns.append(_turn(step, seat, cell, list(free)))
        free.remove(cell)
    return _episode("tictactoe_v3", turns, {"player_1": 1.0, "player_2": -1.0})


# ---- the target answers ------------------------------------------------------------------------------------------
def test_tictactoe_targets_say_how_the_game_stands_two_moves_later(tokenizer: Any) -> None:
    env = make("tictactoe_v3")
    examples, skipped = build_examples(env, _spec(), env.possible_agents, [_tictactoe_win()], tokenizer, seed=0)
    assert skipped == 0
    # horizon 2 counts the forecasting move: only the last two moves see the end (X wins, so O loses).
    forecasts = [line for x in examples for line in x.answer.splitlines() if line.startswith("FORECAST")]
    assert forecasts == ["FORECAST: continues"] * 3 + ["FORECAST: loss", "FORECAST: win"]
    first = examples[0]
    assert first.answer.splitlines()[0] == "PLAN: play 1"  # this turn's own move, nothing from the future
    assert first.answer.splitlines()[-1] == "ACTION: 1"
    prediction = first.answer.splitlines()[1]
    assert prediction.startswith("PREDICT: player_2=") and prediction.split("=")[1] in [str(i) for i in range(2, 10)]
    # The prompt is the learner's own request: it asks the game's FORECAST question.
    assert env.forecast_spec("player_1").question in first.messages[-1]["content"]
    assert "board at step 0" in first.messages[-1]["content"]
    # Every target is a well-formed turn whose forecast is a perfect one.
    for x, step in zip(examples, range(5), strict=True):
        parsed = parse_turn(x.answer, _tictactoe_win().turns[step].legal_actions, ["player_1", "player_2"])
        assert parsed.turn is not None and parsed.turn.forecast == x.value


def test_kuhn_targets_name_the_card_dealt_at_that_turn(tokenizer: Any) -> None:
    env = make("kuhn_poker")
    turns = [
        _turn(0, "player_0", "bet", ["check", "bet"], forecast_truth="K"),
        _turn(1, "player_1", "call", ["fold", "call"], forecast_truth="J"),
        _turn(2, "player_0", "check", ["check", "bet"]),  # no truth recorded: nothing checks this forecast
    ]
    episode = _episode("kuhn_poker", turns, {"player_0": -2.0, "player_1": 2.0})
    examples, skipped = build_examples(env, _spec(), env.possible_agents, [episode], tokenizer, seed=0)
    assert skipped == 1
    assert [x.answer.splitlines()[2] for x in examples] == ["FORECAST: K", "FORECAST: J"]
    assert examples[1].answer.splitlines()[-1] == "ACTION: call"
    # Only the learner's seats are examples.
    mine, _ = build_examples(env, _spec(), ["player_1"], [episode], tokenizer, seed=0)
    assert [x.seat for x in mine] == ["player_1"]


def test_a_recorded_llm_turn_keeps_its_own_lines_with_the_realised_forecast(tokenizer: Any) -> None:
    env = make("kuhn_poker")
    said = Turn(plan="bet big", predictions={"player_1": "fold"}, forecast="J", action="bet")
    turns = [_turn(0, "player_0", "bet", ["check", "bet"], forecast_truth="Q", turn=said)]
    episode = _episode("kuhn_poker", turns, {"player_0": 1.0, "player_1": -1.0})
    (x,), _ = build_examples(env, _spec(), env.possible_agents, [episode], tokenizer, seed=0)
    assert x.answer == "PLAN: bet big\nPREDICT: player_1=fold\nFORECAST: Q\nACTION: bet"


@pytest.mark.parametrize(
    ("spec", "truth", "value"),
    [
        (ForecastSpec(target="outcome", labels=("win", "draw", "loss")), "draw", "win=0; draw=1; loss=0"),
        (ForecastSpec(target="outcome", labels=("win", "loss")), "win", "win=1; loss=0"),
        (ForecastSpec(target="payoff", scale=2.0), 1.0, "+1"),
        (ForecastSpec(target="payoff", scale=2.0), -0.5, "-0.5"),
        (ForecastSpec(target="payoff", scale=2.0), 0.0, "+0"),
        (ForecastSpec(target="ends_within", labels=("win", "draw", "loss", "continues"), horizon=2), "loss", "loss"),
        (ForecastSpec(target="opponent_card", labels=("J", "Q", "K")), "Q", "Q"),
    ],
)
def test_every_kind_of_target_is_a_perfect_forecast_of_what_happened(
    spec: ForecastSpec, truth: str | float, value: str
) -> None:
    assert forecast_value(spec, truth) == value
    assert forecast_skill(score_forecast(value, spec, truth), spec) == 1.0


# ---- the loss mask -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("game", ["tictactoe_v3", "kuhn_poker", "rps_v2", "leduc_holdem_v4"])  # every kind
def test_the_loss_mask_covers_exactly_the_forecast_value(game: str, tokenizer: Any) -> None:
    env = make(game)
    episodes = random_games(env, 2, seed=1)
    examples, _ = build_examples(env, _spec(), env.possible_agents, episodes, tokenizer, seed=0)
    assert examples
    for x in examples:
        assert len(x.value_mask) == len(x.answer_ids) and tokenizer.decode(x.answer_ids) == x.answer
        masked = [i for i, m in enumerate(x.value_mask) if m]
        assert masked == list(range(masked[0], masked[-1] + 1))  # one contiguous span
        assert tokenizer.decode([x.answer_ids[i] for i in masked]).strip() == x.value
        before = tokenizer.decode(x.answer_ids[: masked[0]])
        after = tokenizer.decode(x.answer_ids[masked[-1] + 1 :])
        assert before.rstrip().endswith("FORECAST:") and after.startswith("\n") and "ACTION:" in after


@pytest.mark.parametrize("shared_prefix", [False, True])
def test_the_loss_of_a_batch_is_the_sum_of_its_examples_losses(tokenizer: Any, shared_prefix: bool) -> None:
    from transformers import AutoModelForCausalLM

    from llmmarl.models import resolve_model
    from llmmarl.train.pretrain import forecast_loss

    model = AutoModelForCausalLM.from_pretrained(resolve_model("tiny")).eval()
    env = make("tictactoe_v3")
    examples, _ = build_examples(env, _spec(), env.possible_agents, [_tictactoe_win()], tokenizer, seed=0)
    with torch.no_grad():
        whole, tokens, _ = forecast_loss(model, examples, tokenizer.pad_token_id, "cpu", shared_prefix)  # left-padded
        alone = [forecast_loss(model, [x], tokenizer.pad_token_id, "cpu") for x in examples]
    assert tokens == sum(n for _, n, _ in alone) == sum(sum(x.value_mask) for x in examples)
    assert float(whole) == pytest.approx(sum(float(loss) for loss, _, _ in alone), rel=1e-4)


# ---- training -----------------------------------------------------------------------------------------------------
def _cfg(tmp_path: Path, **kw: Any) -> TrainConfig:
    base: dict[str, Any] = {
        "env": "kuhn_poker",
        "model": "tiny",
        "learners": [{"name": "ann", "lora": {"r": 4}}],
        "setting": "fixed_opponents",
        "opponents": ["random"],
        "games_per_update": 2,
        "group_size": 2,
        "steps": 2,
        "max_new_tokens": 16,
        "eval_games": 0,
        "save_every": 1,
        "lines": LINES,
        "threads": 1,
        "output_dir": str(tmp_path / "run"),
        "pretrain": {"games": 10, "epochs": 4, "learning_rate": 2e-2, "batch_size": 4},
    }
    return TrainConfig.model_validate({**base, **kw})


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def _rows(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]


def test_pretraining_lowers_the_held_out_loss_and_changes_only_the_learners_adapter(tmp_path: Path) -> None:
    from llmmarl.train.ppo import MultiAgentPPO

    # PPO: a critic adapter beside the learner's; micro-batches of 2 accumulate each step's 4 examples.
    trainer = MultiAgentPPO(_cfg(tmp_path, algorithm="ppo", micro_batch_size=2), progress=False)
    before = _weights(trainer.model)
    trainer.train(max_updates=0)  # a fresh run pre-trains before its first update
    after = _weights(trainer.model)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(".ann." in k and "lora_" in k for k in changed)
    (row,) = _rows(tmp_path)
    metrics = row["pretrain"]["ann"]
    assert row["step"] == 0 and trainer.state.pretrained
    assert metrics["loss_after"] < metrics["loss_before"]
    assert metrics["examples"] > metrics["held_out_examples"] > 0 and metrics["skipped_decisions"] == 0
    assert metrics["steps"] == 4 * -(-metrics["examples"] // 4)
    assert all(p.device == torch.device(trainer.device) for p in trainer.model.parameters())


def test_a_resumed_run_does_not_pretrain_again(tmp_path: Path) -> None:
    from llmmarl.train.grpo import MultiAgentGRPO

    cfg = _cfg(tmp_path, pretrain={"games": 4, "epochs": 1})
    first = MultiAgentGRPO(cfg, progress=False)
    first.train(max_updates=1)  # pre-trains, then one update, then "killed"
    first.train(max_updates=0)  # a second call on the same trainer does not pre-train either
    state = json.loads((tmp_path / "run" / "checkpoints" / "step-000001" / "state.json").read_text())
    assert state["pretrained"] is True

    second = MultiAgentGRPO(cfg, progress=False)
    assert second.checkpointer.resume() and second.state.pretrained
    second.train()
    assert second.state.step == 2
    rows = _rows(tmp_path)
    assert [r["step"] for r in rows if "pretrain" in r] == [0]
    assert [r["step"] for r in rows if "learners" in r] == [1, 2]
    manifest = json.loads((tmp_path / "run" / "adapters" / "manifest.json").read_text())
    assert manifest["adapters"][0]["config"]["pretrain"]["games"] == 4  # the adapter says it was pre-trained


def test_records_are_read_and_checked_against_the_game(tmp_path: Path, tokenizer: Any) -> None:
    path = tmp_path / "games.jsonl"
    path.write_text("".join(ep.model_dump_json() + "\n" for ep in random_games(make("kuhn_poker"), 3, seed=0)))
    assert len(recorded_games(str(path), make("kuhn_poker"))) == 3
    with pytest.raises(ValueError, match="has games of kuhn_poker; this run plays tictactoe_v3"):
        recorded_games(str(path), make("tictactoe_v3"))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("not json\n")
    with pytest.raises(ValueError, match="holds no episode records"):
        recorded_games(str(empty), make("kuhn_poker"))
    cfg = _cfg(tmp_path, pretrain={"records": str(path)})
    assert cfg.pretrain is not None and cfg.pretrain.enabled


# ---- the config ------------------------------------------------------------------------------------------------------
def test_pretraining_is_off_unless_asked(tmp_path: Path) -> None:
    assert _cfg(tmp_path, pretrain=None).pretrain is None
    off = _cfg(tmp_path, pretrain={"games": 0}, lines=["PLAN"])  # nothing to learn from: off, so FORECAST not needed
    assert off.pretrain is not None and not off.pretrain.enabled


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lines": ["PLAN", "PREDICT"]}, "lines has no FORECAST: add it to lines"),
        ({"pretrain": {"games": 1}}, "1 game leaves none to hold out"),
        ({"pretrain": {"records": "no/such/file.jsonl"}}, "is not a file"),
        ({"pretrain": {"games": 4, "epochs": 0}}, "epochs"),
        ({"pretrain": {"games": 4, "held_out": 1.0}}, "held_out"),
        ({"pretrain": {"games": 4, "epoch": 2}}, "epoch"),  # a misspelt key
    ],
)
def test_a_bad_pretrain_config_is_a_clear_error(tmp_path: Path, changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _cfg(tmp_path, **changes)


def test_an_ablation_arm_can_pretrain_on_its_own() -> None:
    from llmmarl.studies.ablation import AblationConfig

    kuhn = ROOT / "configs" / "ablate_kuhn.yaml"
    arm = "arms.forecast_pretrained={lines: [FORECAST], rewards: {forecast: 0.1}, pretrain: {games: 32}}"
    study = AblationConfig.from_yaml(kuhn, [arm])
    pretrained = study.run_config("forecast_pretrained", 0).pretrain
    assert pretrained is not None and pretrained.games == 32
    assert study.run_config("forecast", 0).pretrain is None  # the other arms are as they were
    with pytest.raises(ValueError, match=r"(?s)arm reactive: .*lines has no FORECAST"):
        AblationConfig.from_yaml(kuhn, ["arms.reactive.pretrain={games: 4}"])


# ---- the reference scripts ---------------------------------------------------------------------------------------
def _script(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TRL_EXPERIMENTAL_SILENCE": "1", "OMP_NUM_THREADS": "1"}
    script = str(ROOT / "scripts" / "train_kuhn.py")
    return subprocess.run([sys.executable, script, *args], capture_output=True, text=True, env=env, timeout=600)


def test_a_script_pretrains_with_set_and_refuses_a_turn_without_forecast(tmp_path: Path) -> None:
    smoke = ["--smoke", "--model", "tiny", "--threads", "1", "--output-dir", str(tmp_path / "run")]
    refused = _script(*smoke, "--set", "pretrain.games=4")  # the recipe's turn has no FORECAST line
    assert refused.returncode == 2 and "lines has no FORECAST" in refused.stderr
    proc = _script(*smoke, "--set", "pretrain.games=4", "--set", "lines=[PLAN,PREDICT,FORECAST]", "--skip-base")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "held-out FORECAST loss" in proc.stderr + proc.stdout
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["step"] == 0 and rows[0]["pretrain"]["kuhn"]["examples"] > 0
    assert [r["step"] for r in rows if "learners" in r] == [1, 2]
