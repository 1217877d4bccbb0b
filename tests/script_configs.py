"""The training configs a reference script builds for a command line, without training anything.

A script is run in-process with its trainer replaced by a recorder: every ``TrainConfig`` handed to
``MultiAgentGRPO`` (or to ``llmmarl.train.train``) is dumped, and the run stops where its results would be read.
``tests/data/script_configs.json`` holds what the scripts built for the command lines below; the test compares the
current scripts with it, so a refactor of their argument handling cannot change a run unnoticed. Regenerate it
(only when a change of the scripts' runs is intended) with ``python tests/script_configs.py``.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from io import StringIO
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "data" / "script_configs.json"

# Command lines per script: each script's defaults and --smoke, the recipes quoted in the README, docs/results.md,
# reports/ and adapters/manifest.json, and every flag at least once.
COMMANDS: dict[str, list[str]] = {
    "train_tictactoe_selfplay.py": [
        "",
        "--smoke",
        "--smoke --model tiny",
        "--smoke --model tiny --output-dir out/ttt",
        "--smoke --model tiny --output-dir out/ttt --eval-only --eval-games 12",
        "--smoke --steps 3 --max-new-tokens 40",
        "--smoke --resume",
        "--opponent self",
        "--opponent self --smoke --model tiny",
        "--opponent random",
        "--steps 19 --warmup 6 --no-reask --max-new-tokens 40 --lr 2e-4",
        "--steps 19 --warmup 6 --eval-games 200 --no-reask --max-new-tokens 40 --lr 2e-4",
        "--warmup 4 --steps 13 --steps-per-update 4 --no-reask --max-new-tokens 40 --lr 2e-4",
        "--warmup 4 --steps 13 --steps-per-update 4 --no-reask --max-new-tokens 40 --lr 2e-4 --eval-games 400 "
        "--output-dir runs/train/ttt-b30",
        "--warmup 4 --steps 30 --minutes 29.5 --steps-per-update 4 --no-reask --max-new-tokens 40 --lr 2e-4 "
        "--eval-games 400 --eval-only",
        "--warmup 5 --steps 17 --steps-per-update 4 --no-reask --max-new-tokens 40 --lr 2e-4 --eval-games 200",
        "--constrained --steps 16 --lr 3e-4 --max-new-tokens 40 --no-reask --max-samples 48 --eval-games 200",
        "--credit group --games-per-update 8 --group-size 2 --threads 1 --seed 3 --skip-base",
    ],
    "train_signal.py": [
        "",
        "--smoke",
        "--smoke --model tiny",
        "--smoke --model tiny --no-messages",
        "--smoke --model tiny --output-dir out/signal",
        "--smoke --resume",
        "--no-messages",
        "--constrained --steps 6 --games-per-update 16 --max-new-tokens 64",
        "--constrained --steps 6 --games-per-update 16 --max-new-tokens 64 --no-messages",
        "--vocabulary colors",
        "--vocabulary symbols --num-items 3",
        "--vocabulary colors --teach 4",
        "--vocabulary colors --teach 4 --freeze-listener",
        "--smoke --model tiny --teach 2",
        "--constrained --steps 3 --games-per-update 16 --max-new-tokens 96 --eval-games 64 --prediction-weight 0.1 "
        "--lr 2e-4",
        "--constrained --steps 10 --games-per-update 16 --max-new-tokens 96 --eval-games 64 --prediction-weight 0.1 "
        "--lr 2e-4 --steps-per-update 4",
        "--vocabulary colors --constrained --teach 4 --steps 8 --games-per-update 16 --max-new-tokens 80 "
        "--steps-per-update 4 --lr 2e-4 --prediction-weight 0.1 --eval-games 64",
        "--vocabulary colors --constrained --teach 4 --freeze-listener --steps 10 --minutes 22 --games-per-update 32 "
        "--max-new-tokens 80 --steps-per-update 4 --lr 2e-4 --prediction-weight 0.1 --eval-games 64",
        "--message-cost 0.05 --group-size 8 --threads 1 --seed 2",
        "--teach 2 --no-messages",
        "--freeze-listener",
    ],
    "train_kuhn.py": [
        "",
        "--smoke",
        "--smoke --model tiny",
        "--smoke --model tiny --output-dir out/kuhn",
        "--smoke --resume",
        "--warmup 4 --steps 10 --no-reask --max-new-tokens 40 --lr 2e-4",
        "--warmup 4 --steps 8 --games-per-update 32 --no-reask --max-new-tokens 40 --lr 2e-4 --eval-games 64",
        "--opponent kuhn_nash --credit role --steps-per-update 2 --minutes 3",
        "--prediction-weight 0 --nash-conv 0 --max-samples 16 --group-size 8 --threads 1 --seed 5 --skip-base",
    ],
    "compare_algorithms.py": [
        "",
        "--smoke",
        "--game tictactoe_v3 --steps 30 --games-per-update 16",
        "--game signal_v0 --steps 6 --games-per-update 8 --group-size 2 --constrained --max-new-tokens 64 "
        "--eval-games 16",
        "--game signal_v0 --steps 6 --games-per-update 8 --group-size 2 --constrained --max-new-tokens 96 "
        "--eval-games 32 --threads 1",
        "--game tictactoe_v3 --steps 6 --games-per-update 8 --group-size 2 --constrained --max-new-tokens 48 "
        "--eval-games 32 --threads 1",
        "--algorithms grpo,ppo --budget 8 --grpo-steps 2 --critic-lr 1e-4 --lr 3e-5 --seed 1 --model tiny",
        "--algorithms grpo,nope",
    ],
}


class _Stop(Exception):
    """Raised by the recorder where the script's training would start."""


def _teaching(cfg: Any) -> bool:
    return Path(cfg.output_dir).name == "teach"  # train_signal.py --teach: its first stage


def _results(cfg: Any) -> dict[str, Any]:
    """A teaching stage's evaluation (none); any other run's stops the script."""
    if _teaching(cfg):
        return {}
    raise _Stop


def _write_adapters(cfg: Any) -> None:
    for learner in cfg.learners:  # what a later stage's init_adapter and llm@ opponent check for
        folder = cfg.adapters_path / learner.name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "adapter_config.json").write_text("{}")


class _State:
    """A run's state as the scripts read it: its evaluation stops the script (see :func:`_results`)."""

    step = 0
    train_seconds = 0.0

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    @property
    def eval_results(self) -> dict[str, Any]:
        return _results(self.cfg)


@contextmanager
def _recording(configs: list[dict[str, Any]]) -> Iterator[None]:
    import llmmarl.train as train_pkg
    import llmmarl.train.grpo as grpo
    import llmmarl.train.metrics as metrics

    class Recorder:
        """Stands in for a trainer: records its config. Its evaluation, read where training has ended, stops the
        script; a teaching stage (train_signal.py --teach) "trains" on: it writes empty adapters for the next stage."""

        def __init__(self, cfg: Any, progress: bool = True) -> None:
            configs.append(cfg.model_dump(mode="json"))
            self.cfg = cfg
            self.state = _State(cfg)
            self.checkpointer = SimpleNamespace(resume=lambda: False)
            self.evaluator = SimpleNamespace(
                compare=lambda *a, **k: {}, spec=lambda *a, **k: None, evaluate=lambda *a, **k: self.state.eval_results
            )

        def train(self) -> dict[str, Any]:
            _write_adapters(self.cfg)
            return self.state.eval_results

        def close(self) -> None:
            pass

    def record_train(cfg: Any, resume: bool = False, progress: bool = True) -> Recorder:
        """Stands in for llmmarl.train.train: a script that reads the run's evaluation stops there."""
        trainer = Recorder(cfg, progress)
        if _teaching(cfg):
            trainer.train()
        return trainer

    saved = (grpo.MultiAgentGRPO, train_pkg.train, metrics.read_metrics)
    grpo.MultiAgentGRPO, train_pkg.train, metrics.read_metrics = Recorder, record_train, lambda path: []  # type: ignore[assignment,misc]
    try:
        yield
    finally:
        grpo.MultiAgentGRPO, train_pkg.train, metrics.read_metrics = saved


def capture(script: str, command: str, cwd: Path) -> dict[str, Any]:
    """``{"configs": [...], "exit": code}``: the configs ``script`` builds for ``command``, run in ``cwd``."""
    configs: list[dict[str, Any]] = []
    argv, here = sys.argv, Path.cwd()
    sys.argv = [script, *command.split()]
    cwd.mkdir(parents=True, exist_ok=True)
    os.chdir(cwd)
    code: int | str | None = 0
    try:
        with _recording(configs), redirect_stdout(StringIO()), redirect_stderr(StringIO()):
            runpy.run_path(str(ROOT / "scripts" / script), run_name="__main__")
    except _Stop:
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) or e.code is None else 1
    finally:
        sys.argv = argv
        os.chdir(here)
    return {"configs": configs, "exit": code or 0}


def capture_all(cwd: Path) -> dict[str, dict[str, Any]]:
    """Every command line of :data:`COMMANDS`, each in a fresh folder under ``cwd``."""
    return {
        script: {command: capture(script, command, cwd / f"{script}-{i}") for i, command in enumerate(commands)}
        for script, commands in COMMANDS.items()
    }


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        data = capture_all(Path(tmp))
    FIXTURE.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(f"{sum(len(v) for v in data.values())} command lines -> {FIXTURE}")
