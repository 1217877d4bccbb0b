"""``llmmarl train``: train one LoRA adapter per learner from a config file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from llmmarl.backends.base import BackendError
from llmmarl.cluster import ClusterLostError
from llmmarl.commands.common import SET_HELP, console, load_config
from llmmarl.models import ModelNotAvailableError


def train(
    config: Annotated[Path, typer.Argument(help="Training config (YAML); examples in configs/.", dir_okay=False)],
    resume: Annotated[
        bool, typer.Option(help="Continue the run in the config's output_dir from its newest checkpoint.")
    ] = False,
    set_: Annotated[list[str] | None, typer.Option("--set", help=SET_HELP)] = None,
) -> None:
    """Train one LoRA adapter per learner with multi-agent GRPO or PPO (the config's algorithm)."""
    from llmmarl.train import TrainConfig

    cfg = load_config(TrainConfig.from_yaml, config, set_)
    from llmmarl.train import train as run_training  # imports the trainer only once the config is valid
    from llmmarl.train.checkpoint import CheckpointError

    try:
        run_training(cfg, resume=resume)
    except (FileExistsError, ValueError, ModelNotAvailableError, BackendError, CheckpointError, ClusterLostError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    console.print(f"adapters and manifest.json: {cfg.adapters_path}")
