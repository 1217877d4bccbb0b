"""Serving: one vLLM server for every agent (each adapter a LoRA module), and hot reload of new adapter versions.

Start one with ``llmmarl serve`` (or :class:`VLLMServer` in code); act through it with
:class:`~llmmarl.backends.openai.OpenAIBackend`.
"""

from llmmarl.serve.manifest import ManifestError, read_manifest
from llmmarl.serve.reload import hot_reload
from llmmarl.serve.server import ServeConfig, ServeError, VLLMServer, find_vllm_python

__all__ = [
    "ManifestError",
    "ServeConfig",
    "ServeError",
    "VLLMServer",
    "find_vllm_python",
    "hot_reload",
    "read_manifest",
]
