"""The one backend registry: a kind registered from outside the package is chosen by name from a train config, a
``play`` command and a tournament participant, and a kind nobody registered is one clear error in each."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import recording_backend
from pydantic import ValidationError
from recording_backend import ToyBackend
from typer.testing import CliRunner

from llmmarl.backends import factory
from llmmarl.backends.factory import BackendSpec, UnknownBackendError, build_backend, register_backend
from llmmarl.cli import app
from llmmarl.tournament import TournamentConfig, run_tournament
from llmmarl.train.config import TrainConfig


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[ToyBackend]]:
    """``toy`` registered for this test only (the registry is restored after it)."""
    monkeypatch.setattr(factory, "_BUILDERS", dict(factory._BUILDERS))
    register_backend("toy", recording_backend.build)
    ToyBackend.built.clear()
    yield ToyBackend
    ToyBackend.built.clear()


def _train_config(tmp_path: Path, **fields: object) -> TrainConfig:
    return TrainConfig.model_validate(
        {
            "env": "tictactoe_v3",
            "model": "tiny",
            "learners": [{"name": "ann", "lora": {"r": 4}}],
            "setting": "fixed_opponents",
            "opponents": ["random"],
            "games_per_update": 2,
            "group_size": 2,
            "steps": 1,
            "max_new_tokens": 16,
            "reask": False,
            "eval_games": 0,
            "output_dir": str(tmp_path / "run"),
            **fields,
        }
    )


def test_a_train_config_plays_its_games_on_a_kind_named_in_rollout_backend(
    toy: type[ToyBackend], tmp_path: Path
) -> None:
    from llmmarl.train.grpo import MultiAgentGRPO

    trainer = MultiAgentGRPO(_train_config(tmp_path, rollout_backend="toy"), progress=False)
    try:
        trainer.update()
    finally:
        trainer.close()
    [engine] = toy.built
    assert engine.spec.kind == "toy" and not engine.spec.colocate  # an engine of its own, not the trainer's model
    assert engine.requests and {r.adapter for r in engine.requests} == {"ann"}  # the learner's turns, played here
    assert trainer.engine.backend.state_dict()["calls"] == 0  # the trainer's in-process engine played nothing
    assert engine.versions == [0, 1]  # handed the adapter at the first rollout, then after the update
    assert engine.closed and trainer.engine.rollout_engine is None
    [row] = [json.loads(x) for x in (trainer.out / "metrics.jsonl").read_text().splitlines()]
    assert row["engine"] == "toy"


def test_a_train_config_refuses_a_kind_nobody_registered(toy: type[ToyBackend], tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"unknown backend kind 'nope'; known: openai, toy, transformers, vllm"):
        _train_config(tmp_path, rollout_backend="nope")
    with pytest.raises(ValidationError, match="cannot load backend kind 'no_such_module:build'"):
        _train_config(tmp_path, rollout_backend="no_such_module:build")
    with pytest.raises(ValidationError, match="rollout_workers play with transformers or vllm, not rollout_backend"):
        _train_config(tmp_path, rollout_backend="toy", rollout_workers=2)
    outside = "recording_backend:build"  # a module:builder is a kind without registering it
    assert _train_config(tmp_path, rollout_backend=outside).rollout_backend == outside


def test_play_chooses_a_registered_kind_by_name(toy: type[ToyBackend], tmp_path: Path) -> None:
    out = tmp_path / "games.jsonl"
    args = ["play", "tictactoe_v3", "--agents", "llm,random", "--games", "2", "--model", "tiny", "--show", "0"]
    args += ["--backend", "toy", "--backend-set", "options.note=hi", "--backend-set", "max_batch_size=3"]
    result = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    [backend] = toy.built
    assert backend.spec.options == {"note": "hi"} and backend.spec.max_batch_size == 3 and backend.spec.seed == 0
    assert backend.requests and backend.closed  # it played the LLM's turns, and play closed it at the end
    assert len(out.read_text().splitlines()) == 2


def test_play_refuses_a_kind_nobody_registered_and_a_setting_no_backend_has(toy: type[ToyBackend]) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["play", "tictactoe_v3", "--model", "tiny", "--backend", "nope"])
    assert result.exit_code == 2 and "unknown backend kind 'nope'" in result.output, result.output
    assert "toy" in result.output  # the known kinds are listed
    result = runner.invoke(app, ["play", "tictactoe_v3", "--backend", "toy", "--backend-set", "colour=red"])
    assert result.exit_code == 2 and "colour" in result.output, result.output
    result = runner.invoke(app, ["play", "tictactoe_v3", "--endpoint", "http://127.0.0.1:9/v1", "--backend", "toy"])
    assert result.exit_code == 2 and "--endpoint plays through an openai backend" in result.output, result.output
    assert not toy.built


def _tournament(tmp_path: Path, participant: dict[str, object]) -> TournamentConfig:
    return TournamentConfig.model_validate(
        {
            "games": ["tictactoe_v3"],
            "participants": [{"kind": "llm", "name": "toy-llm", **participant}, "random"],
            "schedule": {"format": "round_robin", "games_per_pairing": 1},
            "base_model": "tiny",
            "bootstrap": 0,
            "db": str(tmp_path / "t.sqlite"),
        }
    )


def test_a_tournament_participant_plays_on_the_kind_it_names(toy: type[ToyBackend], tmp_path: Path) -> None:
    cfg = _tournament(tmp_path, {"backend": "toy", "backend_settings": {"options": {"depth": 2}}})
    summary = run_tournament(cfg, progress=False)
    assert summary.played_now == 2 and summary.errors == 0  # both seat orders
    [backend] = toy.built
    assert backend.spec.kind == "toy" and backend.spec.model == "tiny" and backend.spec.options == {"depth": 2}
    assert backend.requests and backend.closed
    # The default backend keeps the fingerprint stores were written with; another kind plays other games.
    default = _tournament(tmp_path, {})
    assert _tournament(tmp_path, {"backend": "transformers"}).fingerprint() == default.fingerprint()
    assert cfg.fingerprint() != default.fingerprint()


def test_a_tournament_refuses_a_kind_nobody_registered(toy: type[ToyBackend], tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="unknown backend kind 'nope'; known: openai, toy, transformers, vllm"):
        _tournament(tmp_path, {"backend": "nope"})
    with pytest.raises(ValidationError, match=r"backend_settings \['colour'\] are not backend settings"):
        _tournament(tmp_path, {"backend": "toy", "backend_settings": {"colour": "red"}})


def test_a_kind_can_be_a_module_builder_outside_the_package() -> None:
    backend = build_backend(BackendSpec(kind="recording_backend:build", model="tiny"))
    assert isinstance(backend, ToyBackend)
    with pytest.raises(UnknownBackendError, match="names a str object, not a builder"):
        build_backend(BackendSpec(kind="recording_backend:__doc__"))
