"""One config per training run: :class:`TrainConfig`, loadable from YAML, every field documented once.

Its nested blocks are declared in :mod:`llmmarl.train.settings` (learners, rewards, league, vLLM engine) and
:mod:`llmmarl.train.algorithm_settings` (``grpo:``, ``ppo:``, and reading configs of the earlier layout); import
them from there.

Field-level checks live on the fields (``ge=``, ``Literal``); the cross-checks that need several fields, and the
ones that need the game itself (seat names, team layout: :meth:`TrainConfig.check_env`), are in
:mod:`llmmarl.train.config_checks`. Every error says what to change.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from llmmarl.agents.specs import DEFAULT_LINES, TURN_LINES, LLMAgentSpec, ScriptedAgentSpec, TurnLine, parse_agent
from llmmarl.backends.factory import check_kind
from llmmarl.cluster import PLACEMENT_TIMEOUT_S, STALL_FACTOR, STALL_FLOOR_S
from llmmarl.config_overrides import apply_overrides
from llmmarl.envs.base import TextEnv
from llmmarl.train.algorithm_settings import AlgorithmSettings, migrate_layout
from llmmarl.train.config_checks import (
    check_against_game,
    check_batches,
    check_exploration,
    check_lines,
    check_lineup,
    legacy_measures,
)
from llmmarl.train.registry import algorithms, lookup, read_settings_block
from llmmarl.train.settings import (
    ExplorationSettings,
    LeagueSettings,
    LearnerConfig,
    PretrainSettings,
    RewardWeights,
    VLLMSettings,
    _Strict,
)

Setting = Literal["self_play", "fixed_opponents", "independent", "team", "league"]
Algorithm = str  # a registered name (llmmarl.train.registry) or module:Class
SettingsT = TypeVar("SettingsT", bound=BaseModel)


class TrainConfig(_Strict):
    """Multi-agent training (GRPO or PPO): one LoRA adapter per learner, all updated from the same games each step.

    Besides the fields below, a config holds its algorithm's settings block under the algorithm's name (``grpo:``,
    ``ppo:``, or that of an algorithm from outside the package), read by the settings model the algorithm declares
    (:mod:`llmmarl.train.registry`); any other key is an error.
    """

    model_config = ConfigDict(extra="allow")  # the algorithm's own block only: checked in _check_algorithm

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
        "REINFORCE with a leave-one-out baseline over each group of games. all_action: every legal label credited "
        "by its value from branching the game (single-decision games, ACTION-only under the grammar). Or an "
        "algorithm from outside the package: your.module:YourTrainer. Its settings block, if it has one, is the key "
        "of its name (grpo:, ppo:), filled with the defaults when the config has none.",
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
    exploration: ExplorationSettings | None = Field(
        None,
        description="Label-level exploration of the training rollouts, unbiased by importance weights (see "
        "llmmarl.train.exploration): with probability epsilon a learner's ACTION-only decision under the grammar "
        "plays a uniformly drawn legal label, and every such answer's loss is weighted by pi / mu. None = off.",
    )
    pretrain: PretrainSettings | None = Field(
        None,
        description="Supervised FORECAST pre-training of each learner's adapter on recorded or random games before "
        "the first update (needs FORECAST in lines). None = none.",
    )

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
    shared_prefix: bool = Field(
        True,
        description="Learner passes compute the prompt prefix a micro-batch's samples share once (with its gradient) "
        "and run each sample's remaining tokens against its key/values: the same log-probs and gradients up to "
        "float rounding, for a fraction of the tokens (see llmmarl.train.logprobs). False: every row in full.",
    )
    max_new_tokens: int = Field(64, ge=8, description="Answer budget in tokens during training games.")
    temperature: float = Field(
        1.0, gt=0.0, description="Sampling temperature in training games (also the loss's logit temperature)."
    )
    reask: bool = Field(True, description="Re-ask once when an answer has no legal action (its answer is trained).")
    canonical: bool = Field(
        False,
        description="Closed turns (ACTION only, or a one-word MESSAGE from the game's vocabulary then ACTION) are "
        "answered as one of their complete texts in the tokenizer's own tokens, one token path per answer, instead "
        "of the grammar's every spelling (see backends/choices.py). Implies constrained decoding; the in-process "
        "backend only (a vLLM server takes the texts, not their tokens).",
    )
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
    eval_measures: list[str] = Field(
        default_factory=list,
        description="The game's own measures of every learner's policy, logged at each evaluation (eval/<metric>): "
        "names the game declares (llmmarl.envs.measures), e.g. nash_conv. The policy is read as "
        "played, decoded as evaluation decodes. The earlier key eval_nash_conv: N still reads as "
        "eval_measures: [nash_conv] with eval_measure_samples: N (0: off).",
    )
    eval_measure_samples: int = Field(
        1,
        ge=1,
        description="Answers per decision when a measure reads a sampled policy (eval_temperature > 0); a greedy "
        "or exactly readable policy is read once.",
    )
    eval_backend: Literal["rollout", "trainer"] = Field(
        "rollout",
        description="What plays evaluation games and reads the game measures: rollout (the rollout engine: under "
        "rollout_backend: vllm the vLLM server, which evaluates as fast as it samples) or trainer (the trainer's "
        "in-process model). The two are the same under rollout_backend: transformers.",
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
    ray_placement_timeout: float = Field(
        PLACEMENT_TIMEOUT_S,
        gt=0,
        description="Seconds rollout actors may wait for an alive node that can hold one (a lost node coming back, "
        "or one being added) before the run stops with one line; `--resume` continues from the last checkpoint.",
    )
    ray_stall_timeout: float | None = Field(
        None,
        gt=0,
        description="Seconds without any rollout actor finishing its share before the run stops with one line. None "
        f"scales with the work: {STALL_FACTOR:g}x the longest wait for a share so far, and at least "
        f"{STALL_FLOOR_S:g}s.",
    )

    rollout_backend: str = Field(
        "transformers",
        description="What plays the training games, a backend kind (llmmarl.backends.factory): transformers "
        "(in-process, the trainer's own model; fastest on CPU), vllm (a vLLM server that hot-loads each learner's "
        "adapter after every update; see vllm), or another registered kind or your.module:builder, whose engine "
        "gets each learner's adapter after every update (a RolloutEngine).",
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
        data = migrate_layout(legacy_measures(data))
        # Earlier versions dumped every algorithm's block, None for the others.
        return {k: v for k, v in data.items() if not (v is None and k in algorithms())}

    @field_validator("algorithm")
    @classmethod
    def _known(cls, name: str) -> str:
        import llmmarl.train  # noqa: F401 - registers the built-in algorithms

        lookup(name)  # UnknownAlgorithmError (a ValueError) says what is wrong
        return name

    @field_validator("rollout_backend")
    @classmethod
    def _backend_kind(cls, kind: str, info: ValidationInfo) -> str:
        check_kind(kind)  # a ValueError that lists the known kinds
        if kind not in ("transformers", "vllm") and info.data.get("rollout_workers"):
            raise ValueError(f"rollout_workers play with transformers or vllm, not rollout_backend: {kind}")
        return kind

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
        check_batches(self)
        self._check_algorithm()
        check_lines(self)
        check_exploration(self)
        check_lineup(self)
        return self

    def _check_algorithm(self) -> None:
        extra = self.__pydantic_extra__ if self.__pydantic_extra__ is not None else {}
        block = read_settings_block(self.algorithm, extra)
        if isinstance(block, AlgorithmSettings):
            block.check_config(self)

    def algorithm_settings(self) -> BaseModel | None:
        """The chosen algorithm's settings block (``grpo:``, ``ppo:``...), or None for an algorithm without one."""
        algo = lookup(self.algorithm)
        return None if algo.settings is None else (self.__pydantic_extra__ or {}).get(algo.name)

    def settings_of(self, model: type[SettingsT]) -> SettingsT:
        """The chosen algorithm's settings block, typed as ``model`` (what its trainer reads)."""
        block = self.algorithm_settings()
        if not isinstance(block, model):
            raise TypeError(f"algorithm: {self.algorithm} has no {model.__name__} settings block")
        return block

    def check_env(self, env: TextEnv) -> None:
        """Cross-checks against the game itself: seat names and whether the lineup fills every seat."""
        check_against_game(self, env)


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
