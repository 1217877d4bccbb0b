"""A backend kind from outside the package, for the registry's tests: the tiny model in-process (a separate engine
when a trainer asks for one), keeping every request it answered, so a test can tell that it was the one that played.

Named by a test either after ``register_backend("toy", build)`` or as ``recording_backend:build`` (``module:builder``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from llmmarl.backends.base import Generation, GenerationRequest
from llmmarl.backends.factory import BackendSpec
from llmmarl.backends.transformers import TransformersBackend


class ToyBackend(TransformersBackend):
    """The transformers backend, recording what it answered and the adapter versions it was handed."""

    built: ClassVar[list[ToyBackend]] = []  # every one built, in order

    def __init__(self, spec: BackendSpec) -> None:
        super().__init__(
            spec.model,
            adapters=spec.adapters,
            max_batch_size=spec.max_batch_size,
            dtype="float32",
            device="cpu",
            seed=spec.seed,
            colocate=spec.colocate,
        )
        self.spec = spec
        self.requests: list[GenerationRequest] = []
        self.versions: list[int] = []
        self.closed = False
        ToyBackend.built.append(self)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        self.requests.extend(requests)
        return super().generate(requests)

    def refresh_adapters(self, model: Any, names: Sequence[str], version: int) -> None:
        self.versions.append(version)
        super().refresh_adapters(model, names, version)

    def close(self) -> None:
        self.closed = True


def build(spec: BackendSpec) -> ToyBackend:
    return ToyBackend(spec)
