"""Backend for any OpenAI-compatible chat endpoint: our vLLM server (``llmmarl serve``), or any other server.

One chat completion per request, all of a batch sent at once from a thread pool, so the server batches them.
``"model"`` names the request's adapter (a LoRA module on a vLLM server) or the base model.

What is asked of the server depends on what it is, detected once when the backend is made:

* vLLM (``owned_by == "vllm"`` in the models list, or ``GET /version`` answers): grammars go to
  ``structured_outputs`` (vLLM silently ignores the old ``guided_*`` fields, so those are never sent), and
  ``return_token_ids`` + ``logprobs`` fill ``prompt_ids`` / ``completion_ids`` / ``logprobs``.
* anything else: no grammar (the turn parser and its re-ask handle free text), logprobs if the server accepts
  them, no token ids.

vLLM's logprobs are its ``raw_logprobs`` (untempered), but with a grammar they are taken *after* the grammar
mask, i.e. renormalised over the allowed tokens (forced tokens get 0.0); :class:`TransformersBackend` records
them before the mask. Compare the two only on unconstrained turns.

Failures, and what each becomes (the README's "Reliability" section has the whole list):

* transient ones (connection drops, 408/409/429/5xx) are retried with exponential backoff by the ``openai``
  client itself (``max_retries``; a server's ``retry-after`` is honoured);
* what is left, and every malformed 200 response (a body that is not JSON, whatever its content type; no
  ``choices``; missing fields or wrong types: :mod:`llmmarl.backends.openai_reply` reads replies), a response
  over ``max_response_bytes``, or one not complete by its deadline, fails *that request only*:
  :meth:`OpenAIBackend.generate` returns :meth:`Generation.failed` with the reason, and the rest of the batch is
  unaffected;
* a refused key or a model the server does not serve raises :class:`BackendError` at once (no game can be
  played), and so does a server that failed ``max_failures_in_a_row`` requests in a row (16 by default: with
  every request already retried, that is a server that is down or broken, not a blip).

Every network read is bounded the same way: chat requests, the models list (:meth:`OpenAIBackend.refresh`) and the
plain routes (``/version``, adapter loading) all go through one :class:`~llmmarl.backends.guard.GuardedTransport`
with a deadline for the whole call and a cap on the body, so a server that trickles bytes or sends gigabytes costs
at most ``timeout`` seconds and ``max_response_bytes`` bytes.

**Keys go only where they were asked for.** The bearer key is ``api_key`` and nothing else: no environment variable
is read here (the ``openai`` client's own ``OPENAI_API_KEY``, ``OPENAI_ORG_ID``, ``OPENAI_PROJECT_ID`` and
``OPENAI_CUSTOM_HEADERS`` fallbacks are turned off too), so a config that names an endpoint cannot send a key that
was set for another. Commands and configs choose the key explicitly (``--api-key``, a tournament participant's
``api_key_env``). A ``base_url`` must say its scheme (``http://`` or ``https://``).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import openai

from llmmarl.backends.base import BackendError, Generation, GenerationRequest, check_adapters, word_truncate
from llmmarl.backends.guard import GuardedTransport, ResponseRejected, httpx
from llmmarl.backends.openai_reply import Malformed, read_reply, server_message

API_KEY_ENV = "LLMMARL_API_KEY"
_NO_KEY = "EMPTY"  # the openai client insists on some key; servers started without --api-key ignore it


def _normalise_url(base_url: str) -> str:
    """``http://host:8000`` and ``http://host:8000/v1/`` both become ``http://host:8000/v1``.

    A URL without ``http://`` or ``https://`` is refused rather than guessed: guessing ``http://`` would send the key
    in clear text to a server meant to be reached over TLS.
    """
    url = base_url.strip().rstrip("/")
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("http", "https") or not rest:
        raise BackendError(
            f"endpoint {base_url!r} must start with http:// or https://, e.g. http://127.0.0.1:8000/v1 for a local "
            "server or https://api.example.com/v1 for a remote one"
        )
    return url if url.endswith("/v1") else url + "/v1"


class OpenAIBackend:
    """Generate through an OpenAI-compatible ``/v1/chat/completions`` endpoint.

    Args:
        base_url: the server, e.g. ``http://127.0.0.1:8000/v1`` (``/v1`` is added when missing).
        api_key: bearer key sent to ``base_url``; None sends none (see "Keys go only where they were asked for").
        model: the base model's served name; default: the served model that is not a LoRA adapter (on vLLM), else
            the first one listed.
        timeout: seconds one request may take in all, retries and a slowly trickling body included (enforced by
            :class:`~llmmarl.backends.guard.GuardedTransport`: httpx's own timeouts are per network read).
        max_retries: retries of transient errors, with exponential backoff (0.5 s doubling to 8 s, jittered).
        max_failures_in_a_row: requests failing one after another (each after its retries) before the server is
            given up on with a :class:`BackendError`.
        max_response_bytes: a response larger than this fails its request.
        concurrency: requests in flight at once; a batch of up to this many goes out together.
        tokenizer: local tokenizer folder for :meth:`truncate`; default: the base model's folder when the server
            reports one that exists on this machine (a local ``llmmarl serve``), else whitespace words.
        seed: when set, request *i* of call *c* is sampled with a seed derived from (seed, c, i) on servers that
            honour ``seed`` (vLLM does), so reruns reproduce. A request's own ``seed`` (set by the runner) wins.
    """

    # generate() may be called from many threads at once; the shared pool bounds the requests in flight. The runner
    # then streams games (each moves on when its own answer is back) instead of playing them in lockstep rounds.
    concurrent_calls: ClassVar[bool] = True

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        model: str | None = None,
        timeout: float = 300.0,
        max_retries: int = 3,
        concurrency: int = 64,
        tokenizer: str | Path | None = None,
        seed: int | None = None,
        max_failures_in_a_row: int = 16,
        max_response_bytes: int = 8 * 2**20,
    ) -> None:
        self.base_url = _normalise_url(base_url)
        self.api_key = api_key or _NO_KEY
        self.timeout = timeout
        self.concurrency = concurrency
        self.seed = seed
        self.max_failures_in_a_row = max_failures_in_a_row
        self.max_response_bytes = max_response_bytes
        self._failures_in_a_row = 0
        self._last_failure = ""
        self._transport = GuardedTransport()
        self._client = _client_without_ambient_credentials(
            base_url=self.base_url,
            api_key=self.api_key,
            timeout=timeout,
            max_retries=max_retries,
            http_client=openai.DefaultHttpxClient(transport=self._transport),
        )
        # The plain routes (/version, adapter loading) go through the same guarded transport as chat requests.
        self._http = httpx.Client(transport=self._transport, timeout=timeout)
        self._lock = threading.Lock()
        self._calls = 0
        self._tokenizer_path = tokenizer
        self.stats: dict[str, int] = {"requests": 0, "batches": 0, "generated_tokens": 0, "failed_requests": 0}
        self._served: dict[str, dict[str, Any]] = {}  # served model id -> its models-list entry
        self.refresh()
        self.is_vllm = any(m.get("owned_by") == "vllm" for m in self._served.values()) or self._answers_version()
        self.model = model or self._default_base()
        if self.model not in self._served:
            raise BackendError(f"model {self.model!r} is not served by {self.base_url}; it serves {self.served}")
        self._logprobs = True  # cleared if a non-vLLM server rejects the parameter
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="openai-backend")

    # ---- what the server serves ---------------------------------------------------------------------------------
    @property
    def served(self) -> list[str]:
        """Every model name the server answers to: the base model(s) and the adapters."""
        return sorted(self._served)

    @property
    def adapters(self) -> list[str]:
        return sorted(name for name in self._served if name != self.model)

    def adapter_path(self, name: str) -> str | None:
        """The folder the server loaded adapter ``name`` from (vLLM reports it as ``root``)."""
        entry = self._served.get(name)
        return entry.get("root") if entry else None

    def refresh(self) -> list[str]:
        """Re-read the served names (after a hot reload by someone else, say); returns them."""
        seconds = min(self.timeout, 30.0)
        try:
            with self._transport.limits(seconds, self.max_response_bytes):
                # Not with_options(): its copy of the client would read the OPENAI_* variables again.
                page = self._client.models.list(timeout=seconds)
            entries = [m.model_dump() for m in page.data]
        except ResponseRejected as e:
            raise BackendError(
                f"{self.base_url}/models: {e} (limits: {seconds:g} s, {self.max_response_bytes:,} bytes)"
            ) from None
        except openai.APIError as e:
            raise self._error(e) from None
        self._served = {str(m["id"]): m for m in entries}
        return self.served

    def _default_base(self) -> str:
        bases = [name for name, m in self._served.items() if not m.get("parent")]
        if not bases:
            raise BackendError(f"{self.base_url} serves no model (its /v1/models list is empty)")
        return bases[0]

    def _answers_version(self) -> bool:
        try:
            return "version" in self._raw("GET", "/version", timeout=5.0)
        except BackendError:
            return False

    # ---- adapters at run time (vLLM with VLLM_ALLOW_RUNTIME_LORA_UPDATING=1, as `llmmarl serve` sets) -----------
    def load_adapter(self, name: str, path: str | Path) -> None:
        """Serve the PEFT adapter folder ``path`` as ``name``, replacing the version served under that name.

        ``path`` is read by the *server*: for a remote server it is a path on that machine. Each version must be a
        new folder: vLLM keys its prefix cache on (name, path), so reloading changed weights from the same folder
        would reuse cache blocks computed with the old ones. A served name is replaced by unload + load rather
        than vLLM's ``load_inplace``, which stays set on the adapter and makes the engine re-read it from disk at
        every step; requests arriving in the gap (a fraction of a second) are retried by :meth:`generate`.
        """
        folder = str(Path(path).resolve()) if Path(path).exists() else str(path)
        if name == self.model:
            raise BackendError(f"{name!r} is the base model's name; give the adapter another name")
        if name in self._served and self.adapter_path(name) == folder:
            raise BackendError(
                f"adapter {name!r} is already served from {folder}; write each new version to a new folder "
                "(the server's prefix cache is keyed on the folder, so reusing it would reuse stale cache blocks)"
            )
        if name in self._served:
            self._raw("POST", "/v1/unload_lora_adapter", {"lora_name": name})
        self._raw("POST", "/v1/load_lora_adapter", {"lora_name": name, "lora_path": folder})
        self.refresh()

    def unload_adapter(self, name: str) -> None:
        self._raw("POST", "/v1/unload_lora_adapter", {"lora_name": name})
        self.refresh()

    def _raw(self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 120.0) -> str:
        """One plain HTTP call to the server root (the non-OpenAI routes: /version, /v1/load_lora_adapter...),
        bounded like every other call: ``timeout`` seconds (at most the backend's) in all and ``max_response_bytes``."""
        root = self.base_url.removesuffix("/v1")
        timeout = min(timeout, self.timeout)
        headers = {"Content-Type": "application/json"}
        if self.api_key != _NO_KEY:
            headers["Authorization"] = f"Bearer {self.api_key}"
        try:
            with self._transport.limits(timeout, self.max_response_bytes):
                resp = self._http.request(method, root + path, json=body, headers=headers, timeout=timeout)
        except ResponseRejected as e:
            raise BackendError(f"{method} {root + path}: {e}") from None
        except httpx.TimeoutException:
            raise BackendError(f"{method} {root + path}: no answer within {timeout:g} s") from None
        except (httpx.HTTPError, OSError) as e:
            raise BackendError(_unreachable(self.base_url, e)) from None
        text = resp.content.decode(errors="replace")
        if resp.status_code >= 400:
            if resp.status_code == 404 and "load_lora_adapter" in path and "No adapter found" not in text:
                raise BackendError(
                    f"{root} does not load adapters at run time: start it with `llmmarl serve --allow-reload` "
                    "(VLLM_ALLOW_RUNTIME_LORA_UPDATING=1), or serve the adapter from the start with --adapter NAME=PATH"
                ) from None
            raise BackendError(f"{method} {root + path} failed ({resp.status_code}): {server_message(text)}") from None
        return text

    # ---- tokens ---------------------------------------------------------------------------------------------------
    @cached_property
    def tokenizer(self) -> Any | None:
        """The base model's tokenizer when it is on this machine, else None (then :meth:`truncate` counts words)."""
        path = self._tokenizer_path or (self._served.get(self.model) or {}).get("root")
        if not path or not Path(path).is_dir():
            return None
        try:
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(path)
        except Exception:  # a broken or foreign folder: fall back to words, never fail a game over a budget
            return None

    def truncate(self, text: str, max_tokens: int) -> str:
        tok = self.tokenizer
        if tok is None:
            return word_truncate(text, max_tokens)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        return text if len(ids) <= max_tokens else tok.decode(ids[:max_tokens])

    # ---- generation -------------------------------------------------------------------------------------------
    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """Answer every request. A request the server failed comes back as :meth:`Generation.failed`.

        Only configuration errors (a refused key, a model the server does not serve) and a server that failed
        :attr:`max_failures_in_a_row` requests in a row raise :class:`BackendError`.
        """
        if any(r.adapter is not None and r.adapter not in self._served for r in requests):
            self.refresh()  # maybe loaded since we last looked
        check_adapters(self, requests)
        with self._lock:
            self._calls += 1
            call = self._calls
        futures = [
            self._pool.submit(self._one, r, r.seed if r.seed is not None else self._seed(call, i))
            for i, r in enumerate(requests)
        ]
        # Each request ends by its own deadline; this one is the backstop (requests queued behind a full pool
        # start late, and retry back-offs are not cut short).
        waves = -(-len(futures) // self.concurrency)
        _, late = wait(futures, timeout=waves * self.timeout + 30.0)
        out: list[Generation] = []
        for f in futures:
            if f in late:
                f.cancel()
                reason = f"no answer within the batch's deadline ({waves * self.timeout + 30:.0f} s)"
                out.append(Generation.failed(reason))
            else:
                out.append(f.result())  # raises only the BackendErrors that end the run
        self.stats["requests"] += len(out)
        self.stats["batches"] += 1
        self.stats["generated_tokens"] += sum(len(g.completion_ids) for g in out)
        self._count_failures(out)
        return out

    def _count_failures(self, out: Sequence[Generation]) -> None:
        for g in out:
            if g.error is None:
                self._failures_in_a_row = 0
                continue
            self.stats["failed_requests"] += 1
            self._failures_in_a_row += 1
            self._last_failure = g.error
        if self._failures_in_a_row >= self.max_failures_in_a_row:
            raise BackendError(
                f"{self.base_url} failed {self._failures_in_a_row} requests in a row, each after "
                f"{self._client.max_retries} retries (the last: {self._last_failure}); finished games are kept: "
                "check the server, then run again"
            )

    def _seed(self, call: int, index: int) -> int | None:
        return None if self.seed is None else (self.seed * 1_000_003 + call * 10_007 + index) % 2**31

    def _one(self, req: GenerationRequest, seed: int | None) -> Generation:
        """One request, never raising for what the server does wrong: that becomes :meth:`Generation.failed`."""
        model = req.adapter or self.model
        kwargs, extra = self._arguments(req, model, seed)
        with self._transport.limits(self.timeout, self.max_response_bytes):
            for attempt in range(5):
                try:
                    raw = self._client.chat.completions.with_raw_response.create(**kwargs, extra_body=extra or None)
                    return read_reply(raw.http_response, req.max_new_tokens)
                except (Malformed, ResponseRejected) as e:
                    return Generation.failed(f"malformed response: {e}" if isinstance(e, Malformed) else str(e))
                except (openai.AuthenticationError, openai.PermissionDeniedError) as e:
                    raise self._error(e, model) from None
                except openai.NotFoundError as e:
                    # An adapter being replaced (unload + load) is missing for a moment: look again, briefly.
                    if req.adapter is None or attempt == 4:
                        raise self._error(e, model) from None
                    time.sleep(0.25 * 2**attempt)
                except openai.BadRequestError as e:
                    if not self.is_vllm and self._logprobs and "logprob" in str(e).lower():
                        self._logprobs = False  # this server does not do logprobs: stop asking
                        kwargs.pop("logprobs", None)
                        continue
                    return Generation.failed(str(self._error(e, model)))
                except openai.APIError as e:
                    return Generation.failed(str(self._error(e, model)))
                except Exception as e:  # whatever else a broken server provokes fails this request only
                    return Generation.failed(f"{type(e).__name__}: {str(e)[:200]}")
        return Generation.failed(f"{model!r} kept disappearing while being reloaded")

    def _arguments(self, req: GenerationRequest, model: str, seed: int | None) -> tuple[dict[str, Any], dict[str, Any]]:
        """The chat-completion arguments for ``req``, and the extra body fields only vLLM understands."""
        kwargs: dict[str, Any] = {
            "model": model,
            "messages": req.messages,
            "max_tokens": req.max_new_tokens,
            "temperature": req.temperature,
            "top_p": req.top_p,
        }
        extra: dict[str, Any] = {}
        if seed is not None:
            kwargs["seed"] = seed
        if self._logprobs:
            kwargs["logprobs"] = True
        if self.is_vllm:
            extra["return_token_ids"] = True
            if req.choices:  # vLLM holds the texts, not their tokens: any spelling of a choice can come back
                extra["structured_outputs"] = {"choice": list(req.choices)}
            elif req.grammar:
                extra["structured_outputs"] = {"grammar": req.grammar}
        return kwargs, extra

    # ---- errors -----------------------------------------------------------------------------------------------
    def _error(self, e: openai.APIError, model: str | None = None) -> BackendError:
        if isinstance(e, openai.APITimeoutError):
            return BackendError(
                f"{self.base_url} did not answer within {self.timeout:.0f} s: raise the backend's timeout, or ask for "
                "fewer tokens / fewer requests at once"
            )
        if isinstance(e, openai.APIConnectionError):
            return BackendError(_unreachable(self.base_url, e))
        if isinstance(e, openai.AuthenticationError):
            return BackendError(
                f"{self.base_url} refused the API key (401): pass the server's key as api_key (`--api-key` or "
                f"${API_KEY_ENV} on the command line, `api_key_env` for a tournament participant)"
            )
        if isinstance(e, openai.NotFoundError) and model is not None:
            with contextlib.suppress(BackendError):
                self.refresh()
            return BackendError(f"{self.base_url} does not serve {model!r}; it serves {self.served}")
        status = getattr(e, "status_code", "?")
        body = e.body.get("error", e.body) if isinstance(e.body, dict) else None  # vLLM sends the error object
        message = body.get("message") if isinstance(body, dict) else None
        return BackendError(f"{self.base_url} rejected the request ({status}): {message or e.message}")

    # ---- lifecycle -------------------------------------------------------------------------------------------------
    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()
        self._http.close()

    def __enter__(self) -> OpenAIBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _client_without_ambient_credentials(**kwargs: Any) -> openai.OpenAI:
    """An ``openai.OpenAI`` that sends only what it is given: the client fills a missing organization, project or
    admin key from ``OPENAI_*`` variables and adds ``OPENAI_CUSTOM_HEADERS`` to every request, which would take the
    user's OpenAI credentials to whatever endpoint a config names."""
    client = openai.OpenAI(**kwargs)
    client.organization = client.project = client.admin_api_key = None
    custom = getattr(client, "_custom_headers", None)
    if isinstance(custom, dict):
        custom.clear()
    if hasattr(client, "_ambient_authorizations"):
        client._ambient_authorizations = frozenset()
    return client


def _unreachable(url: str, e: BaseException) -> str:
    return (
        f"cannot reach {url}: is the server running? start one with `llmmarl serve --port PORT` "
        f"(or point --endpoint at a running OpenAI-compatible server). ({type(e).__name__})"
    )
