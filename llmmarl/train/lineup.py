"""Who sits where: the matches of one update, and of an evaluation.

An update plays ``games_per_update`` games in groups of ``group_size``. The games of a group share their seed (the
same deal, the same start) and their seating, so ``credit: group`` can compare them; groups differ in seed and,
where the setting allows, in seating (seats rotate across groups, so a learner plays every seat). Seeds come from
``Random(f"{seed}/{step}")``: an update's games depend only on the config and the step, which makes a resumed run
play the games the killed one would have played.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from llmmarl.agents.specs import AgentSpec, LLMAgentSpec, ScriptedAgentSpec
from llmmarl.envs.base import TextEnv
from llmmarl.runner import Match
from llmmarl.train.config import TrainConfig
from llmmarl.train.league import League, Snapshot

AgentSpecT = TypeVar("AgentSpecT", bound=LLMAgentSpec | ScriptedAgentSpec)


def decoded(spec: AgentSpecT, cfg: TrainConfig, temperature: float) -> AgentSpecT:
    """An LLM agent decoded as the run decodes (grammar, re-ask, answer budget, template, lines) at ``temperature``:
    learners and opponents alike, so a frozen adapter trained under the grammar meets it again. Scripted agents are
    returned as they are."""
    if not isinstance(spec, LLMAgentSpec):
        return spec
    return spec.model_copy(
        update={
            "temperature": temperature,
            "max_new_tokens": cfg.max_new_tokens,
            "template": cfg.template,
            "reask": cfg.reask,
            "constrained": cfg.constrained or cfg.canonical,
            "canonical": cfg.canonical,
            "lines": frozenset(cfg.lines),
            "plan_actions": cfg.plan_actions,
        }
    )


@dataclass(frozen=True)
class Group:
    """One group of games: its seating, and the league snapshot in it (if any)."""

    seats: dict[str, AgentSpec]
    snapshot: str | None = None


def _rotate(items: Sequence[str], k: int) -> list[str]:
    k %= max(1, len(items))
    return [*items[k:], *items[:k]]


def _place_learners(cfg: TrainConfig, env: TextEnv, learners: Sequence[AgentSpec], g: int) -> dict[str, AgentSpec]:
    """independent / team: every learner in the game; pinned learners in their seats, the others rotated."""
    seats = env.possible_agents
    out: dict[str, AgentSpec] = {}
    pinned = {lr.name: lr.seats for lr in cfg.learners if lr.seats}
    for spec in learners:
        if spec.name in pinned:
            options = [s for s in pinned[spec.name] if s not in out]
            if not options:
                raise ValueError(f"learner {spec.name}: all its seats {pinned[spec.name]} are taken by other learners")
            out[options[g % len(options)]] = spec
    free = [s for s in seats if s not in out]
    if cfg.setting == "team":
        # Teammates first: the free seats of the team the pinned learners are on, else the largest team.
        teams = [env.teams[s] for s in out] or sorted(
            (env.teams[s] for s in seats), key=lambda t: -sum(env.teams[s] == t for s in seats)
        )
        free = [s for s in free if env.teams[s] == teams[0]] + [s for s in free if env.teams[s] != teams[0]]
    else:
        free = _rotate(free, g)
    for spec in learners:
        if spec.name not in pinned:
            out[free.pop(0)] = spec
    return out


def _learner_seat(cfg: TrainConfig, env: TextEnv, learner: str, k: int) -> str:
    pinned = next(lr.seats for lr in cfg.learners if lr.name == learner)
    options = pinned or env.possible_agents
    return options[k % len(options)]


def training_groups(
    cfg: TrainConfig,
    env: TextEnv,
    step: int,
    learners: Sequence[LLMAgentSpec],
    opponents: Sequence[AgentSpec],
    league: League | None = None,
    snapshot_spec: Callable[[Snapshot], LLMAgentSpec] | None = None,
) -> tuple[list[Group], list[int]]:
    """The seating and the seed of every group of update ``step``."""
    rng = random.Random(f"{cfg.seed}/{step}")
    seats = env.possible_agents
    groups: list[Group] = []
    for g in range(cfg.groups_per_update):
        if cfg.setting == "self_play":
            groups.append(Group({s: learners[0] for s in seats}))
        elif cfg.setting in ("independent", "team"):
            placed = _place_learners(cfg, env, learners, g)
            rest = [s for s in seats if s not in placed]
            groups.append(Group({**placed, **{s: opponents[(g + i) % len(opponents)] for i, s in enumerate(rest)}}))
        else:  # fixed_opponents, league: one learner per group, the other seats one opponent
            learner = learners[g % len(learners)]
            seat = _learner_seat(cfg, env, learner.name, g // len(learners))
            opponent: AgentSpec
            snapshot = None
            if cfg.setting == "fixed_opponents":
                opponent = opponents[(g // len(learners)) % len(opponents)]
            elif rng.random() < cfg.league.self_play_prob:
                opponent = learner
            elif opponents and rng.random() < len(opponents) / (len(opponents) + len(league.snapshots)):  # type: ignore[union-attr]
                opponent = rng.choice(list(opponents))
            else:
                assert league is not None and snapshot_spec is not None
                picked = league.sample(rng)
                opponent, snapshot = snapshot_spec(picked), picked.name
            groups.append(Group({s: (learner if s == seat else opponent) for s in seats}, snapshot))
    return groups, [rng.randrange(2**31) for _ in groups]


def group_matches(cfg: TrainConfig, groups: Sequence[Group], seeds: Sequence[int]) -> list[Match]:
    """``group_size`` games per group; game ``g * group_size + k`` is the k-th game of group ``g``."""
    return [
        Match(game_id=g * cfg.group_size + k, env=cfg.env, env_kwargs=cfg.env_kwargs, seats=group.seats, seed=seed)
        for g, (group, seed) in enumerate(zip(groups, seeds, strict=True))
        for k in range(cfg.group_size)
    ]


def eval_lineups(
    cfg: TrainConfig, env: TextEnv, learners: Sequence[AgentSpec], opponents: Sequence[AgentSpec]
) -> dict[str, list[dict[str, AgentSpec]]]:
    """Evaluation seatings by name (``"<learner> vs <opponent>"`` or ``"team"``); seats rotate game by game."""
    seats = env.possible_agents
    out: dict[str, list[dict[str, AgentSpec]]] = {}
    if cfg.setting in ("independent", "team") and not cfg.eval_opponents:
        seatings = []
        for i in range(cfg.eval_games):
            placed = _place_learners(cfg, env, learners, i)
            seatings.append({**placed, **{s: opponents[i % len(opponents)] for s in seats if s not in placed}})
        out["team" if cfg.setting == "team" else "all"] = seatings
        return out
    for learner in learners:
        for opponent in opponents:
            out[f"{learner.name} vs {opponent.name}"] = [
                {s: learner if s == _learner_seat(cfg, env, learner.name, i) else opponent for s in seats}
                for i in range(cfg.eval_games)
            ]
    return out
