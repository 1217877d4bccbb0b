"""Reading an OpenAI-compatible chat completion: strict validation of a 200 response into a :class:`Generation`.

What we read of a chat completion is typed strictly: anything else in a 200 response (a body that is not JSON,
whatever its content type; no ``choices``; missing fields or wrong types) is a malformed reply, which fails its
request with the reason (:class:`Malformed`) instead of raising from deep inside the openai client.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llmmarl.backends.base import Generation

_CHARS_PER_TOKEN = 64  # a reply longer than this many characters per requested token is cut (and marked "length")


class Malformed(ValueError):
    """A 200 response that is not a usable chat completion."""


class _TokenLogprob(BaseModel):
    logprob: float


class _Logprobs(BaseModel):
    content: list[_TokenLogprob] | None = None


class _Message(BaseModel):
    content: str | None = None


class _Choice(BaseModel):
    model_config = ConfigDict(extra="allow")

    message: _Message
    finish_reason: str | None = None
    logprobs: _Logprobs | None = None
    token_ids: list[int] | None = None  # vLLM's return_token_ids


class _Reply(BaseModel):
    model_config = ConfigDict(extra="allow")

    choices: list[_Choice] = Field(min_length=1)
    prompt_token_ids: list[int] | None = None  # vLLM's return_token_ids


def read_reply(response: Any, max_new_tokens: int) -> Generation:
    """The :class:`Generation` in an HTTP 200 response, or :class:`Malformed` saying what is wrong with it."""
    content_type = response.headers.get("content-type", "?")
    body: bytes = response.content
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise Malformed(f"the body is not JSON (content-type {content_type}): {body[:80]!r}") from None
    try:
        reply = _Reply.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "body"
        raise Malformed(f"{where}: {first['msg']} ({e.error_count()} problem(s))") from None
    choice = reply.choices[0]
    text = choice.message.content or ""
    cut = len(text) > max_new_tokens * _CHARS_PER_TOKEN
    return Generation(
        text=text[: max_new_tokens * _CHARS_PER_TOKEN],
        prompt_ids=reply.prompt_token_ids or [],
        completion_ids=choice.token_ids or [],
        logprobs=[t.logprob for t in (choice.logprobs.content or [])] if choice.logprobs else [],
        finish_reason="length" if cut or choice.finish_reason == "length" else "stop",
    )


def server_message(text: str) -> str:
    """The ``message`` of an OpenAI-style JSON error body, else the text itself (cut short)."""
    try:
        data = json.loads(text)
        err = data.get("error", data) if isinstance(data, dict) else data
        if isinstance(err, dict) and "message" in err:
            return str(err["message"])
    except (json.JSONDecodeError, TypeError):
        pass
    return text[:500]
