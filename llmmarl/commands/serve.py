"""``llmmarl serve`` and ``llmmarl serve-reload``: one vLLM server for every adapter, and hot reloads."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from llmmarl.backends.base import BackendError
from llmmarl.commands.common import console, fail, interrupt
from llmmarl.models import DEFAULT_MODEL, ModelNotAvailableError


def serve(
    model: Annotated[str, typer.Option(help="Base model: default, tiny, a folder or a hub id.")] = DEFAULT_MODEL,
    adapter: Annotated[
        list[str] | None, typer.Option(help="NAME=PATH: serve a PEFT adapter folder as agent NAME (repeatable).")
    ] = None,
    manifest: Annotated[Path | None, typer.Option(help="Serve every adapter listed in this manifest.json.")] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on (0.0.0.0: other machines too).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="LLMMARL_API_KEY", help="Key clients must send (default: none; required beyond 127.0.0.1)."
        ),
    ] = None,
    allow_reload: Annotated[
        bool,
        typer.Option(
            "--allow-reload",
            help="Let clients load adapters at run time (serve-reload): any client with the key can then serve an "
            "adapter from any path of this machine.",
        ),
    ] = False,
    max_lora_rank: Annotated[
        int | None, typer.Option(help="Largest adapter rank accepted, also for hot reloads (default: max(16, ranks)).")
    ] = None,
    max_loras: Annotated[
        int | None, typer.Option(min=1, help="Adapters per batch (default: max(4, adapters)).")
    ] = None,
    python: Annotated[
        str | None, typer.Option(help="Python with vLLM (default: this one, $LLMMARL_VLLM_PYTHON, .venv-vllm).")
    ] = None,
    max_model_len: Annotated[
        int | None, typer.Option(min=64, help="Longest prompt + answer in tokens (default 4096 or the model's window).")
    ] = None,
    kv_cache_gib: Annotated[
        float | None, typer.Option(help="KV cache size in GiB (default 1 on CPU; on CUDA vLLM's share of the card).")
    ] = None,
    memory_fraction: Annotated[
        float | None, typer.Option(help="--gpu-memory-utilization: share of the GPU vLLM may use (CUDA).")
    ] = None,
    dtype: Annotated[str, typer.Option(help="vLLM --dtype (auto: float32 on CPU, where bf16 is ~3x slower).")] = "auto",
    vllm_arg: Annotated[
        list[str] | None, typer.Option(help="More vLLM arguments, e.g. --vllm-arg='--max-num-seqs 64' (repeatable).")
    ] = None,
    log: Annotated[Path | None, typer.Option(help="Server log file (default: a temporary file).")] = None,
) -> None:
    """Serve the base model and every agent's adapter from one vLLM server, until Ctrl-C."""
    import shlex

    from pydantic import ValidationError

    from llmmarl.serve import ManifestError, ServeConfig, ServeError, VLLMServer, read_manifest
    from llmmarl.serve.server import is_loopback

    adapters: dict[str, Path] = {}
    try:
        if manifest:
            adapters.update(read_manifest(manifest))
        for item in adapter or []:
            name, sep, path = item.partition("=")
            if not sep:
                raise typer.BadParameter(f"{item!r}: use NAME=PATH", param_hint="--adapter")
            adapters[name.strip()] = Path(path.strip())
        config = ServeConfig(
            model=model,
            adapters=adapters,
            host=host,
            port=port,
            api_key=api_key,
            allow_reload=allow_reload,
            max_lora_rank=max_lora_rank,
            max_loras=max_loras,
            python=python,
            max_model_len=max_model_len,
            kv_cache_gib=kv_cache_gib,
            memory_fraction=memory_fraction,
            dtype=dtype,
            extra_args=[tok for arg in vllm_arg or [] for tok in shlex.split(arg)],
            log_file=log,
        )
        server = VLLMServer(config)
    except (ManifestError, ServeError, ModelNotAvailableError) as e:
        fail(f"[red]{escape(str(e))}[/]", 2)
    except ValidationError as e:
        fail(f"[red]invalid serve options:[/] {escape('; '.join(err['msg'] for err in e.errors()))}", 2)
    if not is_loopback(host):
        console.print(
            f"[yellow]warning:[/] listening on {escape(host)}: other machines can reach the server with the key. Plain "
            "http carries the key and every prompt in clear text; use a TLS proxy or an SSH tunnel across networks."
            + (" --allow-reload lets key holders load adapters from any path of this machine." if allow_reload else "")
        )
    # SIGTERM (systemd, docker stop, kill) takes the same way out as Ctrl-C: stop the server's process group.
    signal.signal(signal.SIGTERM, interrupt)
    try:
        with console.status(escape(f"starting vLLM ({server.python}); log: {server.log_file}")):
            server.start()
        names = server.served()
        console.print(
            "[green]serving[/] "
            + escape(f"{server.url}  (started in {server.startup_seconds:.0f}s, log {server.log_file})")
        )
        console.print(escape(f"base model: {config.base_name}   agents: {', '.join(names[1:]) or 'none'}"))
        console.print(
            f"play through it: llmmarl play tictactoe_v3 --endpoint {server.url} --agents llm@NAME,random"
            + ("  (with --api-key / $LLMMARL_API_KEY)" if api_key else "")
        )
        code = server.wait()
        console.print(
            f"[red]the server exited with code {code}.[/] Last lines of {escape(str(server.log_file))}:\n"
            + escape(server.log_tail())
        )
        raise typer.Exit(1)
    except ServeError as e:
        fail(f"[red]{escape(str(e))}[/]")
    except KeyboardInterrupt:
        console.print("stopping the server")
    finally:
        server.stop()


def serve_reload(
    name: Annotated[str, typer.Argument(help="Agent (adapter) name to serve the new version under.")],
    path: Annotated[Path, typer.Argument(help="The new version's adapter folder (a new folder per version).")],
    endpoint: Annotated[str, typer.Option(help="The running server.")] = "http://127.0.0.1:8000/v1",
    api_key: Annotated[str | None, typer.Option(envvar="LLMMARL_API_KEY", help="The server's key.")] = None,
) -> None:
    """Hot-load a new adapter version into a running `llmmarl serve --allow-reload`, under the agent's name."""
    from llmmarl.backends.reload import hot_reload

    try:
        names = hot_reload(endpoint, name, path, api_key=api_key)
    except BackendError as e:
        fail(f"[red]{escape(str(e))}[/]")
    console.print(escape(f"{endpoint} now serves {name} from {path.resolve()}; agents: {', '.join(names)}"))
