"""Serving: one vLLM server process for every agent (each adapter a LoRA module), and its manifest of adapters.

Start one with ``llmmarl serve`` (or :class:`VLLMServer` in code); act through it with
:class:`~llmmarl.backends.openai.OpenAIBackend`, hot-load new adapter versions with
:func:`~llmmarl.backends.reload.hot_reload`. This package starts and stops processes only: it imports nothing of
``llmmarl.backends`` (the vLLM backend, :mod:`llmmarl.backends.vllm_engine`, starts its server from here).
"""

from llmmarl.serve.manifest import ManifestError, read_manifest
from llmmarl.serve.server import ServeConfig, ServeError, VLLMServer, find_vllm_python

__all__ = [
    "ManifestError",
    "ServeConfig",
    "ServeError",
    "VLLMServer",
    "find_vllm_python",
    "read_manifest",
]
