"""Write docs/textarena.md's table of every TextArena game from real attempts on this machine.

For each game (a folder of TextArena 0.7.4, with all its default ids) a fresh subprocess builds it through the
``textarena:`` adapter, finds the player counts its first id accepts, and plays two games of random moves (a
listed or quoted move, as the ``random`` policy plays) to the end or a step bound, under a time bound. A game that
cannot run says why in one line (the adapter's own check, or what the attempt raised). "tested" says which
checks of tests/test_envs_textarena.py cover the game.

    python scripts/textarena_games.py                 # prints the table
    python scripts/textarena_games.py --write docs/textarena.md   # replaces the table between its markers
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- textarena-table:begin -->", "<!-- textarena-table:end -->"
NAMED = {  # games the adapter's own tests play by name (beyond the conformance checks)
    "SimpleNegotiation": "adapter, runner",
    "TicTacToe": "adapter, runner, refusals",
    "KuhnPoker": "adapter, runner",
    "LiarsDice": "adapter, eliminations, seeding",
    "Poker": "adapter, 3 players",
    "Taboo": "adapter, teams",
    "SecretMafia": "6 players, secret sides",
}

# Runs in the subprocess: one game, all attempts; prints one JSON line.
ATTEMPT = r"""
import json, random, sys, time
from llmmarl.envs import make, UnknownEnvError
from llmmarl.envs.base import random_action
from llmmarl.envs.textarena import availability, default_players
import textarena as ta
env_id, steps = sys.argv[1], int(sys.argv[2])
out = {"id": env_id}
check = availability(env_id)
out["available"], out["why"] = check.ok, check.why
if check.ok:
    counts = []
    for n in range(1, 9):
        try:
            make("textarena:" + env_id, num_players=n).reset(seed=0)
            counts.append(n)
        except Exception:
            pass
    out["players"] = counts
    results = []
    for seed in (0, 1):
        start = time.perf_counter()
        try:
            env = make("textarena:" + env_id)
            env.reset(seed=seed)
            rng, n, refused = random.Random(seed), 0, 0
            while not env.done and n < steps:
                (seat,) = env.pending()
                env.step({seat: random_action(env.observe(seat), rng)})
                refused += env.rejection(seat) is not None
                n += 1
            results.append({"ended": env.done, "steps": n, "refused": refused,
                            "s": round(time.perf_counter() - start, 2)})
        except Exception as e:
            line = next((l.strip() for l in str(e).splitlines() if l.strip() and set(l.strip()) != {"*"}), "")
            results.append({"error": f"{type(e).__name__}: {line}"[:160]})
    out["games"] = results
print(json.dumps(out))
"""


def attempt(env_id: str, steps: int, timeout: float) -> dict[str, object]:
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", ATTEMPT, env_id, str(steps)],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
        )
    except subprocess.TimeoutExpired:
        return {"id": env_id, "available": False, "why": f"no result within {timeout:.0f} s (hangs)"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"id": env_id, "available": False, "why": f"crashed: {last[:160]}"}
    result: dict[str, object] = json.loads(lines[-1])
    result["wall_s"] = round(time.perf_counter() - start, 1)
    return result


def row(game: str, ids: list[str], r: dict[str, object], conformance: set[str]) -> str:
    games = r.get("games") or []
    assert isinstance(games, list)
    errors = [g["error"] for g in games if "error" in g]
    if not r["available"]:
        offline = f"no: {r['why']}"
    elif errors:
        offline = f"no: random play raised {errors[0]}"
    else:
        ends = [f"{g['steps']} steps{'' if g['ended'] else ' (not ended)'}" for g in games]
        offline = "yes (random games: " + ", ".join(ends) + ")"
    players = r.get("players") or []
    assert isinstance(players, list)
    shown = "-" if not players else (f"{players[0]}-{players[-1]}" if len(players) > 1 else str(players[0]))
    tested = [*(["conformance"] if game in conformance else []), *([NAMED[game]] if game in NAMED else [])]
    variants = ", ".join(f"`{i}`" for i in ids[:4]) + (f" (+{len(ids) - 4})" if len(ids) > 4 else "")
    return f"| {game} | {variants} | {shown} | {offline} | {'; '.join(tested) or 'no'} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300, help="Step bound of each random game.")
    parser.add_argument("--timeout", type=float, default=90.0, help="Seconds per game's attempts.")
    parser.add_argument("--write", type=Path, help="Replace the table between the markers of this file.")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from llmmarl.envs.textarena import availability, games_by_folder

    games = games_by_folder()
    conformance = {g for g, ids in games.items() if availability(ids[0]).ok}  # tests/test_envs_textarena.py
    lines = [
        "| game | ids | players | runs offline here | tested |",
        "| --- | --- | --- | --- | --- |",
    ]
    ready = 0
    for game, ids in games.items():
        r = attempt(ids[0], args.steps, args.timeout)
        ready += bool(r["available"]) and not any("error" in g for g in r.get("games") or [])  # type: ignore[union-attr]
        lines.append(row(game, ids, r, conformance))
        print(lines[-1], flush=True)
    summary = (
        f"{ready} of {len(games)} games ran offline here (Python {sys.version_info.major}.{sys.version_info.minor}, "
        f"TextArena 0.7.4); generated by `python scripts/textarena_games.py --write docs/textarena.md`."
    )
    table = "\n".join([*lines, "", summary])
    if args.write:
        text = args.write.read_text()
        head, _, rest = text.partition(BEGIN)
        _, _, tail = rest.partition(END)
        args.write.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")
    print(summary)


if __name__ == "__main__":
    main()
