"""Prompt templates (``prompts/``, and a game package's own) rendered into chat messages with jinja2.

Templates produce plain text only; special tokens are added by the backend's ``apply_chat_template``.
See ``prompts/README.md`` for the lookup order and the variables.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from llmmarl.backends.base import ChatMessage
from llmmarl.envs.registry import list_envs

#: Template names under a game package's prompt folder start with this (the root's names stay as they were).
_PACKAGE = "@package"


def prompts_dir() -> Path:
    """``$LLMMARL_PROMPTS``, else the copy inside an installed wheel, else the repository's ``prompts/``."""
    if env := os.environ.get("LLMMARL_PROMPTS"):
        return Path(env)
    packaged = Path(__file__).resolve().parent.parent / "prompts"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent.parent / "prompts"


def _package_prompts(game: str) -> Path | None:
    """The prompt folder that the game registered as ``game`` ships in its package (``EnvSpec.prompts``), if any."""
    spec = next((s for s in list_envs() if s.name == game), None)
    return spec.prompts if spec is not None and spec.prompts is not None and spec.prompts.is_dir() else None


@cache
def _environment(root: str, package: str | None = None) -> jinja2.Environment:
    loader: jinja2.BaseLoader = jinja2.FileSystemLoader(root)
    if package is not None:  # the package's templates as "@package/NAME.j2", after the root's
        loader = jinja2.ChoiceLoader([loader, jinja2.PrefixLoader({_PACKAGE: jinja2.FileSystemLoader(package)})])
    # StrictUndefined: a typo in a template variable is an error, not a silently empty prompt.
    return jinja2.Environment(
        loader=loader,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=False,
        autoescape=False,  # prompts are plain text, not HTML
    )


class PromptSet:
    """The templates of one game and role, found once and rendered per turn."""

    def __init__(self, game: str, role: str, template: str | None = None, root: Path | None = None) -> None:
        self.root = root or prompts_dir()
        if not (self.root / "default").is_dir():
            raise FileNotFoundError(f"no prompt templates at {self.root} (expected {self.root}/default/*.j2)")
        # `template` lets an agent spec use another game's or a custom folder of templates.
        folder = template or game
        self.package = _package_prompts(folder)
        self.env = _environment(str(self.root), str(self.package) if self.package else None)
        self._names = {name: self._find(folder, role, name) for name in ("system", "user", "reask")}

    def _find(self, game: str, role: str, name: str) -> str:
        for candidate in (f"{game}/{role}/{name}.j2", f"{game}/{name}.j2"):
            if (self.root / candidate).is_file():
                return candidate
        for own in (f"{role}/{name}.j2", f"{name}.j2"):  # the game package's own, under the root's GAME folder
            if self.package is not None and (self.package / own).is_file():
                return f"{_PACKAGE}/{own}"
        if (self.root / f"default/{name}.j2").is_file():
            return f"default/{name}.j2"
        raise FileNotFoundError(f"template {name}.j2 not found for {game}/{role} under {self.root}")

    def render(self, name: str, **context: Any) -> str:
        return self.env.get_template(self._names[name]).render(**context).strip()

    def messages(self, **context: Any) -> list[ChatMessage]:
        return [
            {"role": "system", "content": self.render("system", **context)},
            {"role": "user", "content": self.render("user", **context)},
        ]

    def reask(self, messages: list[ChatMessage], answer: str, **context: Any) -> list[ChatMessage]:
        return [
            *messages,
            {"role": "assistant", "content": answer},
            {"role": "user", "content": self.render("reask", **context)},
        ]
