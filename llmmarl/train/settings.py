"""The blocks of a training config that are not an algorithm's: who learns (:class:`LearnerConfig`, with its
adapter's :class:`LoraSettings`), the reward terms (:class:`RewardWeights`), the league (:class:`LeagueSettings`)
the vLLM rollout engine (:class:`VLLMSettings`) and the optional FORECAST pre-training before RL
(:class:`PretrainSettings`).

Each field is documented once, on the field; :class:`~llmmarl.train.config.TrainConfig` nests these blocks.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# A PEFT adapter name is a torch ModuleDict key (no dots) and also a folder name under adapters/.
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
# All linear layers of a Llama block; PEFT's "all-linear" would do the same but is spelled out for vLLM's sake.
LLAMA_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class _Strict(BaseModel):
    # A misspelt key in a YAML file is an error, not a silently ignored option.
    model_config = ConfigDict(extra="forbid")


class LoraSettings(_Strict):
    """The LoRA adapter of one learner."""

    r: int = Field(16, ge=1, description="LoRA rank. vLLM serves ranks 8, 16, 32, 64...; keep it one of those.")
    alpha: int = Field(32, ge=1, description="LoRA scaling numerator (the update is scaled by alpha / r).")
    dropout: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="LoRA dropout. 0 keeps the policy that played (eval mode) and the policy that is trained "
        "identical, so GRPO's importance ratio starts at exactly 1.",
    )
    target_modules: list[str] = Field(
        default_factory=lambda: list(LLAMA_LINEAR), description="Module names that get a LoRA pair."
    )
    layers: list[int] | None = Field(
        None,
        description="Only these decoder layers get LoRA (e.g. the last 8). Backpropagation then stops at the "
        "lowest of them, which on CPU roughly halves the cost of an update. None = every layer.",
    )


class LearnerConfig(_Strict):
    """An agent that learns: its own named LoRA adapter on the shared base model."""

    name: str = Field(description="Adapter name and folder name under adapters/ (letters, digits, '-', '_').")
    seats: list[str] = Field(
        default_factory=list,
        description="Seats this learner may take (e.g. [speaker_0]); empty = any seat, rotated across games.",
    )
    lora: LoraSettings = Field(default_factory=LoraSettings, description="Its adapter's shape.")
    init_adapter: str | None = Field(None, description="Start from this PEFT adapter folder instead of a fresh one.")

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"learner name {v!r}: use a letter then letters, digits, '-' or '_' (at most 64)")
        if v in "lora_":  # PEFT finds a LoRA weight by its prefix; a name inside it breaks loading saved weights
            raise ValueError(f"learner name {v!r} is part of PEFT's weight prefix 'lora_': choose another name")
        return v

    @field_validator("init_adapter")
    @classmethod
    def _adapter_exists(cls, v: str | None) -> str | None:
        if v is not None and not (Path(v) / "adapter_config.json").exists():
            raise ValueError(f"init_adapter {v!r} is not a PEFT adapter folder (no adapter_config.json in it)")
        return v


class RewardWeights(_Strict):
    """Weights of the reward terms. Each term is logged on its own (``rewards/<term>/mean``) before weighting."""

    game: float = Field(
        1.0,
        description="The seat's episode return (the game's payoff). An unusable answer is credited the game's "
        "forfeit reward instead, whatever the random fallback move went on to achieve.",
    )
    format: float = Field(
        1.0,
        ge=0.0,
        description="Format/legality term: 0 for a usable answer; otherwise -1, +0.5 if it had an ACTION line, "
        "+0.25 if it ended by itself (not cut at max_new_tokens). Graded so that a model whose answers all fail "
        "(the 135M default at first) still sees which failures are closer to the format.",
    )
    prediction: float = Field(
        0.0, ge=0.0, description="Prediction accuracy: share of this turn's predictions of others that came true."
    )
    message: float = Field(
        0.0, ge=0.0, description="Message cost: -1 per message delivered to teammates (talk is not free)."
    )
    forecast: float = Field(
        0.0,
        ge=0.0,
        description="Forecast skill in [0, 1] of the turn's FORECAST (1 - Brier/2, normalised squared error, or "
        "exact match; 0 if absent or unreadable). Needs agents asked to forecast (LLMAgentSpec.forecast).",
    )
    plan: float = Field(
        0.0, ge=0.0, description="Plan following: 1 if the seat's next action was this turn's PLAN's first step."
    )

    def as_dict(self) -> dict[str, float]:
        return {
            "game": self.game,
            "format": self.format,
            "prediction": self.prediction,
            "message": self.message,
            "forecast": self.forecast,
            "plan": self.plan,
        }


class LeagueSettings(_Strict):
    """The opponent pool of ``setting: league``: frozen snapshots of the learners, sampled as opponents."""

    pool_size: int = Field(8, ge=1, description="Snapshots kept; the oldest is dropped first.")
    snapshot_every: int = Field(10, ge=1, description="Add a snapshot of every learner after this many updates.")
    sampling: Literal["uniform", "win_rate", "match_quality"] = Field(
        "match_quality",
        description="How opponents are drawn: uniform; win_rate = favour snapshots the learner beats least "
        "(prioritised fictitious self-play); match_quality = favour even matches (win rate near 50%).",
    )
    self_play_prob: float = Field(
        0.2, ge=0.0, le=1.0, description="Share of game groups where the learner plays its current self instead."
    )


class VLLMSettings(_Strict):
    """The vLLM rollout engine (``rollout_backend: vllm``): a server of the base model with every adapter hot-loaded.

    See :mod:`llmmarl.backends.vllm_engine` for why a server, and :mod:`llmmarl.train.importance` for the
    correction of the engine-trainer mismatch.
    """

    python: str | None = Field(
        None, description="Interpreter with vLLM installed (default: $LLMMARL_VLLM_PYTHON, then .venv-vllm)."
    )
    kv_cache_gib: float = Field(1.0, gt=0.0, description="KV cache of the server in GiB (fixed, not a share of RAM).")
    max_model_len: int = Field(4096, ge=64, description="Longest prompt + answer in tokens the server accepts.")
    startup_timeout: float = Field(600.0, gt=0.0, description="Seconds to wait for the server to answer.")
    importance: Literal["token_truncate", "token_mask", "none"] = Field(
        "token_truncate",
        description="Correction of the engine-trainer mismatch, per answer token, w = pi_learner / pi_engine: "
        "token_truncate multiplies each token's loss by min(w, importance_cap) (TRL's token_truncate); token_mask "
        "drops tokens with w > importance_cap; none trains as if the engine were the learner.",
    )
    importance_cap: float = Field(2.0, gt=1.0, description="Cap of the importance weight (see importance).")
    max_loras: int | None = Field(
        None,
        ge=1,
        description="Adapters in one engine batch; default learners + frozen LLM opponents + league pool + 1 "
        "(the swap: a new version loads before the old one is unloaded).",
    )
    max_cpu_loras: int | None = Field(
        None, ge=1, description="Adapters the engine keeps in CPU memory; default twice max_loras."
    )
    extra_args: list[str] = Field(default_factory=list, description="More vLLM server arguments, verbatim.")

    def server_settings(self) -> dict[str, Any]:
        """The settings :class:`~llmmarl.backends.vllm_engine.VLLMEngine` takes as they are, by its argument names
        (the adapter slots and the importance correction are the run's to derive and apply)."""
        return self.model_dump(include={"python", "kv_cache_gib", "max_model_len", "startup_timeout", "extra_args"})


class PretrainSettings(_Strict):
    """Supervised FORECAST pre-training of every learner's adapter before RL (transition pre-training, as in SPA and
    Early Experience): the learner is shown recorded decisions of its seats, prompted exactly as in training, and
    taught to answer the FORECAST line with what then happened. See :mod:`llmmarl.train.pretrain`.

    Off unless ``games`` > 0 or ``records`` is set. It runs once, before the first update of a fresh run.
    """

    games: int = Field(
        0,
        ge=0,
        description="Fresh games played by uniformly random scripted players (cheap: no model) whose decisions in "
        "each learner's seats become examples. 0 = none (learn from records only). At least 2 when set: a share "
        "of the games is held out.",
    )
    records: str | None = Field(
        None,
        description="A JSONL file of EpisodeRecords of this run's game (what `llmmarl play --out` writes), learnt "
        "from besides the fresh games. None = fresh games only.",
    )
    epochs: int = Field(3, ge=1, description="Passes over the training examples.")
    learning_rate: float = Field(1e-4, gt=0.0, description="AdamW learning rate of the pre-training (constant).")
    batch_size: int = Field(
        8, ge=1, description="Examples per optimizer step, in forward/backward passes of micro_batch_size examples."
    )
    held_out: float = Field(
        0.2,
        gt=0.0,
        lt=1.0,
        description="Share of the games whose examples are not trained on: the loss before and after is measured "
        "on them.",
    )

    @property
    def enabled(self) -> bool:
        """Whether there is anything to learn from."""
        return self.games > 0 or self.records is not None

    @field_validator("games")
    @classmethod
    def _two_or_none(cls, v: int) -> int:
        if v == 1:
            raise ValueError("pretrain.games: 1 game leaves none to hold out: use 0 (off) or at least 2")
        return v

    @field_validator("records")
    @classmethod
    def _records_exist(cls, v: str | None) -> str | None:
        if v is not None and not Path(v).is_file():
            raise ValueError(
                f"pretrain.records {v!r} is not a file (a JSONL of EpisodeRecords, e.g. from llmmarl play)"
            )
        return v


class ExplorationSettings(_Strict):
    """Label-level exploration of the training rollouts (``exploration:``), kept unbiased by importance weights.

    See :mod:`llmmarl.train.exploration`: at a learner's ACTION-only decision under the grammar, with probability
    ``epsilon`` the answer played is the canonical spelling of a legal label drawn uniformly, and the loss weights
    every answer by pi / mu, its probability under the policy over that under the exploring behaviour.
    """

    kind: Literal["epsilon"] = Field(
        "epsilon", description="epsilon: with probability epsilon, a legal label drawn uniformly replaces the answer."
    )
    epsilon: float = Field(
        0.1, gt=0.0, lt=1.0, description="Probability that a learner's decision plays a uniformly drawn label."
    )
