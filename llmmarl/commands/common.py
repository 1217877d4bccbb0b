"""What the commands share: the console, the ``--set`` help, config loading and the way out on an error."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn, TypeVar

import typer
from rich.console import Console

from llmmarl.config_errors import CONFIG_ERRORS, describe_config_error

console = Console()

SET_HELP = "KEY=VALUE: change one config key (dotted for nested ones: ppo.critic=centralised); repeatable."

C = TypeVar("C")


def load_config(from_yaml: Callable[[Path, Sequence[str]], C], path: Path, overrides: list[str] | None) -> C:
    """``from_yaml(path, overrides)``; a config that cannot be read or is invalid exits with code 2 and one line."""
    try:
        return from_yaml(path, overrides or ())
    except CONFIG_ERRORS as e:
        typer.echo(describe_config_error(path, e), err=True)
        raise typer.Exit(2) from None


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``message`` (rich markup) and exit with ``code``, without a traceback. The message stays one line
    (the terminal wraps it, rich inserts no breaks), so logs and callers can read it whole."""
    console.print(message, soft_wrap=True)
    raise typer.Exit(code) from None


def interrupt(signum: int, frame: object) -> None:
    """SIGTERM handler: take the same way out as Ctrl-C (the command's cleanup runs)."""
    raise KeyboardInterrupt
