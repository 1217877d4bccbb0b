"""The installed TRL still offers every touch point llmmarl.train.trl_adapter relies on (its docstring lists them).

A TRL upgrade that renames a method, reorders its parameters, drops a config field or stops reading a key or flag
we set fails here, by name, rather than as a wrong gradient in a training run.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re

import pytest
import trl
from trl.trainer import utils as trl_utils

from llmmarl.train import trl_adapter
from llmmarl.train.config import TrainConfig
from llmmarl.train.trl_adapter import TOUCH_POINTS, AgentGRPOTrainer, grpo_args

TRAINER = trl.GRPOTrainer


def _leading(fn: object, n: int) -> tuple[str, ...]:
    return tuple(inspect.signature(fn).parameters)[:n]  # type: ignore[arg-type]


def test_the_trainer_takes_the_keywords_we_pass() -> None:
    params = inspect.signature(TRAINER.__init__).parameters
    assert [k for k in TOUCH_POINTS.init_keywords if k not in params] == []


@pytest.mark.parametrize("name", TOUCH_POINTS.overrides)
def test_each_method_we_override_still_has_our_leading_parameters(name: str) -> None:
    ours = [
        p for p in inspect.signature(getattr(AgentGRPOTrainer, name)).parameters.values() if p.kind != p.VAR_KEYWORD
    ]
    assert getattr(AgentGRPOTrainer, name) is not getattr(TRAINER, name)  # an override, not TRL's own
    assert _leading(getattr(TRAINER, name), len(ours)) == tuple(p.name for p in ours)


@pytest.mark.parametrize("name", TOUCH_POINTS.calls)
def test_each_method_we_call_still_has_its_parameters(name: str) -> None:
    expected = TOUCH_POINTS.calls[name]
    assert _leading(getattr(TRAINER, name), len(expected)) == expected


@pytest.mark.parametrize("name", TOUCH_POINTS.sources)
def test_what_we_rely_on_inside_a_method_is_still_there(name: str) -> None:
    source = inspect.getsource(getattr(TRAINER, name))
    missing = [text for text in TOUCH_POINTS.sources[name] if text not in source]
    assert missing == [], f"GRPOTrainer.{name} no longer holds {missing}"


@pytest.mark.parametrize("name", TOUCH_POINTS.utils)
def test_the_utilities_we_import_keep_their_parameters(name: str) -> None:
    expected = TOUCH_POINTS.utils[name]
    assert _leading(getattr(trl_utils, name), len(expected)) == expected


def test_every_config_field_we_set_is_a_grpo_config_field(tmp_path) -> None:
    call = next(
        node
        for node in ast.walk(ast.parse(inspect.getsource(grpo_args)))
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "GRPOConfig"
    )
    ours = {k.arg for k in call.keywords}
    fields = {f.name for f in dataclasses.fields(trl.GRPOConfig)}
    assert "loss_type" in ours and ours - fields == set()
    cfg = TrainConfig.model_validate(
        {"env": "tictactoe_v3", "learners": [{"name": "ann"}], "eval_games": 0, "output_dir": str(tmp_path)}
    )
    args = grpo_args(cfg, "ann", "cpu")  # TRL accepts the values too
    assert args.loss_type == "dapo" and args.num_iterations == 1 and args.beta == 0.0


def test_the_docstring_lists_every_touch_point() -> None:
    doc = trl_adapter.__doc__ or ""
    names = [
        *TOUCH_POINTS.init_keywords,
        *TOUCH_POINTS.overrides,
        *TOUCH_POINTS.calls,
        *TOUCH_POINTS.utils,
        "use_vllm",
        "vllm_importance_sampling_correction",
        "num_generations_eval",
        "current_gradient_accumulation_steps",
        "advantages",
        "frac_reward_zero_std",
    ]
    assert [n for n in names if not re.search(rf"[`.]{re.escape(n)}\b", doc)] == []
