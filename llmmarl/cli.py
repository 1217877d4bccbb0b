"""Command line: thin wrappers that parse options, build configs and call the library.

Each group of commands is a module of :mod:`llmmarl.commands` (``play``: envs, agents, play, demo;
``tournament``: tournament, report; ``serve``: serve, serve-reload; ``train``); this module assembles them into one
typer app, in the order ``llmmarl --help`` lists them.
"""

from __future__ import annotations

import typer

from llmmarl.commands import play, serve, tournament, train
from llmmarl.commands.common import SET_HELP, console

__all__ = ["SET_HELP", "app", "console", "main"]

app = typer.Typer(help="llmmarl: multi-agent RL with LLM agents.", no_args_is_help=True, add_completion=False)
app.command()(play.envs)
app.command()(play.agents)
app.command()(play.play)
app.command()(play.demo)
app.command()(tournament.tournament)
app.command("report")(tournament.report_cmd)
app.command()(serve.serve)
app.command("serve-reload")(serve.serve_reload)
app.command()(train.train)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
