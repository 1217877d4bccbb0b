"""Training: reward terms, credit assignment, lineups, the league, and multi-agent GRPO on the tiny model.

The end-to-end tests use grammar-constrained decoding: the tiny random model's free answers never parse, so every
sample would get the same reward and a zero advantage; under the grammar every answer is legal and the games'
outcomes differ, which gives the learners a real gradient.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import turn_sample
from typer.testing import CliRunner

from llmmarl.agents.specs import LLMAgentSpec, ScriptedAgentSpec
from llmmarl.agents.turn import Turn
from llmmarl.envs import make
from llmmarl.records import Attempt, EpisodeRecord, TurnRecord
from llmmarl.train.advantages import group_relative, imitation_weights
from llmmarl.train.algorithm_settings import GRPOSettings, PPOSettings
from llmmarl.train.config import TrainConfig
from llmmarl.train.league import League, Snapshot
from llmmarl.train.lineup import training_groups
from llmmarl.train.samples import TurnSample, episodes_to_samples, format_term


@pytest.fixture(autouse=True)
def _restore_torch_threads() -> Iterator[None]:  # the end-to-end tests run with threads=1, which is process-wide
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


CONFIGS = sorted((Path(__file__).resolve().parent.parent / "configs").glob("train_*.yaml"))
WEIGHTS = {"game": 1.0, "format": 1.0, "prediction": 0.5, "message": 0.25, "forecast": 0.0, "plan": 0.0}


# ---- reward terms and samples --------------------------------------------------------------------------------
def _attempt(error: str | None = None, finish: str = "stop", n: int = 3) -> Attempt:
    return Attempt(
        messages=[{"role": "user", "content": "your move"}],
        response="...",
        prompt_ids=[1, 2, 3],
        completion_ids=list(range(10, 10 + n)),
        logprobs=[-0.5] * n,
        finish_reason=finish,
        error=error,
    )


NO_LINE = "no ACTION line found. End your answer with 'ACTION: <one legal action>'."
ILLEGAL = "'10' is not a legal action. Legal actions: 1, 2."


def test_format_term_grades_failures() -> None:
    assert format_term(_attempt()) == 0.0
    assert format_term(_attempt(NO_LINE, "length")) == -1.0
    assert format_term(_attempt(NO_LINE, "stop")) == -0.75
    assert format_term(_attempt(ILLEGAL, "length")) == -0.5
    assert format_term(_attempt(ILLEGAL, "stop")) == -0.25


def _turn(step: int, seat: str, player: str, attempts: list[Attempt], **kw: object) -> TurnRecord:
    usable = bool(attempts) and attempts[-1].error is None
    return TurnRecord(
        step=step,
        seat=seat,
        player=player,
        observation="board",
        legal_actions=["1", "2"],
        attempts=attempts,
        turn=Turn(action="1") if usable else None,
        action="1",
        action_id=0,
        fallback=None if usable or not attempts else "random",
        **kw,  # type: ignore[arg-type]
    )


def _episodes() -> list[EpisodeRecord]:
    seats = {"player_1": "a", "player_2": "b"}
    turns = [
        _turn(0, "player_1", "a", [_attempt(NO_LINE, "length"), _attempt()], prediction_hits={"player_2": True}),
        _turn(1, "player_2", "b", [_attempt()], message="hi"),
        _turn(2, "player_1", "a", [_attempt(ILLEGAL), _attempt(NO_LINE, "length")]),  # fell back to a random move
        _turn(3, "player_2", "b", []),  # a scripted turn: nothing to train
    ]
    won = EpisodeRecord(
        game_id=5,
        env="tictactoe_v3",
        seed=1,
        seats=seats,
        teams={"player_1": "player_1", "player_2": "player_2"},
        returns={"player_1": 1.0, "player_2": -1.0},
        outcomes={"player_1": "win", "player_2": "loss"},
        turns=turns,
    )
    broken = won.model_copy(update={"game_id": 6, "error": "step failed", "returns": {}, "outcomes": {}})
    return [won, broken]


def test_each_learner_gets_exactly_its_own_turns() -> None:
    samples = episodes_to_samples(_episodes(), ["a", "b"], WEIGHTS, forfeit_reward=-1.0, group_size=4)
    a, b = samples["a"], samples["b"]
    # a: both answers of turn 0 and both failed answers of turn 2; the broken game gives nothing.
    assert [(s.step, s.attempt, s.usable) for s in a] == [(0, 0, False), (0, 1, True), (2, 0, False), (2, 1, False)]
    assert [(s.step, s.attempt) for s in b] == [(1, 0)]
    assert {s.seat for s in a} == {"player_1"} and {s.seat for s in b} == {"player_2"}
    assert all(s.group == 1 for s in a + b)  # game 5 is in group 5 // 4
    # The usable answer earns the game's return; unusable ones the forfeit reward, whatever the fallback did.
    assert a[1].terms == {"game": 1.0, "format": 0.0, "prediction": 1.0, "message": 0.0, "forecast": 0.0, "plan": 0.0}
    assert a[0].terms == {"game": -1.0, "format": -1.0, "prediction": 0.0, "message": 0.0, "forecast": 0.0, "plan": 0.0}
    assert a[2].terms["format"] == -0.25 and a[2].terms["game"] == -1.0
    assert a[1].reward == pytest.approx(1.0 + 0.5 * 1.0)
    assert b[0].terms == {"game": -1.0, "format": 0.0, "prediction": 0.0, "message": -1.0, "forecast": 0.0, "plan": 0.0}
    assert b[0].reward == pytest.approx(-1.0 - 0.25)
    assert a[1].completion_ids == [10, 11, 12] and a[1].logprobs == [-0.5] * 3 and a[1].prompt_ids == [1, 2, 3]
    final = episodes_to_samples(_episodes(), ["a"], WEIGHTS, -1.0, train_on="final_attempt")["a"]
    assert [(s.step, s.attempt) for s in final] == [(0, 1), (2, 1)]  # one sample per turn: the answer that counted


# ---- credit assignment ------------------------------------------------------------------------------------------
def _samples(rows: list[tuple[str, int, str, float]]) -> list[TurnSample]:
    return [turn_sample(learner, group, seat, reward) for learner, group, seat, reward in rows]


ROWS = [("a", 0, "x", 1.0), ("a", 0, "x", 3.0), ("a", 1, "x", 5.0), ("a", 0, "y", 0.0), ("a", 1, "y", 2.0)]


def _adv(credit: str, normalize: bool = True, rows: list[tuple[str, int, str, float]] = ROWS) -> list[float]:
    samples = _samples(rows)
    group_relative(samples, credit, normalize)  # type: ignore[arg-type]
    return [s.advantage for s in samples]


def test_group_credit_compares_games_of_one_group_and_seat() -> None:
    # (a, 0, x): [1, 3] mean 2, sample std sqrt(2); the other sets have one sample each: advantage 0.
    d = 1 / (math.sqrt(2) + 1e-4)
    assert _adv("group") == pytest.approx([-d, d, 0.0, 0.0, 0.0])


def test_role_credit_has_one_baseline_per_seat() -> None:
    # x: [1, 3, 5] mean 3, std 2; y: [0, 2] mean 1, std sqrt(2).
    d = 1 / (math.sqrt(2) + 1e-4)
    assert _adv("role") == pytest.approx([-2 / 2.0001, 0.0, 2 / 2.0001, -d, d])
    assert _adv("role", normalize=False) == pytest.approx([-2.0, 0.0, 2.0, -1.0, 1.0])


def test_agent_credit_normalises_over_all_samples_of_a_learner() -> None:
    # [1, 3, 5, 0, 2]: mean 2.2, sample variance 14.8 / 4 = 3.7.
    std = math.sqrt(3.7) + 1e-4
    assert _adv("agent") == pytest.approx([(r - 2.2) / std for r in (1.0, 3.0, 5.0, 0.0, 2.0)])


def test_learners_never_share_a_baseline() -> None:
    rows = [("a", 0, "x", 1.0), ("a", 0, "x", 3.0), ("b", 0, "x", 10.0), ("b", 0, "x", 30.0)]
    assert _adv("agent", normalize=False, rows=rows) == pytest.approx([-1.0, 1.0, -10.0, 10.0])


def test_role_baseline_moving_average() -> None:
    baselines: dict[str, float] = {}
    first = _samples([("a", 0, "x", 1.0), ("a", 0, "x", 5.0)])
    group_relative(first, "role", normalize=False, role_baselines=baselines, ema=0.5)
    assert [s.advantage for s in first] == [-2.0, 2.0] and baselines == {"a/x": 3.0}
    second = _samples([("a", 0, "x", 7.0)])
    group_relative(second, "role", normalize=True, role_baselines=baselines, ema=0.5)
    assert baselines == {"a/x": 5.0}  # 0.5 * 3 + 0.5 * 7
    assert second[0].advantage == pytest.approx(2.0)  # one sample: no spread to divide by


# ---- league and lineups ---------------------------------------------------------------------------------------
def test_imitation_weights_keep_all_but_clearly_worse_answers() -> None:
    samples = episodes_to_samples(_episodes(), ["a", "b"], WEIGHTS, forfeit_reward=-1.0)["a"]
    for s, adv in zip(samples, [2.0, 0.0, -1.0, -3.0], strict=True):
        s.advantage = adv
    imitation_weights(samples)
    assert [s.advantage for s in samples] == [2.0, 1.0, 0.5, 0.0]


def test_league_keeps_newest_and_prefers_opponents_per_sampling() -> None:
    league = League(pool_size=2, sampling="win_rate")
    for step in range(3):
        league.add(Snapshot(name=f"a-s{step}", learner="a", step=step, path=f"/tmp/a-s{step}"))
    assert [s.name for s in league.snapshots] == ["a-s1", "a-s2"]
    for _ in range(4):
        league.record("a-s1", 1.0)  # the learner always beats s1
        league.record("a-s2", 0.0)  # and always loses to s2
    league.record("a-s0", 1.0)  # dropped: ignored
    s1, s2 = league.snapshots
    assert league.weight(s2) == 1.0 and league.weight(s1) == 0.05  # floor
    import random

    rng = random.Random(0)
    assert sum(league.sample(rng).name == "a-s2" for _ in range(200)) > 170
    league.sampling = "match_quality"
    s1.score = 2.0  # 2 of 4: an even match
    assert league.weight(s1) == 0.25 and league.weight(s2) == 0.05


def _cfg(**kw: object) -> TrainConfig:
    base: dict[str, object] = {"env": "tictactoe_v3", "model": "tiny", "eval_games": 0}
    return TrainConfig.model_validate({**base, **kw})


def test_lineups_per_setting() -> None:
    ttt = make("tictactoe_v3")
    a, b = LLMAgentSpec(name="ann", adapter="ann"), LLMAgentSpec(name="b", adapter="b")
    rnd = ScriptedAgentSpec(name="random", policy="random")
    self_play = _cfg(learners=[{"name": "ann"}], games_per_update=4, group_size=2)
    groups, seeds = training_groups(self_play, ttt, 0, [a], [])
    assert [{s.name for s in g.seats.values()} for g in groups] == [{"ann"}, {"ann"}] and len(set(seeds)) == 2
    assert training_groups(self_play, ttt, 0, [a], [])[1] == seeds  # seeds depend on (seed, step) only
    assert training_groups(self_play, ttt, 1, [a], [])[1] != seeds
    fixed = _cfg(
        learners=[{"name": "ann"}], setting="fixed_opponents", opponents=["random"], games_per_update=4, group_size=2
    )
    groups, _ = training_groups(fixed, ttt, 0, [a], [rnd])
    assert [g.seats for g in groups] == [{"player_1": a, "player_2": rnd}, {"player_1": rnd, "player_2": a}]
    signal = make("signal_v0")
    team = _cfg(
        env="signal_v0",
        setting="team",
        learners=[{"name": "b", "seats": ["listener_0"]}, {"name": "ann"}],
        games_per_update=2,
        group_size=1,
    )
    team.check_env(signal)
    for g in training_groups(team, signal, 0, [b, a], [])[0]:
        assert g.seats == {"listener_0": b, "speaker_0": a}
    taught = _cfg(  # train_signal.py --teach: a pinned listener, the scripted truthful speaker as its teammate
        env="signal_v0",
        setting="fixed_opponents",
        learners=[{"name": "b", "seats": ["listener_0"]}],
        opponents=["signal_truthful"],
        games_per_update=4,
        group_size=2,
    )
    taught.check_env(signal)
    teacher = ScriptedAgentSpec(name="signal_truthful", policy="signal_truthful")
    assert taught.opponent_specs() == [teacher]
    for g in training_groups(taught, signal, 0, [b], [teacher])[0]:
        assert g.seats == {"listener_0": b, "speaker_0": teacher}
    league_cfg = _cfg(learners=[{"name": "ann"}], setting="league", games_per_update=8, group_size=1)
    league = League(pool_size=4)
    league.add(Snapshot(name="a-s0", learner="a", step=0, path="/tmp/x"))
    snap = LLMAgentSpec(name="a-s0", adapter="/tmp/x")
    groups, _ = training_groups(league_cfg, ttt, 0, [a], [], league, lambda s: snap)
    names = [sorted(s.name for s in g.seats.values()) for g in groups]
    assert {g.snapshot for g in groups} <= {"a-s0", None} and any(g.snapshot for g in groups)
    assert all(n == (["a-s0", "ann"] if g.snapshot else ["ann", "ann"]) for n, g in zip(names, groups, strict=True))


# ---- config --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"learners": [{"name": "ann"}], "games_per_update": 10, "group_size": 4}, "multiple of group_size"),
        ({"learners": [{"name": "ann"}], "grpo": {"credit": "group"}, "group_size": 1}, "group_size >= 2"),
        ({"learners": [{"name": "ann"}], "opponents": ["random"]}, "use fixed_opponents"),
        ({"learners": [{"name": "ann"}], "setting": "fixed_opponents"}, "needs opponents"),
        ({"learners": [{"name": "ann"}], "setting": "team"}, "several learners"),
        ({"learners": [{"name": "ann"}, {"name": "ann"}], "setting": "independent"}, "unique"),
        ({"learners": [{"name": "a.b"}]}, "use a letter"),
        ({"learners": [{"name": "ra"}]}, "prefix 'lora_'"),
        ({"learners": [{"name": "ann"}], "opponents": ["llm@/no/such"], "setting": "fixed_opponents"}, "not a PEFT"),
        ({"learners": [{"name": "ann"}], "opponents": ["chess_engine"], "setting": "fixed_opponents"}, "unknown agent"),
        ({"learners": [{"name": "ann"}], "eval_games": 8}, "eval_opponents"),
        ({"learners": [{"name": "ann"}], "learning_rte": 1e-4}, "learning_rte"),
    ],
)
def test_config_errors_say_what_to_change(kw: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig.model_validate({"env": "tictactoe_v3", "eval_games": 0, **kw})


def test_config_checks_against_the_game() -> None:
    cfg = _cfg(learners=[{"name": "ann", "seats": ["player_9"]}])
    with pytest.raises(ValueError, match="not seats of tictactoe_v3"):
        cfg.check_env(make("tictactoe_v3"))


def test_grpo_settings_at_the_top_level_still_load_with_a_warning() -> None:
    base = {"env": "tictactoe_v3", "eval_games": 0, "learners": [{"name": "ann"}]}
    with pytest.warns(DeprecationWarning, match="put them under grpo:"):
        old = TrainConfig.model_validate({**base, "credit": "group", "warmup_updates": 3, "beta": 0.1})
    new = TrainConfig.model_validate({**base, "grpo": {"credit": "group", "warmup_updates": 3, "beta": 0.1}})
    assert old == new and old.settings_of(GRPOSettings).warmup_updates == 3 and old.grpo.credit == "group"
    assert TrainConfig.model_validate(base).algorithm_settings() == GRPOSettings()  # the chosen block is filled in
    with pytest.raises(ValueError, match="keep one"):
        TrainConfig.model_validate({**base, "beta": 0.1, "grpo": {"beta": 0.2}})


def test_configs_dumped_by_earlier_versions_still_load() -> None:
    # state.json and manifest.json of earlier versions: GRPO's settings at the top level, a default ppo: block
    # whatever the algorithm.
    old = {
        "env": "tictactoe_v3",
        "eval_games": 0,
        "learners": [{"name": "ann"}],
        "ppo": PPOSettings().model_dump(mode="json"),
        "credit": "role",
        "role_baseline_ema": 0.0,
        "steps_per_update": 2,
        "beta": 0.0,
        "warmup_updates": 0,
    }
    with pytest.warns(DeprecationWarning):
        grpo = TrainConfig.model_validate(old)
        ppo = TrainConfig.model_validate({**old, "algorithm": "ppo", "steps_per_update": 1})
    assert grpo.settings_of(GRPOSettings).steps_per_update == 2 and "ppo" not in grpo.model_dump()
    assert "grpo" not in ppo.model_dump() and ppo.algorithm_settings() == PPOSettings()


def test_shipped_manifest_still_reads() -> None:
    from llmmarl.serve import read_manifest

    path = Path(__file__).resolve().parent.parent / "adapters" / "manifest.json"
    adapters = read_manifest(path)
    assert adapters and all((folder / "adapter_config.json").exists() for folder in adapters.values())


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_example_configs_load(path: Path) -> None:
    cfg = TrainConfig.from_yaml(path)
    cfg.check_env(make(cfg.env, **cfg.env_kwargs))
    assert TrainConfig.model_validate(json.loads(cfg.model_dump_json())) == cfg


def test_cli_reports_config_errors(tmp_path: Path) -> None:
    from llmmarl.cli import app

    bad = tmp_path / "bad.yaml"
    bad.write_text("env: tictactoe_v3\nlearners: [{name: ann}]\ngames_per_update: 10\ngroup_size: 4\n")
    result = CliRunner().invoke(app, ["train", str(bad)])
    assert result.exit_code == 2 and "multiple of group_size" in result.output


def test_command_line_overrides_change_one_key_each(tmp_path: Path) -> None:
    from llmmarl.cli import app

    path = Path(__file__).resolve().parent.parent / "configs" / "train_tictactoe_ppo.yaml"
    base = TrainConfig.from_yaml(path)
    cfg = TrainConfig.from_yaml(
        path, ["seed=7", "ppo.critic=centralised", "opponents=[random, minimax]", "learning_rate=2e-4"]
    )
    assert (cfg.seed, cfg.ppo.critic, cfg.learning_rate) == (7, "centralised", 2e-4)
    assert [s.name for s in cfg.opponent_specs()] == ["random", "minimax"]
    assert cfg.ppo.model_copy(update={"critic": base.ppo.critic}) == base.ppo  # the rest of the block is kept
    assert cfg.model_copy(update={"seed": base.seed, "ppo": base.ppo, "opponents": base.opponents,
                                  "learning_rate": base.learning_rate}) == base  # fmt: skip
    # Each mistake is one line naming what is wrong, no traceback.
    for override, message in (
        ("seed", "use KEY=VALUE"),
        ("seed=[1", "not valid YAML"),
        ("seed=abc", "seed: Input should be a valid integer"),
        ("algorithm.x=1", "algorithm is 'ppo', not a mapping"),
    ):
        result = CliRunner().invoke(app, ["train", str(path), "--set", override])
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, override


# ---- end to end on the tiny model ----------------------------------------------------------------------------
def _lora(model: torch.nn.Module, name: str) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters() if f".{name}." in k and "lora_" in k}


def _changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> int:
    return sum(not torch.equal(before[k], after[k]) for k in before)


@pytest.fixture(scope="module")
def frozen_adapter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter with non-zero weights, to play as a frozen opponent."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from llmmarl.models import resolve_model

    folder = tmp_path_factory.mktemp("frozen")
    base = AutoModelForCausalLM.from_pretrained(resolve_model("tiny"))
    torch.manual_seed(1)
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.save_pretrained(str(folder))
    return folder


def _nonzero_advantages(monkeypatch: pytest.MonkeyPatch) -> None:
    """A few tiny-model games can all end alike (zero advantages, zero gradient). Tests about which weights a step
    moves add alternating offsets to the real advantages, so that every learner's gradient is non-zero."""
    import llmmarl.train.grpo as grpo_module

    real_assign = grpo_module.group_relative

    def assign(samples: list[TurnSample], *args: Any, **kwargs: Any) -> None:
        real_assign(samples, *args, **kwargs)
        for i, s in enumerate(samples):
            s.advantage += 0.5 if i % 2 == 0 else -0.5

    monkeypatch.setattr(grpo_module, "group_relative", assign)


def test_two_learners_train_only_their_own_adapters(tmp_path: Path, frozen_adapter: Path, monkeypatch) -> None:
    from llmmarl.train.grpo import MultiAgentGRPO
    from llmmarl.train.trl_adapter import AgentGRPOTrainer

    # Spy on what TRL's loss receives: the advantages must be ours, row for row.
    seen: list[tuple[list[float], list[float]]] = []
    original = AgentGRPOTrainer._generate_and_score_completions

    def spy(self: AgentGRPOTrainer, inputs: list[dict[str, object]]) -> dict[str, object]:
        out = original(self, inputs)
        seen.append(([s.advantage for s in self.batch], out["advantages"].tolist()))  # type: ignore[union-attr]
        return out

    monkeypatch.setattr(AgentGRPOTrainer, "_generate_and_score_completions", spy)
    _nonzero_advantages(monkeypatch)
    cfg = _cfg(
        env="kuhn_poker",
        learners=[{"name": "alice", "lora": {"r": 4}}, {"name": "bob", "lora": {"r": 4}}],
        setting="fixed_opponents",
        opponents=[f"llm@{frozen_adapter}"],
        games_per_update=4,
        group_size=2,
        steps=2,
        constrained=True,
        max_new_tokens=96,
        learning_rate=1e-2,
        micro_batch_size=2,
        output_dir=str(tmp_path / "run"),
        save_every=10,
        threads=1,
    )
    trainer = MultiAgentGRPO(cfg, progress=False)
    (opponent,) = trainer.opponents  # a frozen adapter decodes as the learners do, in training and evaluation
    (eval_opponent,) = trainer.evaluator.opponents()
    for spec, temperature in ((opponent, cfg.temperature), (eval_opponent, cfg.eval_temperature)):
        assert isinstance(spec, LLMAgentSpec) and spec.constrained and spec.reask and spec.max_new_tokens == 96
        assert spec.temperature == temperature
    base = trainer.evaluator.spec("base")  # the scripts' like-for-like stand-in: the base model decoded as evaluation
    assert base.adapter is None and base.constrained and base.reask and base.max_new_tokens == 96
    assert base.temperature == cfg.eval_temperature
    frozen = cfg.opponent_specs()[0].name
    trainer.engine.backend.load_adapter(frozen, frozen_adapter)  # what the runner does when the opponent first plays
    before = {n: _lora(trainer.model, n) for n in ("alice", "bob", frozen)}
    assert all(before.values())
    logs = trainer.update()
    after = {n: _lora(trainer.model, n) for n in ("alice", "bob", frozen)}
    assert _changed(before["alice"], after["alice"]) > 0 and _changed(before["bob"], after["bob"]) > 0
    assert _changed(before[frozen], after[frozen]) == 0
    # Each optimizer holds its own adapter's weights only.
    optimizers: dict[str, Any] = {n: t.optimizer for n, t in trainer.trainers.items()}
    owned = {n: {id(p) for g in opt.param_groups for p in g["params"]} for n, opt in optimizers.items()}
    assert owned["alice"] and owned["bob"] and not owned["alice"] & owned["bob"]
    assert seen and all(ours == pytest.approx(trl) for ours, trl in seen)
    assert any(any(abs(x) > 0 for x in ours) for ours, _ in seen)
    for name in ("alice", "bob"):
        m = logs[name]
        # The grammar makes answers legal (unless cut at max_new_tokens): there are usable samples to learn from.
        assert m["samples/count"] > 0 and m["samples/usable_rate"] > 0 and "game/invalid_rate" in m
        assert {"rewards/game/mean", "rewards/format/mean", "entropy", "game/return", "grad_norm"} <= set(m)
        assert m["groups/count"] > 0 and 0.0 <= m["groups/dead_share"] <= 1.0  # through TRL's log, unchanged
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1]
    assert all(lines[0]["learners"][n]["groups/dead_share"] == logs[n]["groups/dead_share"] for n in ("alice", "bob"))


def test_time_budget_ends_the_run_like_its_last_step(tmp_path: Path) -> None:
    from llmmarl.train.checkpoint import list_checkpoints
    from llmmarl.train.grpo import MultiAgentGRPO

    cfg = _cfg(
        learners=[{"name": "ann", "lora": {"r": 4}}],
        setting="fixed_opponents",
        opponents=["random"],
        games_per_update=2,
        group_size=2,
        steps=50,
        max_new_tokens=16,
        time_budget_minutes=1e-6,  # spent by the first update
        save_every=10,
        eval_games=2,
        output_dir=str(tmp_path / "run"),
        threads=1,
    )
    trainer = MultiAgentGRPO(cfg, progress=False)
    results = trainer.train()
    assert (
        trainer.state.step == 1
        and trainer.state.train_seconds > 0
        and trainer.state.longest_update_s == trainer.state.train_seconds
    )
    assert "ann vs random" in results  # the final evaluation ran although step 1 is not `steps`
    assert [p.name for p in list_checkpoints(tmp_path / "run" / "checkpoints")] == ["step-000001"]
    manifest = json.loads((tmp_path / "run" / "adapters" / "manifest.json").read_text())
    assert manifest["adapters"][0]["steps"] == 1

    resumed = MultiAgentGRPO(cfg, progress=False)
    assert resumed.checkpointer.resume() and resumed.state.train_seconds == pytest.approx(trainer.state.train_seconds)
    resumed.train()  # the budget is spent across restarts too
    assert resumed.state.step == 1
    resumed.cfg = cfg.model_copy(update={"time_budget_minutes": 10.0})
    resumed.state.train_seconds, resumed.state.longest_update_s = 590.0, 9.0
    assert not resumed.out_of_time()  # 599 s fit in 600
    resumed.state.longest_update_s = 11.0
    assert resumed.out_of_time()


def test_resume_continues_where_a_killed_run_stopped(tmp_path: Path) -> None:
    from llmmarl.backends.transformers import TransformersBackend
    from llmmarl.train.checkpoint import list_checkpoints
    from llmmarl.train.grpo import MultiAgentGRPO, train

    cfg = _cfg(
        env="signal_v0",
        setting="team",
        learners=[
            {"name": "speaker", "seats": ["speaker_0"], "lora": {"r": 4}},
            {"name": "listener", "lora": {"r": 4}},
        ],
        games_per_update=4,
        group_size=2,
        steps=2,
        constrained=True,
        max_new_tokens=96,
        learning_rate=1e-2,
        save_every=1,
        keep_checkpoints=1,
        eval_games=2,
        output_dir=str(tmp_path / "run"),
        threads=1,
    )
    first = MultiAgentGRPO(cfg, progress=False)
    first.train(max_updates=1)  # "killed" after one update
    assert first.state.step == 1
    assert [p.name for p in list_checkpoints(tmp_path / "run" / "checkpoints")] == ["step-000001"]
    weights = _lora(first.model, "speaker")
    optimizer: Any = first.trainers["speaker"].optimizer
    adam = optimizer.state_dict()["state"]
    with pytest.raises(FileExistsError, match="--resume"):
        train(cfg, progress=False)

    second = MultiAgentGRPO(cfg, progress=False)
    assert second.checkpointer.resume() and second.state.step == 1
    assert any(v.abs().sum() > 0 for k, v in weights.items() if "lora_B" in k)  # trained, not the zero init
    assert all(torch.equal(weights[k], v) for k, v in _lora(second.model, "speaker").items())
    optimizer = second.trainers["speaker"].optimizer
    restored = optimizer.state_dict()["state"]
    assert adam and all(torch.equal(adam[i]["exp_avg"], restored[i]["exp_avg"]) for i in adam)
    assert second.trainers["speaker"].state.global_step == 1
    second.train()
    assert second.state.step == 2 and second.trainers["listener"].state.global_step == 2
    assert [p.name for p in list_checkpoints(tmp_path / "run" / "checkpoints")] == ["step-000002"]
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "learners" in x] == [1, 2]

    adapters = tmp_path / "run" / "adapters"
    manifest = json.loads((adapters / "manifest.json").read_text())
    entries = {e["name"]: e for e in manifest["adapters"]}
    assert set(entries) == {"speaker", "listener"} and entries["speaker"]["steps"] == 2
    assert entries["speaker"]["role"] == "speaker_0" and entries["speaker"]["game"] == "signal_v0"
    assert "team" in entries["listener"]["eval"]
    # No path of this machine in what travels: the base model is recorded by name.
    assert entries["speaker"]["base_model_id"] == "tiny"
    assert json.loads((adapters / "speaker" / "adapter_config.json").read_text())["base_model_name_or_path"] == "tiny"
    backend = TransformersBackend("tiny", adapters={n: adapters / n for n in entries})
    assert backend.adapters == ["listener", "speaker"]

    # The same team with its messages switched off: same games, no talk; the run's own evaluation is kept.
    kept = second.state.eval_results
    silent = second.evaluator.evaluate(games=2, env_overrides={"talk": False})
    assert set(silent) == set(kept) and silent["team"]["speaker"]["games"] == 2
    assert silent["team"]["speaker"]["messages_per_game"] == 0.0
    assert second.state.eval_results is kept
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["eval_with"]["env_overrides"] == {"talk": False} and "eval" not in last


def test_format_warmup_plays_constrained_then_hands_over_to_grpo(tmp_path: Path) -> None:
    from llmmarl.train.grpo import MultiAgentGRPO

    cfg = _cfg(
        learners=[{"name": "ann", "lora": {"r": 4}}],
        setting="fixed_opponents",
        opponents=["random"],
        games_per_update=2,
        group_size=1,
        steps=2,
        grpo={"warmup_updates": 1},
        max_new_tokens=40,
        micro_batch_size=4,
        max_samples_per_learner=4,
        reask=False,
        output_dir=str(tmp_path / "run"),
        threads=1,
    )
    trainer = MultiAgentGRPO(cfg, progress=False)
    warm = trainer.update()["ann"]
    after = trainer.update()["ann"]
    # The tiny random model never answers in format by itself: all-usable answers prove the warm-up's grammar,
    # and none usable after it proves GRPO's rollouts are unconstrained again.
    assert warm["warmup"] == 1.0 and warm["samples/usable_rate"] == 1.0 and warm["game/invalid_rate"] == 0.0
    assert after["warmup"] == 0.0 and after["samples/usable_rate"] == 0.0

    # `compare` puts stand-ins in the learner's evaluation games: the learner itself, decoded as evaluate()
    # decodes, replays evaluate() exactly; the base model under the grammar plays the same games without a miss.
    from llmmarl.agents.specs import LLMAgentSpec

    (evaluated,) = trainer.evaluator.evaluate(games=4).values()
    greedy = {"temperature": 0.0, "max_new_tokens": 40}
    again = trainer.evaluator.spec("again", adapter="ann")  # decoded as evaluate() decodes (no re-ask in this run)
    rows = trainer.evaluator.compare("ann", [again, LLMAgentSpec(name="base", constrained=True, **greedy)], games=4)
    assert set(rows) == {"again vs random", "base vs random"}
    assert rows["again vs random"] == evaluated["ann"]
    assert rows["base vs random"]["games"] == 4 and rows["base vs random"]["invalid_rate"] == 0.0


def test_multi_step_update_clips_against_the_rollout_policy(tmp_path: Path, monkeypatch) -> None:
    from llmmarl.train.grpo import MultiAgentGRPO
    from llmmarl.train.trl_adapter import AgentGRPOTrainer

    _nonzero_advantages(monkeypatch)  # so that the first step moves the adapter
    # What TRL's loss gets as the ratio's reference, next to the log-probs of the adapter at that moment.
    seen: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {"ann": [], "bob": []}
    tokens: dict[str, int] = {"ann": 0, "bob": 0}
    original = AgentGRPOTrainer.compute_loss

    def spy(self: AgentGRPOTrainer, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
        mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        with torch.no_grad():
            now, _, _ = self._get_per_token_logps_and_entropies(model, ids, mask, inputs["completion_ids"].size(1))
        mask = inputs["completion_mask"]
        seen[self.adapter].append((inputs["old_per_token_logps"] * mask, now * mask))
        tokens[self.adapter] += int(inputs["prompt_mask"].sum() + mask.sum())
        return original(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(AgentGRPOTrainer, "compute_loss", spy)
    cfg = _cfg(
        # Two learners: the second one's reference pass runs with the model in training mode (the first one's
        # steps leave it there), where TRL's scoring would count tokens.
        learners=[{"name": "ann", "lora": {"r": 4}}, {"name": "bob", "lora": {"r": 4}}],
        setting="fixed_opponents",
        opponents=["random"],
        games_per_update=4,
        group_size=2,
        steps=1,
        grpo={"steps_per_update": 2},
        constrained=True,
        max_new_tokens=40,
        learning_rate=1e-2,
        micro_batch_size=64,  # one micro-batch per mini-batch: one loss call per optimizer step
        output_dir=str(tmp_path / "run"),
        threads=1,
    )
    trainer = MultiAgentGRPO(cfg, progress=False)
    logs = trainer.update()
    for name in ("ann", "bob"):
        learner = trainer.trainers[name]
        optimizer: Any = learner.optimizer
        assert {int(s["step"]) for s in optimizer.state.values()} == {2}  # two optimizer steps in one update
        assert learner.state.global_step == 1 and logs[name]["step"] == 1
        # TRL's token monitor counts each trained row once, not the reference pass as well.
        assert learner.state.num_input_tokens_seen == tokens[name] > 0
        assert len(seen[name]) == 2
        (old1, now1), (old2, now2) = seen[name]
        # First step: the reference is the current adapter, row for row (TRL shuffles rows; the reference follows).
        assert torch.allclose(old1, now1, atol=1e-5)
        # Second step: the reference is still the rollout policy, which the first step has moved away from.
        assert not torch.allclose(old2, now2, atol=1e-4)


def test_training_games_an_outage_stopped_are_played_again(tmp_path: Path) -> None:
    """A server that fails requests breaks games, not the update: they are replayed; a lasting outage stops the run."""
    from llmmarl.backends.base import BackendError, Generation
    from llmmarl.train.grpo import MultiAgentGRPO

    cfg = _cfg(
        learners=[{"name": "ann", "lora": {"r": 4}}],
        setting="fixed_opponents",
        opponents=["random"],
        games_per_update=2,
        group_size=2,
        steps=1,
        max_new_tokens=16,
        eval_games=0,
        output_dir=str(tmp_path / "run"),
        threads=1,
    )
    trainer = MultiAgentGRPO(cfg, progress=False)
    real = trainer.engine.backend.generate
    failing = {"calls": 2}  # the first two backend calls fail every request, as a server outage would

    def flaky(requests):  # type: ignore[no-untyped-def]
        if failing["calls"] > 0:
            failing["calls"] -= 1
            return [Generation.failed("HTTP 503 from the server") for _ in requests]
        return real(requests)

    trainer.engine.backend.generate = flaky  # type: ignore[method-assign]
    episodes, _ = trainer.rollout()
    # Both games of the group (ann moves first) meet the outage at their first decision: the request is sent once
    # more and fails again, so both games stop, and are played again from the start after the server is back.
    assert trainer.engine.outage_replays == 2
    assert len(episodes) == 2 and not any(ep.outage or ep.error for ep in episodes)
    assert [ep.game_id for ep in episodes] == [0, 1]  # in the order the update's group expects

    failing["calls"] = 10**6  # the server stays down
    with pytest.raises(BackendError, match=r"still stopped by server outages after 2 replays.*--resume"):
        trainer.rollout()
