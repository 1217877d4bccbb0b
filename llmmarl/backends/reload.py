"""Hot reload: serve a new version of an agent's adapter from a running vLLM server, without restarting it.

Training writes each version to a *new* folder (vLLM's prefix cache is keyed on the adapter's folder, so changed
weights in the same folder would meet stale cache blocks) and calls::

    hot_reload("http://127.0.0.1:8000/v1", "alice", "adapters/alice/step-0200")

Requests for ``alice`` then get the new weights; the name stays the same, so agents and the runner need no change.
The server must allow run-time loading (``llmmarl serve`` sets ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=1``) and must
see the folder: for a remote server, a path on that machine.
"""

from __future__ import annotations

from pathlib import Path

from llmmarl.backends.base import BackendError
from llmmarl.backends.openai import OpenAIBackend


def hot_reload(base_url: str, name: str, path: str | Path, api_key: str | None = None) -> list[str]:
    """Serve the PEFT adapter folder ``path`` as ``name`` (replacing the version served under that name).

    Returns the server's adapter names afterwards. Raises :class:`BackendError` with a fix when the folder is not
    an adapter, is the folder already served, or the server refuses.
    """
    folder = Path(path)
    if folder.exists() and not (folder / "adapter_config.json").exists():
        raise BackendError(f"{folder} is not a PEFT adapter folder (no adapter_config.json)")
    with OpenAIBackend(base_url, api_key=api_key, max_retries=0) as backend:
        backend.load_adapter(name, folder)
        return backend.adapters
