"""What a refactor must not change: the smoke runs of the three training scripts and a scripted tournament.

Runs each on its smoke budget with the tiny model and a fixed seed on CPU, and writes one JSON file of everything
that depends on the code's behaviour: every ``metrics.jsonl`` row without its timings, the evaluation lines, and the
tournament's game results. Run it before and after a change and compare:

    python scripts/fingerprint.py before.json          # on the old commit
    python scripts/fingerprint.py after.json           # on the new one
    python scripts/fingerprint.py --compare before.json after.json

Timings, paths and throughput differ from run to run, so they are left out; anything else that differs is a change
of behaviour (or of how random numbers are drawn, which the change has to explain).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "llmmarl.cli"]
SCRIPTS = ["train_tictactoe_selfplay.py", "train_signal.py", "train_kuhn.py"]
# Scripted tournaments: every participant a bot, so the results depend on the runner, the games and the tally only.
TOURNAMENTS = {
    "kuhn_poker": ("{env: kuhn_poker, scoring: duplicate}", "kuhn_nash"),
    "tictactoe_v3": ("tictactoe_v3", "minimax"),
}
TOURNAMENT = """
name: fingerprint
games: [GAME]
participants:
  - {kind: scripted, name: random-a, policy: random}
  - {kind: scripted, name: random-b, policy: random}
  - {kind: scripted, name: bot, policy: BOT}
schedule: {format: round_robin, games_per_pairing: 6}
seed: 0
db: DB
"""
_VOLATILE = re.compile(r"(^time/|^time$|_s$|per_s$|_time$|/seconds|tokens_per_s|throughput)")
_PATHS = {"db", "output_dir", "path", "created"}  # where a run wrote, not what it did


def _clean(value: Any) -> Any:
    """Drop timings, round floats (the same computation can differ in the last bits between processes)."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if not _VOLATILE.search(str(k)) and k not in _PATHS}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, float):
        return round(value, 5)
    return value


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TRL_EXPERIMENTAL_SILENCE": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=1800)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def fingerprint(threads: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for script in SCRIPTS:
            run_dir = Path(tmp) / script
            proc = _run(
                [
                    sys.executable,
                    str(ROOT / "scripts" / script),
                    "--smoke",
                    "--model",
                    "tiny",
                    "--seed",
                    "0",
                    "--threads",
                    str(threads),
                    "--output-dir",
                    str(run_dir),
                ],
                ROOT,
            )
            rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
            evals = [line.strip() for line in proc.stdout.splitlines() if "95% CI" in line]
            out[script] = {"metrics": _clean(rows), "evaluation": evals}
            print(f"{script}: {len(rows)} metric rows, {len(evals)} evaluation lines", flush=True)
        for game, (spec, bot) in TOURNAMENTS.items():
            db, cfg, js = (Path(tmp) / f"{game}.{ext}" for ext in ("sqlite", "yaml", "json"))
            cfg.write_text(TOURNAMENT.replace("GAME", spec).replace("BOT", bot).replace("DB", str(db)))
            _run([*CLI, "tournament", str(cfg), "--html", str(Path(tmp) / "t.html")], ROOT)
            _run([*CLI, "report", str(db), "--json", str(js)], ROOT)
            report = json.loads(js.read_text())
            out[f"tournament {game}"] = _clean(report)
        print("tournaments: done", flush=True)
    return out


def compare(a: Path, b: Path) -> int:
    left, right = _clean(json.loads(a.read_text())), _clean(json.loads(b.read_text()))
    differ = 0
    for key in sorted(set(left) | set(right)):
        same = left.get(key) == right.get(key)
        differ += not same
        print(f"{'same     ' if same else 'DIFFERENT'} {key}")
    return 1 if differ else 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("output", nargs="?", type=Path, help="where to write the fingerprint (JSON)")
    p.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (results depend on it: keep it fixed)")
    args = p.parse_args()
    if args.compare:
        sys.exit(compare(*args.compare))
    if args.output is None:
        p.error("give an output file, or --compare BEFORE AFTER")
    args.output.write_text(json.dumps(fingerprint(args.threads), indent=1, sort_keys=True))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
