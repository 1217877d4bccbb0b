"""What a tournament is: one pydantic config, loadable from YAML, every option described once.

Example (``configs/tournament_tictactoe.yaml``)::

    name: tictactoe
    games: [tictactoe_v3]
    participants: [llm, random, minimax]        # short forms, as in `llmmarl play --agents`
    schedule: {format: round_robin, games_per_pairing: 4}
    db: reports/tournament_tictactoe.sqlite

Participants are agent specs: an LLM (``kind: llm``: the base model + an optional LoRA adapter + a prompt
template + decoding settings, served by a backend kind of the registry, ``backend:``, in-process transformers by
default), a scripted bot (``kind: scripted``), or a model behind an OpenAI-compatible endpoint (``kind: openai``).
Cross-checks that need no game live here; the ones that need the game (seat count, cooperative or not) are made in
:mod:`llmmarl.tournament.run` when the game is built.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)

from llmmarl.agents.specs import LLMAgentSpec, ScriptedAgentSpec, parse_agent
from llmmarl.backends.factory import BackendSpec, check_kind
from llmmarl.cluster import PLACEMENT_TIMEOUT_S, STALL_FACTOR, STALL_FLOOR_S
from llmmarl.config_overrides import apply_overrides
from llmmarl.models import DEFAULT_MODEL

OPENAI_HOST = "api.openai.com"  # the one host whose key, OPENAI_API_KEY, is sent without being named


class GameSpec(BaseModel):
    """One game of the tournament. Ratings and reports are per game: skill at one game says little of another."""

    model_config = ConfigDict(extra="forbid")

    env: str = Field(description="Registered game name (see `llmmarl envs`), e.g. 'tictactoe_v3'.")
    env_kwargs: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments of the game's factory.")
    label: str | None = Field(
        None, description="Name in results and reports; needed only to play one env twice with different kwargs."
    )
    scoring: Literal["outcome", "duplicate"] = Field(
        "outcome",
        description="What ratings and head-to-head tables compare. outcome: each game's win, draw or loss. "
        "duplicate: each board - the seat-swapped games of a pairing, which share their deal - by the payoff "
        "summed over it; for chip games (poker), where win/loss ignores the pot and seat swaps make every "
        "player win half its games. Needs every seat order played (swap_seats, or an even Swiss games_per_pairing).",
    )

    @property
    def key(self) -> str:
        return self.label or self.env


# What the tournament sets itself on a participant's backend; `backend_settings` may set the other BackendSpec fields.
_TOURNAMENT_SET = {"kind", "model", "adapters", "seed"}


class LocalLLMParticipant(LLMAgentSpec):
    """An LLM agent: the tournament's base model (or its own), an optional adapter folder, decoding settings, played
    by a backend kind of the registry (:mod:`llmmarl.backends.factory`)."""

    model_config = ConfigDict(extra="forbid")

    base_model: str | None = Field(
        None, description="Base model of this participant; None = the tournament's `base_model`."
    )
    backend: str = Field(
        "transformers",
        description="Backend kind that plays it: transformers (in-process), vllm (a vLLM server the tournament "
        "starts), a kind registered with register_backend, or your.module:builder. Participants of one kind, base "
        "model and backend_settings share one backend.",
    )
    backend_settings: dict[str, Any] = Field(
        default_factory=dict,
        description="More settings of that backend, by BackendSpec field: e.g. {kv_cache_gib: 0.5} for vllm, "
        "{options: {...}} for a kind of your own.",
    )

    @field_validator("backend")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        return check_kind(kind)  # a ValueError that lists the known kinds

    @field_validator("backend_settings")
    @classmethod
    def _settings_fields(cls, settings: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(settings) - (set(BackendSpec.model_fields) - _TOURNAMENT_SET))
        if unknown:
            settable = sorted(set(BackendSpec.model_fields) - _TOURNAMENT_SET)
            raise ValueError(f"backend_settings {unknown} are not backend settings; settable: {', '.join(settable)}")
        return settings


class OpenAIParticipant(LLMAgentSpec):
    """An agent served behind an OpenAI-compatible endpoint (vLLM, a hosted API). Decoding settings as for `llm`."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["openai"] = "openai"  # type: ignore[assignment]
    base_url: str = Field(description="Endpoint root, e.g. 'http://localhost:8000/v1'.")
    model: str = Field(description="Model name sent with each request (a served base model or LoRA module name).")
    api_key_env: str | None = Field(
        None,
        description="Environment variable holding the key sent to `base_url`; None (the default) sends no key. "
        "Only for https://api.openai.com is the default OPENAI_API_KEY: a key goes to another server only when the "
        "config names its variable.",
    )

    @field_validator("base_url")
    @classmethod
    def _scheme(cls, url: str) -> str:
        scheme, sep, rest = url.strip().partition("://")
        if not sep or scheme.lower() not in ("http", "https") or not rest:
            raise ValueError(f"base_url {url!r} must start with http:// or https:// (e.g. http://127.0.0.1:8000/v1)")
        return url.strip()

    @model_validator(mode="after")
    def _default_key(self) -> OpenAIParticipant:
        url = urlsplit(self.base_url)
        if "api_key_env" not in self.model_fields_set and (url.scheme, url.hostname) == ("https", OPENAI_HOST):
            self.api_key_env = "OPENAI_API_KEY"
        return self

    @model_validator(mode="after")
    def _no_adapter(self) -> OpenAIParticipant:
        if self.adapter is not None:
            raise ValueError(
                f"participant {self.name!r}: an openai participant has no adapter folder; name the served adapter "
                f"in `model` (vLLM serves each LoRA module under its own model name)"
            )
        return self


Participant = Annotated[LocalLLMParticipant | ScriptedAgentSpec | OpenAIParticipant, Field(discriminator="kind")]


class RoundRobin(BaseModel):
    """Every group of participants plays, in every seat order (for two seats: every pair, both orders)."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["round_robin"] = "round_robin"
    games_per_pairing: int = Field(
        2, ge=1, description="Games of each pairing *in each seat order* (2N per pair in a two-seat game)."
    )
    swap_seats: bool = Field(
        True, description="Play every seat order (rotations); False: only the order the participants are listed in."
    )


class Swiss(BaseModel):
    """Rounds paired by current standings (Monrad-style), avoiding rematches; for two-seat competitive games."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["swiss"] = "swiss"
    rounds: int = Field(3, ge=1, description="Number of rounds; each needs the previous one finished.")
    games_per_pairing: int = Field(
        2,
        ge=1,
        description="Games each pairing plays in a round. Seat orders alternate; an odd game's first seat goes "
        "to the player who has had it less often (colour balance).",
    )


ScheduleConfig = Annotated[RoundRobin | Swiss, Field(discriminator="format")]


class RayConfig(BaseModel):
    """Play the schedule on Ray actors (``pip install llmmarl[ray]``); the driver still writes the store alone.

    Each actor holds one backend (built as in one process) and plays chunks of games through its own runner.
    """

    model_config = ConfigDict(extra="forbid")

    address: str = Field(
        "local",
        description="local: start a Ray instance on this machine; auto: join the cluster this machine belongs to "
        "(`ray start` ran here); or a cluster address (host:port or ray://host:10001).",
    )
    num_workers: PositiveInt = Field(2, description="Actors playing games; on a GPU cluster, one per GPU or replica.")
    num_cpus: NonNegativeFloat = Field(1.0, description="CPUs each actor reserves (also its torch threads on CPU).")
    num_gpus: NonNegativeFloat = Field(
        0.0, description="GPUs each actor reserves; 1 puts a local model on its own GPU."
    )
    chunk_size: PositiveInt | None = Field(
        None,
        description="Games per task sent to an actor (one runner batches them). None: the tournament's "
        "`concurrency`, capped so every actor gets work. Smaller chunks rerun less after a failure.",
    )
    max_failures: NonNegativeInt = Field(
        3, description="Actor deaths tolerated; each one's unfinished games are played again elsewhere."
    )
    placement_timeout: PositiveFloat = Field(
        PLACEMENT_TIMEOUT_S,
        description="Seconds the actors may wait for an alive node that can hold one (a lost node coming back, "
        "or one being added) before the run stops with one line; Ray alone would wait forever.",
    )
    stall_timeout: PositiveFloat | None = Field(
        None,
        description="Seconds without any finished game before the run stops with one line. None scales with the "
        f"work: {STALL_FACTOR:g}x the longest wait for a game so far, and at least {STALL_FLOOR_S:g}s.",
    )


class TournamentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field("tournament", description="Tournament name; one store file may hold several tournaments.")
    games: list[GameSpec] = Field(min_length=1, description="Games to play; a bare string is a game name.")
    participants: list[Participant] = Field(
        min_length=2,
        description="Agents; a bare string is a short form as in `llmmarl play --agents` ('llm', 'llm@DIR', 'random').",
    )
    schedule: ScheduleConfig = Field(default_factory=RoundRobin, description="round_robin or swiss.")
    seed: int = Field(0, description="Seeds the schedule's game seeds and the LLM backend's sampling.")
    db: Path = Field(
        Path("reports/tournament.sqlite"),
        description="SQLite store (relative to the working directory); re-running resumes from it.",
    )
    report: Path | None = Field(None, description="HTML report written at the end; default: the db path with .html.")
    concurrency: int = Field(32, ge=1, description="Games in flight at once (their LLM turns share one batch).")
    max_steps: int = Field(500, ge=1, description="A game still running after this many steps is an error.")
    base_model: str = Field(DEFAULT_MODEL, description="Base model of local LLM participants: default, tiny, a folder.")
    max_batch_size: int = Field(64, ge=1, description="Rows per generate call of the local backend.")
    dtype: str = Field("auto", description="Local backend dtype: auto (float32 on CPU, bf16 on GPU), float32, ...")
    device: str | None = Field(None, description="Local backend device; None picks cuda when available.")
    bootstrap: int = Field(200, ge=0, description="Bradley-Terry bootstrap refits for the 95% intervals (0: none).")
    ray: RayConfig | None = Field(
        None, description="Play on Ray actors (see RayConfig); None plays in this process. CLI: --ray ADDRESS."
    )

    @field_validator("games", mode="before")
    @classmethod
    def _game_strings(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        return [{"env": v} if isinstance(v, str) else v for v in value] if isinstance(value, list) else value

    @field_validator("schedule", mode="before")
    @classmethod
    def _default_format(cls, value: Any) -> Any:
        return {"format": "round_robin", **value} if isinstance(value, dict) else value

    @field_validator("participants", mode="before")
    @classmethod
    def _participant_strings(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        taken = {p["name"] for p in value if isinstance(p, dict) and "name" in p}
        out = []
        for p in value:
            if isinstance(p, str):
                # parse_agent raises ValueError listing the known short forms; pydantic reports it on this field.
                out.append(parse_agent(p, taken).model_dump(exclude_none=True))
            else:
                out.append(p)
        return out

    @model_validator(mode="after")
    def _unique_names(self) -> TournamentConfig:
        names = [p.name for p in self.participants]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"participant names must be unique; repeated: {dupes}. Give each a distinct `name`.")
        keys = [g.key for g in self.games]
        if len(set(keys)) != len(keys):
            raise ValueError(f"games {keys} repeat a name: give repeated envs distinct `label`s")
        for k in keys:
            if "|" in k:
                raise ValueError(f"game label {k!r} must not contain '|' (it separates the parts of game keys)")
        duplicate = [g.key for g in self.games if g.scoring == "duplicate"]
        if duplicate and isinstance(self.schedule, RoundRobin) and not self.schedule.swap_seats:
            raise ValueError(f"games {duplicate} use duplicate scoring, which needs swap_seats: true")
        if duplicate and isinstance(self.schedule, Swiss) and self.schedule.games_per_pairing % 2:
            raise ValueError(
                f"games {duplicate} use duplicate scoring: Swiss games_per_pairing must be even (both seat orders)"
            )
        return self

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Sequence[str] = ()) -> TournamentConfig:
        """The config in ``path``, with ``--set KEY=VALUE`` ``overrides`` (dotted keys) applied."""
        with Path(path).open(encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of options at the top level")
        return cls.model_validate(apply_overrides(data, overrides))

    # ---- derived ------------------------------------------------------------------------------------------
    @property
    def report_path(self) -> Path:
        return self.report or self.db.with_suffix(".html")

    def participant_names(self) -> list[str]:
        return [p.name for p in self.participants]

    def adapter_digests(self) -> dict[str, str]:
        """Participant -> :func:`adapter_digest` of its local adapter folder, for the participants that have one."""
        return {
            p.name: adapter_digest(p.adapter, p.name)
            for p in self.participants
            if isinstance(p, LocalLLMParticipant) and p.adapter is not None
        }

    def fingerprint(self, adapter_digests: dict[str, str] | None = None) -> str:
        """Hash of what decides the games played: a store refuses to resume a tournament whose games changed.

        Local adapters count by their weights (``adapter_digests``, default: :meth:`adapter_digests`), not only by
        their paths: an adapter retrained in place plays other games. Concurrency, batch size, device, Ray and report
        options (scoring among them) may change between runs; they do not change games.
        """
        relevant = self.model_dump(
            mode="json",
            include={
                "games": {"__all__": {"env", "env_kwargs", "label"}},
                "participants": True,
                "schedule": True,
                "seed": True,
                "base_model": True,
            },
        )
        for p in relevant["participants"]:  # the default backend leaves the hash as it was before there was a choice
            if p.get("backend") == "transformers" and not p.get("backend_settings"):
                del p["backend"], p["backend_settings"]
        digests = self.adapter_digests() if adapter_digests is None else adapter_digests
        if digests:  # absent without adapters: those tournaments keep the fingerprint they always had
            relevant["adapter_weights"] = digests
        return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


# What a PEFT folder's weights are: its config (rank, targets, base model) and its tensors in either format.
_ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")


def adapter_digest(folder: str | Path, participant: str = "") -> str:
    """SHA-256 (first 16 hex digits) of a PEFT adapter folder's config and weight files, names and bytes."""
    folder = Path(folder)
    files = [folder / name for name in _ADAPTER_FILES if (folder / name).is_file()]
    if not (folder / "adapter_config.json").is_file() or len(files) < 2:
        raise ValueError(
            f"participant {participant!r}: adapter {str(folder)!r} is not a PEFT adapter folder (it needs "
            "adapter_config.json and adapter_model.safetensors). Local participants load adapter folders; for an "
            "adapter served by vLLM use `kind: openai` with `model: <its served name>`."
        )
    h = hashlib.sha256()
    for file in files:
        h.update(f"{file.name}\0{file.stat().st_size}\0".encode())
        with file.open("rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()[:16]
