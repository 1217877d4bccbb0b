"""One config per training run: :class:`TrainConfig`, loadable from YAML, every field documented once.

Field-level checks live on the fields (``ge=``, ``Literal``); the cross-checks that need several fields are in
:meth:`TrainConfig._cross_check`, and the ones that need the game itself (seat names, team layout) in
:meth:`TrainConfig.check_env`. Every error says what to change.
"""

from __future__ import annotations

import importlib.util
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from llmmarl.agents.specs import DEFAULT_LINES, TURN_LINES, LLMAgentSpec, ScriptedAgentSpec, TurnLine, parse_agent
from llmmarl.config_overrides import apply_overrides
from llmmarl.envs.base import TextEnv

Setting = Literal["self_play", "fixed_opponents", "independent", "team", "league"]
Credit = Literal["group", "role", "agent"]
Algorithm = str  # a name registered with llmmarl.train.register_algorithm: grpo and ppo are built in

# A PEFT adapter name is a torch ModuleDict key (no dots) and also a folder name under adapters/.
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
# PPO gives each learner a second adapter, its critic, named after it.
CRITIC_SUFFIX = "__critic"
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


class GRPOSettings(_Strict):
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


#: Each algorithm's settings block: ``grpo:`` and ``ppo:`` in a config. A block is read only by its algorithm.
ALGORITHM_SETTINGS: dict[str, type[BaseModel]] = {}
#: Top-level keys of configs written before GRPO's settings moved under ``grpo:``.
_LEGACY_GRPO_KEYS = ("credit", "role_baseline_ema", "steps_per_update", "beta", "warmup_updates")


class PPOSettings(_Strict):
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


ALGORITHM_SETTINGS.update(grpo=GRPOSettings, ppo=PPOSettings)


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


class TrainConfig(_Strict):
    """Multi-agent training (GRPO or PPO): one LoRA adapter per learner, all updated from the same games each step."""

    # ---- the game and the players ------------------------------------------------------------------------
    env: str = Field(description="Registered game name (see `llmmarl envs`), e.g. tictactoe_v3.")
    env_kwargs: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments of the game's factory.")
    model: str = Field("default", description="Base model: default (SmolLM2-135M-Instruct), tiny, a folder or hub id.")
    learners: list[LearnerConfig] = Field(min_length=1, description="The agents that learn, one adapter each.")
    opponents: list[str] = Field(
        default_factory=list,
        description="Agents that do not learn, in `llmmarl play --agents` syntax: a scripted policy (random, "
        "minimax...), llm (the base model) or llm@FOLDER (a frozen adapter folder).",
    )
    setting: Setting = Field(
        "self_play",
        description="self_play: one learner in every seat; fixed_opponents: each game one learner vs opponents; "
        "independent: all learners in one game, each its own adapter; team: learners are teammates (pinned "
        "seats or the first team's seats); league: one learner vs snapshots of the learners (plus opponents).",
    )
    template: str | None = Field(None, description="Prompt folder under prompts/ (default: the game's own).")

    algorithm: Algorithm = Field(
        "grpo",
        description="grpo: advantages from baselines over an update's samples (see grpo), no critic. ppo: "
        "turn-level PPO with a learned critic per learner and GAE over each agent's turns (see ppo). rloo: "
        "REINFORCE with a leave-one-out baseline over each group of games. Others: see register_algorithm.",
    )
    grpo: GRPOSettings | None = Field(
        None, description="algorithm: grpo's settings (filled with the defaults when that algorithm has none)."
    )
    ppo: PPOSettings | None = Field(
        None, description="algorithm: ppo's settings (filled with the defaults when that algorithm has none)."
    )

    # ---- what one update sees ------------------------------------------------------------------------------
    games_per_update: int = Field(16, ge=1, description="Games played per update; one rollout feeds every learner.")
    group_size: int = Field(
        4, ge=1, description="Games per group: same seed (same deal/start) and same seating, different samples."
    )
    normalize_advantages: bool = Field(
        True,
        description="GRPO: divide by the baseline set's standard deviation; False = mean only (Dr. GRPO). PPO: "
        "centre and scale the advantages over each learner's samples of the update; False = raw GAE advantages.",
    )
    train_on: Literal["all_attempts", "final_attempt"] = Field(
        "all_attempts",
        description="final_attempt: one sample per LLM turn, the answer that counted. all_attempts (default): "
        "failed first answers that were re-asked are samples too, so the first answer - the one the "
        "invalid-action rate measures - gets the legality penalty directly.",
    )
    max_samples_per_learner: int | None = Field(
        None, ge=1, description="Cap on samples per learner per update (a random subset): bounds the update's cost."
    )
    lines: list[TurnLine] = Field(
        default_factory=lambda: [line for line in TURN_LINES if line in DEFAULT_LINES],
        description="Turn lines the LLM agents are asked for besides ACTION (LLMAgentSpec.lines): [] = reactive, "
        "ACTION only; add FORECAST to ask for forecasts. Each appears only where the game has it.",
    )
    plan_actions: bool = Field(
        False, description="Ask for PLAN as the agent's own next action labels, so plans are scored (rewards.plan)."
    )
    rewards: RewardWeights = Field(default_factory=RewardWeights, description="Reward terms and their weights.")

    # ---- optimisation --------------------------------------------------------------------------------------
    learning_rate: float = Field(5e-5, gt=0.0, description="AdamW learning rate of every adapter (constant).")
    steps: int = Field(
        100,
        ge=1,
        description="Updates to run; each is one rollout plus grpo.steps_per_update optimizer steps per learner "
        "(GRPO), ppo.ppo_epochs * ppo.minibatches steps per learner and critic (PPO), or one step (RLOO).",
    )
    max_grad_norm: float = Field(1.0, gt=0.0, description="Gradient clipping per adapter.")
    micro_batch_size: int = Field(8, ge=1, description="Samples per forward/backward; gradients are accumulated.")
    max_new_tokens: int = Field(64, ge=8, description="Answer budget in tokens during training games.")
    temperature: float = Field(
        1.0, gt=0.0, description="Sampling temperature in training games (also the loss's logit temperature)."
    )
    reask: bool = Field(True, description="Re-ask once when an answer has no legal action (its answer is trained).")
    constrained: bool = Field(
        False,
        description="Grammar-constrained decoding in training games: every answer is well-formed and legal, so only "
        "the game is learned (the format term has nothing left to teach). The loss scores the sampled tokens under "
        "the unconstrained policy. Needs max_new_tokens large enough for the whole turn (~100 for the default "
        "prompt's PLAN and PREDICT lines).",
    )

    # ---- output, evaluation, monitoring --------------------------------------------------------------------
    output_dir: str = Field("runs/train", description="Checkpoints, metrics.jsonl, league snapshots, logs.")
    adapters_dir: str | None = Field(
        None, description="Where final adapters and manifest.json go (default: <output_dir>/adapters)."
    )
    time_budget_minutes: float | None = Field(
        None,
        gt=0.0,
        description="Wall-clock budget of the updates (model loading and evaluation not counted, resumed runs "
        "counted across restarts): no update starts that would end past it, judged by the longest update so far, "
        "and the run then ends as it would at `steps` (final evaluation, checkpoint, adapters). None = no budget.",
    )
    save_every: int = Field(10, ge=1, description="Write a resumable checkpoint every this many updates.")
    keep_checkpoints: int = Field(2, ge=1, description="Checkpoints kept on disk (the newest).")
    eval_every: int = Field(0, ge=0, description="Evaluate every this many updates; 0 = only at the end.")
    eval_games: int = Field(32, ge=0, description="Games per learner and evaluation lineup; 0 = no evaluation.")
    eval_opponents: list[str] = Field(
        default_factory=list,
        description="Evaluation opponents (same syntax as opponents; llm = the base model). Empty: the "
        "training lineup (opponents, or the team itself).",
    )
    eval_temperature: float = Field(0.0, ge=0.0, description="Sampling temperature in evaluation games; 0 = greedy.")
    eval_nash_conv: int = Field(
        0,
        ge=0,
        description="kuhn_poker only: at each evaluation also read every learner's policy as played at the 12 "
        "information states and log its NashConv (llmmarl.eval.exploitability). The value is the answers per state "
        "when eval_temperature > 0 (greedy reads one); 0 = off.",
    )
    report_to: list[str] = Field(
        default_factory=list,
        description="TRL/transformers loggers, e.g. [tensorboard] (needs `pip install tensorboard`). "
        "metrics.jsonl is always written.",
    )
    league: LeagueSettings = Field(default_factory=LeagueSettings, description="Used by setting: league.")

    # ---- machinery -----------------------------------------------------------------------------------------
    seed: int = Field(0, description="Seeds games, sampling and adapter initialisation.")
    max_batch_size: int = Field(64, ge=1, description="Rows per generate call of the backend.")
    concurrency: int = Field(64, ge=1, description="Games in flight at once during a rollout.")
    device: str | None = Field(None, description="cpu or cuda; default: cuda if available.")
    threads: int | None = Field(
        None,
        ge=1,
        description="torch CPU threads for this process (torch.set_num_threads). On a machine whose cores are "
        "busy with other work, 1 avoids OpenMP spin-waiting, which can make small ops 10-20x slower. None = "
        "torch's default.",
    )
    rollout_workers: int = Field(
        0,
        ge=0,
        description="Ray actors that play each update's games (`pip install 'llmmarl[ray]'`); 0 plays them in this "
        "process. Each actor holds the base model, gets every learner's new adapter weights before each rollout, "
        "and stamps each generation with the hash of the weights that produced it; stale stamps stop the run.",
    )
    ray_address: str = Field(
        "local", description="Ray to use for rollout_workers: local (start one here), auto, or a cluster address."
    )
    rollout_worker_gpus: float = Field(0.0, ge=0, description="GPUs each rollout actor reserves.")

    rollout_backend: Literal["transformers", "vllm"] = Field(
        "transformers",
        description="What plays the training games: transformers (in-process, the trainer's own model; fastest "
        "on CPU) or vllm (a vLLM server that hot-loads each learner's adapter after every update; see vllm).",
    )
    vllm: VLLMSettings = Field(default_factory=VLLMSettings, description="Used by rollout_backend: vllm.")

    # ---- loading ---------------------------------------------------------------------------------------------
    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Sequence[str] = (), **fields: Any) -> TrainConfig:
        """The config in ``path``, with ``--set KEY=VALUE`` ``overrides`` (dotted keys) and then ``fields`` applied."""
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of config keys at the top level")
        return cls.model_validate({**apply_overrides(data, overrides), **fields})

    def to_yaml(self) -> str:
        """The config as YAML that :meth:`from_yaml` reads back (a run's record, a test's config file)."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    # ---- derived -----------------------------------------------------------------------------------------
    @property
    def groups_per_update(self) -> int:
        return self.games_per_update // self.group_size

    @property
    def adapters_path(self) -> Path:
        return Path(self.adapters_dir) if self.adapters_dir else Path(self.output_dir) / "adapters"

    def opponent_specs(self) -> list[LLMAgentSpec | ScriptedAgentSpec]:
        return _parse_agents(self.opponents, taken={lr.name for lr in self.learners})

    def eval_opponent_specs(self) -> list[LLMAgentSpec | ScriptedAgentSpec]:
        return _parse_agents(self.eval_opponents, taken={lr.name for lr in self.learners})

    # ---- cross-checks ------------------------------------------------------------------------------------
    @model_validator(mode="before")
    @classmethod
    def _migrate(cls, data: Any) -> Any:
        """Read configs of the earlier layout: GRPO's settings at the top level move under ``grpo:`` (with a
        deprecation warning), and the default-valued block of the other algorithm that earlier versions dumped
        into every state.json and manifest.json is dropped."""
        if not isinstance(data, dict):
            return data
        legacy = [k for k in _LEGACY_GRPO_KEYS if k in data]
        if legacy:
            warnings.warn(
                f"{', '.join(legacy)} at the top level of a training config is deprecated: put "
                f"{'them' if len(legacy) > 1 else 'it'} under grpo: (e.g. grpo: {{{legacy[0]}: ...}})",
                DeprecationWarning,
                stacklevel=2,
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
                    f"{', '.join(moved)}: GRPO settings, and this config has algorithm: {data['algorithm']}: "
                    "remove them"
                )
            default_ppo = PPOSettings().model_dump(mode="json")
            if data.get("algorithm", "grpo") != "ppo" and data.get("ppo") == default_ppo:
                del data["ppo"]  # the earlier layout dumped ppo: with every config
        return data

    @field_validator("algorithm")
    @classmethod
    def _registered(cls, name: str) -> str:
        from llmmarl.train import algorithms  # the registry lives with the trainers, not with the config

        if name not in algorithms():
            raise ValueError(f"unknown algorithm {name!r}; registered: {', '.join(algorithms())}")
        return name

    @field_validator("opponents", "eval_opponents")
    @classmethod
    def _agents_parse(cls, v: list[str]) -> list[str]:
        _parse_agents(v, taken=set())
        return v

    @field_validator("report_to")
    @classmethod
    def _loggers_installed(cls, v: list[str]) -> list[str]:
        if "tensorboard" in v and importlib.util.find_spec("tensorboard") is None:
            raise ValueError("report_to: tensorboard needs the tensorboard package: pip install tensorboard")
        return v

    @model_validator(mode="after")
    def _cross_check(self) -> TrainConfig:
        names = [lr.name for lr in self.learners]
        if len(set(names)) != len(names):
            raise ValueError(f"learner names must be unique, got {names}")
        if self.games_per_update % self.group_size:
            lower = self.games_per_update // self.group_size * self.group_size or self.group_size
            raise ValueError(
                f"games_per_update ({self.games_per_update}) must be a multiple of group_size ({self.group_size}), "
                f"e.g. {lower} or {lower + self.group_size}"
            )
        self._check_algorithm(names)
        self._check_lines()
        n_learners, n_opponents = len(self.learners), len(self.opponents)
        if self.setting == "self_play" and (n_learners != 1 or n_opponents):
            raise ValueError(
                "setting: self_play trains one learner in every seat: give exactly one learner and no opponents "
                "(use fixed_opponents to play against opponents, independent for several learners)"
            )
        if self.setting == "fixed_opponents" and not n_opponents:
            raise ValueError("setting: fixed_opponents needs opponents, e.g. opponents: [random]")
        if self.setting in ("independent", "team") and n_learners < 2:
            raise ValueError(
                f"setting: {self.setting} is for several learners in one game; with one learner use self_play "
                "or fixed_opponents"
            )
        if (
            self.eval_games
            and not self.eval_opponents
            and (self.setting == "self_play" or (self.setting == "league" and not self.opponents))
        ):
            raise ValueError(
                f"setting: {self.setting} has no fixed opponent to be measured against: set eval_opponents "
                "(e.g. [random, llm]) or eval_games: 0"
            )
        return self

    def _check_lines(self) -> None:
        # A reward term on a line nobody is asked for is always 0: a silent no-op, so an error.
        needs = {"prediction": "PREDICT", "forecast": "FORECAST", "plan": "PLAN", "message": "MESSAGE"}
        for term, line in needs.items():
            if getattr(self.rewards, term) and line not in self.lines:
                raise ValueError(f"rewards.{term} is set but lines has no {line}: add {line} to lines or set it to 0")
        if self.rewards.plan and not self.plan_actions:
            raise ValueError("rewards.plan scores plans given as action labels: set plan_actions: true")

    def _check_algorithm(self, names: list[str]) -> None:
        for block in ALGORITHM_SETTINGS:
            if block != self.algorithm and getattr(self, block) is not None:
                raise ValueError(
                    f"{block}: settings are for algorithm: {block}, this config has algorithm: {self.algorithm}: "
                    f"remove the {block}: block or set algorithm: {block}"
                )
        settings = ALGORITHM_SETTINGS.get(self.algorithm)
        if settings is not None and getattr(self, self.algorithm) is None:
            setattr(self, self.algorithm, settings())  # the dumped config records the settings that were used
        if self.grpo is not None and self.grpo.credit == "group" and self.group_size < 2:
            raise ValueError(
                "grpo.credit: group compares games from the same start, so it needs group_size >= 2 (or use "
                "grpo.credit: role)"
            )
        if self.algorithm != "ppo":
            return
        others = [r for r in self.report_to if r != "tensorboard"]
        if others:
            raise ValueError(f"report_to {others}: algorithm: ppo reports to tensorboard only (and metrics.jsonl)")
        critics = [n for n in names if n.endswith(CRITIC_SUFFIX)]
        if critics:
            raise ValueError(
                f"learner names {critics}: with algorithm: ppo, names ending in {CRITIC_SUFFIX!r} are the critics' "
                "adapters: choose other names"
            )

    def algorithm_settings(self) -> BaseModel | None:
        """The chosen algorithm's settings block (``grpo:``, ``ppo:``), or None for an algorithm without one."""
        return getattr(self, self.algorithm) if self.algorithm in ALGORITHM_SETTINGS else None

    def check_env(self, env: TextEnv) -> None:
        """Cross-checks against the game itself: seat names and whether the lineup fills every seat."""
        seats = env.possible_agents
        for lr in self.learners:
            unknown = [s for s in lr.seats if s not in seats]
            if unknown:
                raise ValueError(f"learner {lr.name}: seats {unknown} are not seats of {env.name}; its seats: {seats}")
        if self.setting in ("independent", "team"):
            if len(self.learners) > len(seats):
                raise ValueError(f"{len(self.learners)} learners but {env.name} has only {len(seats)} seats")
            if len(self.learners) < len(seats) and not self.opponents:
                raise ValueError(
                    f"{env.name} has {len(seats)} seats and {len(self.learners)} learners: add opponents for the "
                    "remaining seats"
                )
        if self.setting == "team":
            teams = {env.teams[s] for lr in self.learners for s in lr.seats}
            if len(teams) > 1:
                raise ValueError(f"setting: team, but the learners' pinned seats are on different teams: {teams}")
            if not any(len(env.teammates(s)) >= 1 for s in seats):
                raise ValueError(f"setting: team needs a game with teams; {env.name} has none (use independent)")
        if self.eval_nash_conv and env.name != "kuhn_poker":
            raise ValueError(f"eval_nash_conv reads Kuhn poker policies; {env.name} is not kuhn_poker: set it to 0")
        if self.rewards.message and env.message_rules.mode == "off":
            raise ValueError(f"rewards.message is set but {env.name} does not allow messages: set it to 0")


def _parse_agents(texts: list[str], taken: set[str]) -> list[LLMAgentSpec | ScriptedAgentSpec]:
    specs = []
    taken = set(taken)
    for text in texts:
        spec = parse_agent(text, taken)  # ValueError lists the known agents
        if (
            isinstance(spec, LLMAgentSpec)
            and spec.adapter
            and not (Path(spec.adapter) / "adapter_config.json").exists()
        ):
            raise ValueError(f"opponent {text!r}: {spec.adapter} is not a PEFT adapter folder (no adapter_config.json)")
        specs.append(spec)
    return specs
