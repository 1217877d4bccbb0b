"""What each part of the turn buys: train arms that differ only in the lines asked for, then compare them.

Arms (see configs/ablate_*.yaml): reactive (ACTION only), +PREDICT, +FORECAST, +PLAN (as action labels, scored),
+MESSAGE (cooperative games), full. Every arm trains the same model with the same budget (updates x games per
update), the same opponents, evaluation games and seeds; only ``lines``, ``plan_actions`` and the reward terms of
those lines differ. Each arm/seed is its own run folder: a finished one (``result.json``) is skipped, an
unfinished one resumes from its last checkpoint.

    python scripts/ablate_turn.py configs/ablate_tictactoe.yaml
    python scripts/ablate_turn.py configs/ablate_signal.yaml --set seeds=[0,1,2,3,4] --set train.steps=10
    python scripts/ablate_turn.py configs/ablate_kuhn.yaml --report-only     # tables from the runs done so far

Writes reports/ablate_<name>/: ablation.md (95% t-intervals over seeds, minimum detectable effect, decoding cost),
ablation.json and ablation.png.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt

from llmmarl.config_overrides import OverrideError
from llmmarl.runner import Match, Runner
from llmmarl.studies.ablation import (
    AblationConfig,
    minimum_detectable_effect,
    pooled_sd,
    t_interval,
    welch_p,
)
from llmmarl.train import train
from llmmarl.train.loop import MultiAgentTrainer

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("config", help="configs/ablate_<game>.yaml")
p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a key")
p.add_argument("--arms", default=None, help="comma-separated arms to run and report (default: all of the config's)")
p.add_argument("--report-only", action="store_true", help="train nothing; report the finished runs")
p.add_argument("--quiet", action="store_true", help="no progress bars")
args = p.parse_args()
try:
    study = AblationConfig.from_yaml(args.config, args.overrides)
except (OverrideError, ValueError) as e:
    raise SystemExit(f"{args.config}: {e}") from None
if args.arms:
    chosen = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in chosen if a not in study.arms]
    if unknown or study.baseline not in chosen:
        raise SystemExit(
            f"--arms {args.arms}: choose among {', '.join(study.arms)}, baseline {study.baseline} included"
        )
    study.arms = {a: study.arms[a] for a in chosen}

# Metrics of an evaluation lineup, averaged over the learners (a team's learners share their return).
METRICS = ("return", "win_rate", "invalid_rate", "tokens_per_turn", "prediction_accuracy", "forecast_skill")
METRICS += ("plan_following", "message_following", "messages_per_game")


def last_record(metrics: Path, key: str) -> dict[str, Any]:
    """The last line of a run's metrics.jsonl that has ``key``."""
    found: dict[str, Any] = {}
    for line in metrics.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if key in record:
            found = record[key]
    return found


def asked_prompt(trainer: MultiAgentTrainer) -> list[dict[str, str]]:
    """The first prompt a learner is shown in one evaluation-style game: what this arm asks for, as sent."""
    cfg = trainer.cfg
    spec = trainer.evaluator.spec(cfg.learners[0].name, cfg.learners[0].name)
    others = trainer.evaluator.opponents() or [trainer.evaluator.spec(lr.name, lr.name) for lr in cfg.learners[1:]]
    seats = dict(zip(trainer.env.possible_agents, [spec, *others], strict=False))
    match = Match(game_id=0, env=cfg.env, env_kwargs=cfg.env_kwargs, seats=seats, seed=cfg.seed)
    episode = Runner(trainer.engine.backend).play([match])
    first = next(t for t in episode[0].turns if t.attempts)
    return first.attempts[0].messages


def run_one(arm: str, seed: int) -> dict[str, Any]:
    """Train (or resume) one arm/seed and keep its final evaluation in result.json; a finished run is read back."""
    out = study.run_dir(arm, seed)
    done = out / "result.json"
    if done.exists():
        print(f"{arm} seed {seed}: done, skipped")
        return dict(json.loads(done.read_text(encoding="utf-8")))
    cfg = study.run_config(arm, seed)
    print(f"{arm} seed {seed}: training {cfg.steps} updates x {cfg.games_per_update} games -> {out}")
    trainer = train(cfg, resume=(out / "checkpoints").exists(), progress=not args.quiet)
    metrics = out / "metrics.jsonl"
    updates = [json.loads(line) for line in metrics.read_text(encoding="utf-8").splitlines()]
    train_tokens = [
        m["samples/completion_tokens"]
        for u in updates
        for m in u.get("learners", {}).values()
        if "samples/completion_tokens" in m
    ]
    result = {
        "arm": arm,
        "seed": seed,
        "lines": cfg.lines,
        "rewards": cfg.rewards.as_dict(),
        "eval": last_record(metrics, "eval"),
        "nash_conv": last_record(metrics, "nash_conv"),
        "train_tokens_per_sample": sum(train_tokens) / len(train_tokens) if train_tokens else None,
        "train_seconds": trainer.state.train_seconds,
        "prompt": asked_prompt(trainer),
    }
    done.write_text(json.dumps(result, indent=1, default=float), encoding="utf-8")
    return result


def mean_over_learners(per_learner: dict[str, dict[str, float]], key: str) -> float | None:
    values = [m[key] for m in per_learner.values() if key in m]
    return sum(values) / len(values) if values else None


# ---- train every arm and seed (finished ones are read back) ---------------------------------------------------------
results: dict[str, list[dict[str, Any]]] = {arm: [] for arm in study.arms}
for seed in study.seeds:  # seed-major: a stopped study has every arm at the same number of seeds
    for arm in study.arms:
        if args.report_only:
            path = study.run_dir(arm, seed) / "result.json"
            if path.exists():
                results[arm].append(json.loads(path.read_text(encoding="utf-8")))
        else:
            results[arm].append(run_one(arm, seed))

# ---- statistics over seeds ------------------------------------------------------------------------------------------
lineups = sorted({lineup for rs in results.values() for r in rs for lineup in r["eval"]})
summary: dict[str, Any] = {"arms": {}, "lineups": lineups}
for arm, rs in results.items():
    row: dict[str, Any] = {"lines": study.arms[arm].lines, "seeds": [r["seed"] for r in rs], "lineups": {}}
    row["rewards_on"] = sorted(k for k, v in (rs[0]["rewards"] if rs else {}).items() if v)
    for lineup in lineups:
        cell: dict[str, Any] = {}
        for key in METRICS:
            values = [v for r in rs if (v := mean_over_learners(r["eval"].get(lineup, {}), key)) is not None]
            if values:
                mean, lo, hi = t_interval(values)
                cell[key] = {"mean": mean, "lo": lo, "hi": hi, "per_seed": values}
        row["lineups"][lineup] = cell
    nash = [v for r in rs if (v := mean_over_learners(r.get("nash_conv") or {}, "nash_conv")) is not None]
    if nash:
        mean, lo, hi = t_interval(nash)
        row["nash_conv"] = {"mean": mean, "lo": lo, "hi": hi, "per_seed": nash}
    summary["arms"][arm] = row

n_seeds = min((len(rs) for rs in results.values()), default=0)
detectable: dict[str, Any] = {}
for lineup in lineups:
    groups = [c["return"]["per_seed"] for row in summary["arms"].values() if "return" in (c := row["lineups"][lineup])]
    sd, df = pooled_sd(groups)
    base = summary["arms"][study.baseline]["lineups"][lineup].get("return", {}).get("per_seed", [])
    detectable[lineup] = {
        "between_seed_sd": sd,
        "df": df,
        "mde": minimum_detectable_effect(sd, n_seeds),
        "p_vs_baseline": {
            arm: welch_p(row["lineups"][lineup].get("return", {}).get("per_seed", []), base)
            for arm, row in summary["arms"].items()
            if arm != study.baseline
        },
    }
shared = study.run_config(study.baseline, study.seeds[0])
summary |= {
    "name": study.name,
    "env": shared.env,
    "model": shared.model,
    "budget": {"updates": shared.steps, "games_per_update": shared.games_per_update},
    "training_games": shared.steps * shared.games_per_update,
    "opponents": shared.opponents,
    "eval_opponents": shared.eval_opponents,
    "eval_games": shared.eval_games,
    "seeds": study.seeds,
    "seeds_done": n_seeds,
    "baseline": study.baseline,
    "detectable": detectable,
}


# ---- report: markdown table, JSON, plot -----------------------------------------------------------------------------
def fmt(c: dict[str, Any] | None, pct: bool = False) -> str:
    if not c:
        return "-"
    scale, spec = (100.0, ".0f") if pct else (1.0, "+.3f")
    if math.isnan(c["lo"]):
        return f"{c['mean'] * scale:{spec}}"
    lo, hi = (max(c["lo"], 0.0), min(c["hi"], 1.0)) if pct else (c["lo"], c["hi"])  # a rate stays in [0, 1]
    return f"{c['mean'] * scale:{spec}} [{lo * scale:{spec}}, {hi * scale:{spec}}]"


study.reports.mkdir(parents=True, exist_ok=True)
md = [
    f"# Turn ablation: {shared.env}",
    "",
    f"Model `{shared.model}`; budget {shared.steps} updates x {shared.games_per_update} games = "
    f"{shared.steps * shared.games_per_update} training games per run; opponents {shared.opponents or 'none'}; "
    f"evaluation: {shared.eval_games} games per lineup (temperature {shared.eval_temperature:g}); "
    f"seeds {study.seeds} ({n_seeds} finished per arm). Cells: mean over seeds [95% t-interval over seeds].",
    "",
]
for lineup in lineups:
    d = detectable[lineup]
    power = (
        f"Between-seed SD of the return {d['between_seed_sd']:.3f} (pooled, df {d['df']}): with {n_seeds} seeds per "
        f"arm, a difference of return smaller than **{d['mde']:.3f}** is not reliably detectable (80% power, "
        "two-sided 5%)."
        if math.isfinite(d["mde"])
        else f"With {n_seeds} seed(s) per arm the between-seed SD, the intervals and the detectable effect cannot be "
        "estimated: run at least 2 seeds (3 or more to read the intervals)."
    )
    md += [
        f"## {lineup}",
        "",
        power + " p: Welch t-test against the baseline arm.",
        "",
        "| arm | lines | reward terms | return | p vs " + study.baseline + " | win % | invalid % | tokens/turn "
        "| prediction acc % | forecast skill | plan following % | NashConv |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for arm, row in summary["arms"].items():
        c = row["lineups"][lineup]
        p_value = d["p_vs_baseline"].get(arm)
        md.append(
            f"| {arm} | {', '.join(row['lines']) or 'ACTION only'} | {', '.join(row['rewards_on'])} "
            f"| {fmt(c.get('return'))} | {'-' if p_value is None or math.isnan(p_value) else f'{p_value:.2f}'} "
            f"| {fmt(c.get('win_rate'), True)} | {fmt(c.get('invalid_rate'), True)} "
            f"| {c['tokens_per_turn']['mean']:.1f} | {fmt(c.get('prediction_accuracy'), True)} "
            f"| {fmt(c.get('forecast_skill'))} | {fmt(c.get('plan_following'), True)} | {fmt(row.get('nash_conv'))} |"
            if "tokens_per_turn" in c
            else f"| {arm} | {', '.join(row['lines']) or 'ACTION only'} | | no finished seed | | | | | | | | |"
        )
    md.append("")
md.append(f"Command: `python scripts/ablate_turn.py {args.config}{''.join(' --set ' + o for o in args.overrides)}`")
(study.reports / "ablation.md").write_text("\n".join(md) + "\n", encoding="utf-8")
(study.reports / "ablation.json").write_text(json.dumps(summary, indent=1, default=float), encoding="utf-8")

fig, axes = plt.subplots(1, 2, figsize=(11, 4))
arms = list(summary["arms"])
width = 0.8 / max(len(lineups), 1)
for i, lineup in enumerate(lineups):
    cells = [summary["arms"][a]["lineups"][lineup].get("return") for a in arms]
    means = [c["mean"] if c else math.nan for c in cells]
    errs = [[c["mean"] - c["lo"] if c else 0 for c in cells], [c["hi"] - c["mean"] if c else 0 for c in cells]]
    errs = [[0.0 if math.isnan(e) else e for e in side] for side in errs]
    xs = [j + i * width for j in range(len(arms))]
    axes[0].bar(xs, means, width, yerr=errs, capsize=3, label=lineup)
axes[0].set_xticks([j + width * (len(lineups) - 1) / 2 for j in range(len(arms))], arms, rotation=20)
axes[0].set_ylabel("evaluation return (mean over seeds, 95% t-CI)")
axes[0].legend(fontsize=8)
tokens = [
    summary["arms"][a]["lineups"][lineups[0]].get("tokens_per_turn", {}).get("mean", math.nan) if lineups else math.nan
    for a in arms
]
axes[1].bar(arms, tokens, color="grey")
axes[1].set_ylabel("answer tokens per turn (decoding cost)")
axes[1].tick_params(axis="x", rotation=20)
fig.suptitle(f"{shared.env}: {shared.steps} updates x {shared.games_per_update} games, {n_seeds} seeds per arm")
fig.tight_layout()
fig.savefig(study.reports / "ablation.png", dpi=100)
print(f"wrote {study.reports}/ablation.md, ablation.json, ablation.png")
