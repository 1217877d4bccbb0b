"""An agent's policy *as played*, read at the decisions a game names, and the game's measures of it.

A game that measures policies (:mod:`llmmarl.envs.measures`) names its decisions (:class:`DecisionPoint`: an
environment that stops after one seat's one decision); this module asks the agent there exactly what it would be
asked in a real game, through the real path: a :class:`~llmmarl.runner.Runner` plays that one decision (same prompt
templates, grammar, re-ask and fallback as in a game). Only the game is cut short after the decision.

* Greedy decoding (temperature 0): one answer per decision gives the policy exactly.
* Exact reading (:func:`read_exact`): the probability of each label, read from a backend that can
  (:class:`~llmmarl.backends.base.AnswerReader`, see :mod:`llmmarl.agents.policy_read`), or from a scripted policy
  that knows its move probabilities (:class:`~llmmarl.envs.bots.ExactPolicy`). Exact for ACTION-only agents under
  the grammar, whatever their temperature: :func:`read_policy` reads those this way, with no sampling error. Full
  turns are read over sampled prefixes (exact label probabilities after each, averaged).
* Sampling: ``samples`` answers per decision estimate it. An answer that ends in the ``random`` fallback counts as
  the fallback's own odds (uniform over the legal moves), exact, instead of its one random draw.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from llmmarl.agents.specs import AgentSpec, LLMAgentSpec, ScriptedAgentSpec
from llmmarl.backends.base import AnswerReader, Backend
from llmmarl.envs import make
from llmmarl.envs.base import Observation, TextEnv
from llmmarl.envs.measures import DecisionPoint, PolicyReader, PolicyReading, StateReading
from llmmarl.envs.registry import game_measure
from llmmarl.records import EpisodeRecord


def _draw(episode: EpisodeRecord) -> tuple[list[float], bool, bool]:
    """The label probabilities one answer stands for, whether it fell back, whether it was re-asked."""
    if episode.error:
        raise RuntimeError(f"reading game {episode.game_id} broke: {episode.error}")
    (turn,) = episode.turns
    n = len(turn.legal_actions)
    if turn.fallback == "random":
        return [1.0 / n] * n, True, len(turn.attempts) > 1  # the fallback picks uniformly among the legal moves
    return [float(label == turn.action) for label in turn.legal_actions], False, len(turn.attempts) > 1


def read_policy(
    agent: AgentSpec,
    backend: Backend | None,
    points: Sequence[DecisionPoint],
    samples: int = 1,
    seed: int = 0,
    concurrency: int = 64,
    progress: bool = False,
) -> PolicyReading:
    """Read ``agent``'s policy by playing ``samples`` decisions at each of ``points``.

    Greedy LLM agents are read with one decision per point (more would repeat it), agents :func:`exact_readable`
    on ``backend`` exactly. The other seats are never asked. An agent whose fallback is ``forfeit`` has no policy
    over the game's moves (a forfeit is not one): refused.
    """
    from llmmarl.runner import Match, Runner

    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    greedy = isinstance(agent, LLMAgentSpec) and agent.temperature == 0.0
    if isinstance(agent, LLMAgentSpec) and agent.fallback == "forfeit":
        raise ValueError("an agent with fallback 'forfeit' has no policy over the game's moves; read it with 'random'")
    if not greedy and exact_readable(agent, backend):
        return read_exact(agent, backend, points, seed=seed)
    per_point = 1 if greedy else samples
    idle = ScriptedAgentSpec(name=f"{agent.name}-idle-seat", policy="random")  # the seats that never act
    rng = random.Random(f"{seed}/policy-read")
    matches: list[Match] = []
    asked: list[DecisionPoint] = []
    for point in points:
        for _ in range(per_point):
            seats: dict[str, AgentSpec] = {s: agent if s == point.seat else idle for s in point.seats}
            matches.append(
                Match(
                    game_id=len(matches),
                    env=point.env,
                    env_kwargs=dict(point.env_kwargs),
                    seats=seats,
                    seed=rng.randrange(2**31),
                )
            )
            asked.append(point)
    episodes = Runner(backend, concurrency=concurrency, progress=progress).play(matches, desc="policy read")
    states: dict[str, StateReading] = {}
    for ep in sorted(episodes, key=lambda e: int(e.game_id)):
        point = asked[int(ep.game_id)]
        (turn,) = ep.turns
        reading = states.setdefault(
            point.key, StateReading(key=point.key, seat=point.seat, labels=list(turn.legal_actions))
        )
        probs, fell_back, reasked = _draw(ep)
        reading.draws.append(probs)
        reading.fallbacks += fell_back
        reading.reasks += reasked
    return PolicyReading(agent=agent.name, states=states, exact=greedy)


def exact_readable(agent: AgentSpec, backend: Backend | None) -> bool:
    """Whether :func:`read_exact` reads ``agent`` exactly: an ACTION-only LLM agent under the grammar on a
    backend that reads answer distributions."""
    return (
        isinstance(agent, LLMAgentSpec)
        and agent.constrained
        and not agent.lines
        and not agent.forecast
        and isinstance(backend, AnswerReader)
    )


def read_exact(
    agent: AgentSpec,
    backend: Backend | None,
    points: Sequence[DecisionPoint],
    prefix_samples: int = 8,
    seed: int = 0,
) -> PolicyReading:
    """Read ``agent``'s label probabilities at each of ``points``, in one batched read.

    Every point's env is built and reset, and the agent is asked what it would be asked there. An LLM agent is read
    through ``backend``'s answer distributions (:func:`~llmmarl.agents.policy_read.read_decisions`): exact for
    ACTION-only turns, over ``prefix_samples`` sampled prefixes for full turns. Answers that name no label count as
    the random fallback (uniform over the labels); answers the reader did not finish (``unexplored``, at most a few
    in a million by default) are left out and the rest renormalised. A scripted agent must know its move
    probabilities (:class:`~llmmarl.envs.bots.ExactPolicy`).
    """
    from llmmarl.agents.llm import LLMAgents
    from llmmarl.agents.policy_read import read_decisions
    from llmmarl.agents.scripted import make_policy
    from llmmarl.envs.bots import policy_probabilities

    envs: list[tuple[DecisionPoint, TextEnv, Observation]] = []
    for point in points:
        env = make(point.env, **point.env_kwargs)
        env.reset(seed=seed)
        envs.append((point, env, env.observe(point.seat)))
    draws: list[list[float]] = []
    exact = True
    if isinstance(agent, LLMAgentSpec):
        agents = LLMAgents(backend)
        decisions = [agents.start(agent, env, point.seat, obs, []) for point, env, obs in envs]
        for (_, _, obs), r in zip(envs, read_decisions(backend, decisions, prefix_samples, seed), strict=True):
            n, kept = len(obs.legal_actions), max(1e-12, 1.0 - r.unexplored)
            draws.append([(r.probs[label] + r.invalid / n) / kept for label in obs.legal_actions])
            exact = exact and r.exact
    else:
        policy = make_policy(agent.policy)
        for _, env, obs in envs:
            probs = policy_probabilities(policy, env, obs)
            if probs is None:
                raise ValueError(f"scripted policy {agent.policy!r} does not tell its move probabilities")
            draws.append(probs)
    states = {}
    for (point, env, obs), d in zip(envs, draws, strict=True):
        states[point.key] = StateReading(key=point.key, seat=point.seat, labels=list(obs.legal_actions), draws=[d])
        env.close()
    return PolicyReading(agent=agent.name, states=states, exact=exact)


def policy_reader(
    agent: AgentSpec, backend: Backend | None, samples: int = 1, seed: int = 0, progress: bool = False
) -> PolicyReader:
    """A :class:`~llmmarl.envs.measures.PolicyReader` of ``agent`` (see :func:`read_policy`), for a game's measure."""

    def read(points: Sequence[DecisionPoint]) -> PolicyReading:
        return read_policy(agent, backend, points, samples, seed, progress=progress)

    return read


def measure_agent(
    game: str, measures: Sequence[str], agent: AgentSpec, backend: Backend | None, samples: int = 1, seed: int = 0
) -> dict[str, dict[str, float]]:
    """The game's ``measures`` of ``agent``'s policy as played: ``{measure: metrics}``. A measure the game does not
    declare is an :class:`~llmmarl.envs.measures.UnknownMeasureError`."""
    chosen = [game_measure(game, name) for name in measures]  # every name checked before any reading
    read = policy_reader(agent, backend, samples, seed)
    return {m.name: m(read, seed) for m in chosen}
