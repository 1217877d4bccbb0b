"""The built-in algorithms' settings blocks (``grpo:``, ``ppo:``), their base class, and the migration of configs
written before GRPO's settings moved under ``grpo:``.

A block is read only by its algorithm, which declares its model (:mod:`llmmarl.train.registry`);
:meth:`~llmmarl.train.config.TrainConfig._check_algorithm` refuses a block for another algorithm than the chosen
one. An algorithm without settings (``rloo``) has no block.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from llmmarl.train.settings import _Strict

if TYPE_CHECKING:
    from llmmarl.train.config import TrainConfig

Credit = Literal["group", "role", "agent"]
# PPO gives each learner a second adapter, its critic, named after it.
CRITIC_SUFFIX = "__critic"
#: Top-level keys of configs written before GRPO's settings moved under ``grpo:``.
_LEGACY_GRPO_KEYS = ("credit", "role_baseline_ema", "steps_per_update", "beta", "warmup_updates")


class AlgorithmSettings(_Strict):
    """A settings block: a misspelt key is an error, and :meth:`check_config` checks it against the rest of the
    config. Any pydantic model serves as a block; this base adds the two."""

    def check_config(self, cfg: TrainConfig) -> None:
        """Raise ``ValueError`` (saying what to change) where these settings do not fit ``cfg``."""


class GRPOSettings(AlgorithmSettings):
    """Multi-agent GRPO (``algorithm: grpo``): baselines over an update's samples instead of a critic."""

    credit: Credit = Field(
        "role",
        description="Baseline for advantages. role (default): one baseline per learner and seat, as in SPIRAL's "
        "role-conditioned advantage estimation - seats differ in expected return (first mover, speaker vs "
        "listener), and without it self-play learns the seat instead of the move; works for any group size. "
        "group: per learner, seat and group of games from the same seed - also removes the luck of the deal "
        "(poker cards), needs group_size >= 2. agent: one baseline over all of a learner's samples.",
    )
    role_baseline_ema: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="With credit: role, smooth each role's baseline across updates: b <- ema*b + (1-ema)*mean "
        "(SPIRAL uses 0.95). 0 = this update's mean only.",
    )
    steps_per_update: int = Field(
        1,
        ge=1,
        description="Optimizer steps per update, each on its own part of the update's samples (TRL's "
        "steps_per_generation). Above 1, TRL's clipped ratio against the rollout's log-probs bounds the change; "
        "more learning per rollout, which is what costs on CPU.",
    )
    beta: float = Field(
        0.0, ge=0.0, description="KL penalty to the base model (adapters disabled). 0 = none (TRL's default)."
    )
    warmup_updates: int = Field(
        0,
        ge=0,
        description="Format warm-up: the first N updates play with grammar-constrained decoding and train by "
        "reward-weighted self-imitation (each sample weighted max(0, 1 + 0.5 * advantage), so every well-formed "
        "answer is imitated and the better ones more). A small model that almost never answers in the turn format "
        "gives GRPO no signal; this teaches the format from its own answers, then GRPO takes over unconstrained.",
    )

    def check_config(self, cfg: TrainConfig) -> None:
        if self.credit == "group" and cfg.group_size < 2:
            raise ValueError(
                "grpo.credit: group compares games from the same start, so it needs group_size >= 2 (or use "
                "grpo.credit: role)"
            )


class AllActionSettings(AlgorithmSettings):
    """The all-action estimator (``algorithm: all_action``): every label of a decision credited at once."""

    weighting: Literal["policy", "natural"] = Field(
        "policy",
        description="policy: -sum_a sg[pi(a)] sg[A(a)] log pi(a), the exact gradient of the expected value. "
        "natural: -sum_a sg[Q(a) - mean Q] log pi(a), the softmax's natural policy gradient in the labels' "
        "logits: it does not stall on labels the policy has ruled out, but is biased (llmmarl.train.all_action).",
    )


class PPOSettings(AlgorithmSettings):
    """Turn-level PPO (``algorithm: ppo``): one critic per learner, GAE over each agent's own turns."""

    gamma: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="Discount per turn of the agent (not per game step: the other seats' moves do not count).",
    )
    gae_lambda: float = Field(
        0.95, ge=0.0, le=1.0, description="GAE's lambda: 0 = one-step TD advantages, 1 = Monte Carlo returns."
    )
    clip_range: float = Field(0.2, gt=0.0, lt=1.0, description="PPO's clip on the token probability ratio.")
    value_clip: float | None = Field(
        None,
        gt=0.0,
        description="Clip the new value to within this of the value before the update (PPO2's value clipping); "
        "None = plain squared error.",
    )
    vf_coef: float = Field(
        0.5,
        gt=0.0,
        description="Weight of the value loss. The critic has its own weights and optimizer, so this scales its "
        "gradient before clipping at max_grad_norm; with Adam its step size is set by critic_lr.",
    )
    entropy_coef: float = Field(0.0, ge=0.0, description="Entropy bonus on the answer tokens; 0 = none.")
    kl_coef: float = Field(
        0.0, ge=0.0, description="KL penalty to the base model (adapter disabled), per answer token; 0 = none."
    )
    ppo_epochs: int = Field(2, ge=1, description="Passes over an update's samples.")
    minibatches: int = Field(
        2, ge=1, description="Optimizer steps per pass (the samples are shuffled and split this many ways)."
    )
    critic: Literal["decentralised", "centralised"] = Field(
        "decentralised",
        description="decentralised: the critic sees what the acting seat saw. centralised (MAPPO-style, "
        "centralised training with decentralised execution): it also sees every other seat's latest observation, "
        "hidden cards and secret goals included; the policy's prompt is unchanged.",
    )
    critic_lr: float = Field(
        1e-4, gt=0.0, description="AdamW learning rate of each critic (its adapter and value head)."
    )
    critic_max_tokens: int = Field(
        512,
        ge=16,
        description="The critic's input is cut to its last this many tokens (the value head reads the last).",
    )

    def check_config(self, cfg: TrainConfig) -> None:
        others = [r for r in cfg.report_to if r != "tensorboard"]
        if others:
            raise ValueError(f"report_to {others}: algorithm: ppo reports to tensorboard only (and metrics.jsonl)")
        critics = [lr.name for lr in cfg.learners if lr.name.endswith(CRITIC_SUFFIX)]
        if critics:
            raise ValueError(
                f"learner names {critics}: with algorithm: ppo, names ending in {CRITIC_SUFFIX!r} are the critics' "
                "adapters: choose other names"
            )


def migrate_layout(data: dict[str, Any]) -> dict[str, Any]:
    """A config of the earlier layout in the current one: GRPO's settings at the top level move under ``grpo:``
    (with a deprecation warning), and the default-valued block of the other algorithm that earlier versions dumped
    into every state.json and manifest.json is dropped. A config of the current layout is returned as it is."""
    legacy = [k for k in _LEGACY_GRPO_KEYS if k in data]
    if legacy:
        warnings.warn(
            f"{', '.join(legacy)} at the top level of a training config is deprecated: put "
            f"{'them' if len(legacy) > 1 else 'it'} under grpo: (e.g. grpo: {{{legacy[0]}: ...}})",
            DeprecationWarning,
            stacklevel=3,
        )
        data = dict(data)
        moved = {k: data.pop(k) for k in legacy}
        block = data.get("grpo")
        if isinstance(block, dict):
            clash = sorted(set(moved) & set(block))
            if clash:
                raise ValueError(f"{', '.join(clash)}: given both at the top level and under grpo: keep one")
            moved = {**moved, **block}
        if data.get("algorithm", "grpo") == "grpo":
            data["grpo"] = moved
        elif any(v != GRPOSettings.model_fields[k].default for k, v in moved.items()):
            # The earlier layout dumped them with every config; only values set on purpose are an error.
            raise ValueError(
                f"{', '.join(moved)}: GRPO settings, and this config has algorithm: {data['algorithm']}: remove them"
            )
        default_ppo = PPOSettings().model_dump(mode="json")
        if data.get("algorithm", "grpo") != "ppo" and data.get("ppo") == default_ppo:
            del data["ppo"]  # the earlier layout dumped ppo: with every config
    return data
