"""The probe suite: every algorithm trained on every probe game it applies to, its policy read exactly.

A probe (:mod:`llmmarl.envs.games.probes`) has a known optimal policy, so "did it learn?" has a yes-or-no answer:
the learner's policy, read exactly at the probe's decision states (:mod:`llmmarl.agents.policy_read`: the
probability of each label as the agent samples it, at the training temperature), is compared with a threshold.

=======================  ==================================================  ==========
probe                    measure (read exactly)                              threshold
=======================  ==================================================  ==========
bandit                   P(paying word)                                      >= 0.95
contextual               min over cues of P(the cue's word)                  >= 0.9
contextual_hard          the same, 8 words, each cue's word one the default  >= 0.9
                         model says under 1% of the time at that cue
delayed                  P(paying word at step 1)                            >= 0.9
coordination             P(the two words are partners)                       >= 0.9
speaker_listener         P(listener picks the goal), goals equally likely    >= 0.9
pennies                  time-averaged max over seats of |P(first word)-1/2|  <= 0.1
=======================  ==================================================  ==========

:func:`run_probe` trains one algorithm on one probe with a budget of updates, reading the policy every
``read_every`` updates, and stops once the threshold is reached (pennies runs its whole budget and averages).
``scripts/bench_learning.py`` runs the table; ``docs/learning.md`` holds its results.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from llmmarl.agents.llm import LLMAgents, LLMDecision, keep_asked
from llmmarl.agents.policy_read import read_decisions
from llmmarl.agents.specs import LLMAgentSpec
from llmmarl.agents.turn import parse_turn
from llmmarl.backends.base import AnswerQuery, AnswerReader, Backend
from llmmarl.config_overrides import apply_overrides
from llmmarl.envs import make
from llmmarl.envs.base import TextEnv

#: Algorithms of the suite: the registered name and the config block that selects the variant.
ALGORITHMS: dict[str, dict[str, Any]] = {
    "grpo": {"algorithm": "grpo", "group_size": 4},
    "rloo": {"algorithm": "rloo", "group_size": 4},
    "ppo": {"algorithm": "ppo", "group_size": 1, "ppo": {"critic": "decentralised"}},
    "ppo_central": {"algorithm": "ppo", "group_size": 1, "ppo": {"critic": "centralised"}},
    # Every game its own state: the estimator credits every label at each, so groups of one seed add nothing.
    "all_action": {"algorithm": "all_action", "group_size": 1},
}

Reader = Callable[[Backend, "ProbeRun"], float]

#: contextual_hard's answer: each cue's paying word (see PROBES).
HARD_MAPPING = {"north": "olive", "south": "coral", "east": "slate"}

#: The tiny model's recipe. It is a random network whose final norm fixes the hidden state's size and whose tied
#: embeddings are small, so no adapter can make two words' logits differ by more than about 2: at T = 1 that caps
#: P(one of three words) near 0.74, whatever the algorithm and learning rate (measured). At T = 0.3 the same gap is
#: worth 7, so the probes' thresholds are reachable; the policy trained and read is the T = 0.3 one.
TINY: dict[str, Any] = {"temperature": 0.3, "learning_rate": 1e-2}


@dataclass
class ProbeRun:
    """What a measure needs: the probe's game (its answer), the learners' specs as they sample, by seat."""

    env: TextEnv
    specs: dict[str, LLMAgentSpec]  # seat -> the learner playing it
    # What the measure is made of, filled by the measure (contextual: each cue's P(its word)), so that a run can
    # show which part holds the minimum back.
    details: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Probe:
    name: str  # the suite's name; the game is probe_<name>
    env_kwargs: dict[str, Any]
    learners: list[dict[str, Any]]  # TrainConfig learners
    setting: str
    measure: Reader
    threshold: float
    higher_is_better: bool = True
    multi_seat: bool = False  # the centralised critic applies only here
    lines: tuple[str, ...] = ()  # the turn lines asked for besides ACTION
    max_new_tokens: int = 16  # the answer budget; the turn grammar drops a MESSAGE line that does not fit
    env: str | None = None  # the game, when not probe_<name> (a variant of another probe's game)
    one_decision: bool = False  # one seat, one ACTION-only decision: what algorithm: all_action can branch

    @property
    def game(self) -> str:
        return self.env or f"probe_{self.name}"

    def applies(self, algorithm: str) -> bool:
        if algorithm == "all_action":
            return self.one_decision
        return algorithm != "ppo_central" or self.multi_seat

    def reached(self, value: float) -> bool:
        return value >= self.threshold if self.higher_is_better else value <= self.threshold


# ---- reading a probe's policy exactly ----------------------------------------------------------------------------
def _decision(backend: Backend, env: TextEnv, seat: str, spec: LLMAgentSpec, inbox: list[str]) -> LLMDecision:
    return LLMAgents(backend).start(spec, env, seat, env.observe(seat), inbox)


def _probs(backend: Backend, decisions: Sequence[LLMDecision]) -> list[dict[str, float]]:
    return [r.normalised() for r in read_decisions(backend, decisions, from_start=True)]


def _bandit(backend: Backend, run: ProbeRun) -> float:
    env: Any = run.env
    env.reset(seed=0)
    (probs,) = _probs(backend, [_decision(backend, env, "player_0", run.specs["player_0"], [])])
    return probs[env.paying]


def _contextual(backend: Backend, run: ProbeRun) -> float:
    env: Any = run.env
    decisions, wanted = [], []
    for cue in env.cues:
        env.reset(seed=0)
        env.cue = cue  # every cue, not the reset seed's
        decisions.append(_decision(backend, env, "player_0", run.specs["player_0"], []))
        wanted.append(env.mapping[cue])
    per_cue = [p[w] for p, w in zip(_probs(backend, decisions), wanted, strict=True)]
    run.details.update(zip(env.cues, per_cue, strict=True))
    return min(per_cue)


def _delayed(backend: Backend, run: ProbeRun) -> float:
    return _bandit(backend, run)  # step 1's decision, with its own paying word


def _coordination(backend: Backend, run: ProbeRun) -> float:
    env: Any = run.env
    env.reset(seed=0)
    p0, p1 = _probs(backend, [_decision(backend, env, s, run.specs[s], []) for s in ("player_0", "player_1")])
    return sum(p * p1[env.partner[w]] for w, p in p0.items())


def _speaker_listener(backend: Backend, run: ProbeRun) -> float:
    """Sum over goals (equally likely) and messages of P(message | goal) * P(listener picks goal | message)."""
    env: Any = run.env
    reader: AnswerReader = backend  # type: ignore[assignment]
    speakers = []
    for goal in env.goals:
        env.reset(seed=0)
        env.goal = goal
        speakers.append(_decision(backend, env, "speaker_0", run.specs["speaker_0"], []))
    said: list[dict[str | None, float]] = []
    for d, dist in zip(
        speakers, reader.answer_distribution([AnswerQuery(request=d.ask()) for d in speakers]), strict=True
    ):
        messages: dict[str | None, float] = {}
        for text, p in dist.answers.items():
            parsed = keep_asked(parse_turn(text, d.context.legal, d.context.others), d.spec)
            word = parsed.turn.message if parsed.turn is not None else None
            word = word if word in env.symbols else None  # what the board would deliver
            messages[word] = messages.get(word, 0.0) + p
        said.append(messages)
    env.reset(seed=0)
    env.step({"speaker_0": 0})
    words: list[str | None] = [None, *env.symbols]
    inboxes = [[] if w is None else [f'speaker_0 says: "{w}"'] for w in words]
    picks = _probs(backend, [_decision(backend, env, "listener_0", run.specs["listener_0"], box) for box in inboxes])
    heard = dict(zip(words, picks, strict=True))
    total = 0.0
    for goal, messages in zip(env.goals, said, strict=True):
        mass = sum(messages.values())
        total += sum(p * heard[w][goal] for w, p in messages.items()) / max(mass, 1e-12)
    return total / len(env.goals)


def _pennies(backend: Backend, run: ProbeRun) -> float:
    env: Any = run.env
    env.reset(seed=0)
    probs = _probs(backend, [_decision(backend, env, s, run.specs[s], []) for s in ("player_0", "player_1")])
    return max(abs(p[env.words[0]] - 0.5) for p in probs)


def _one(name: str = "learner") -> list[dict[str, Any]]:
    return [{"name": name}]


PROBES: dict[str, Probe] = {
    p.name: p
    for p in (
        Probe("bandit", {"arms": 3}, _one(), "self_play", _bandit, 0.95, one_decision=True),
        Probe("contextual", {"cues": 3}, _one(), "self_play", _contextual, 0.9, one_decision=True),
        # Hard for the default model (SmolLM2-135M-Instruct): 8 words, and each cue pays the word that model says
        # least at it, at T = 1 under canonical answers (olive 0.54% at north, coral 0.46% at south, slate 0.86% at
        # east; amber, which never pays, 72-77% at every cue). The probe seed then seeds the run only.
        Probe(
            "contextual_hard",
            {"cues": 3, "words": 8, "mapping": HARD_MAPPING},
            _one(),
            "self_play",
            _contextual,
            0.9,
            env="probe_contextual",
            one_decision=True,
        ),
        Probe("delayed", {"arms": 3}, _one(), "self_play", _delayed, 0.9),
        Probe(
            "coordination",
            {"arms": 2},
            [{"name": "left", "seats": ["player_0"]}, {"name": "right", "seats": ["player_1"]}],
            "team",
            _coordination,
            0.9,
            multi_seat=True,
        ),
        Probe(
            "speaker_listener",
            {"goals": 2},
            [{"name": "speaker", "seats": ["speaker_0"]}, {"name": "listener", "seats": ["listener_0"]}],
            "team",
            _speaker_listener,
            0.9,
            multi_seat=True,
            lines=("MESSAGE",),
            max_new_tokens=40,  # "MESSAGE: <symbol>" and "ACTION: <word>", each character a token at worst
        ),
        Probe("pennies", {}, _one(), "self_play", _pennies, 0.1, higher_is_better=False, multi_seat=True),
    )
}


# ---- one run -------------------------------------------------------------------------------------------------
@dataclass
class ProbeResult:
    probe: str
    algorithm: str
    model: str
    seed: int
    threshold: float
    value: float  # the measure when the run stopped (pennies: its time average)
    reached: bool
    updates: int
    games: int
    minutes: float
    curve: list[tuple[int, float]] = field(default_factory=list)  # (updates, measure) at each reading
    cpu_minutes: float = 0.0  # the process's CPU time (all its threads): what a comparison per compute counts
    # One entry per reading: updates, CPU-minutes so far, the measure and its parts (ProbeRun.details).
    readings: list[dict[str, Any]] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        return dict(self.__dict__)


def probe_config(
    probe: Probe, algorithm: str, model: str, seed: int, updates: int, out: str, overrides: Sequence[str] = ()
) -> dict[str, Any]:
    """The TrainConfig (as a dict, ``overrides`` applied) of one probe run."""
    cfg: dict[str, Any] = {
        "env": probe.game,
        "env_kwargs": {**probe.env_kwargs, "seed": seed},
        "model": model,
        "learners": probe.learners,
        "setting": probe.setting,
        "games_per_update": 16,
        "constrained": True,
        "canonical": True,  # one token path per answer: the policy is over the words, and read in a few passes
        "lines": list(probe.lines),
        "temperature": 1.0,
        "max_new_tokens": probe.max_new_tokens,
        "learning_rate": 1e-3,
        **(TINY if model == "tiny" else {}),
        "micro_batch_size": 16,
        "steps": updates,
        "eval_games": 0,
        "save_every": 10_000,
        "output_dir": out,
        "seed": seed,
        **ALGORITHMS[algorithm],
    }
    return apply_overrides(cfg, overrides)


def run_probe(
    probe: Probe,
    algorithm: str,
    model: str = "tiny",
    seed: int = 0,
    updates: int = 20,
    read_every: int = 2,
    overrides: Sequence[str] = (),
    progress: bool = False,
    on_read: Callable[[dict[str, Any]], None] | None = None,
) -> ProbeResult:
    """Train ``algorithm`` on ``probe`` for at most ``updates`` updates; read the policy every ``read_every``."""
    from llmmarl.train import TrainConfig, trainer_class

    if not probe.applies(algorithm):
        raise ValueError(f"{algorithm} does not apply to the {probe.name} probe (one seat: no centralised critic)")
    start, cpu_start = time.perf_counter(), time.process_time()
    readings: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="llmmarl-probe-") as out:
        cfg = TrainConfig.model_validate(probe_config(probe, algorithm, model, seed, updates, out, overrides))
        trainer = trainer_class(cfg.algorithm)(cfg, progress=progress)
        try:
            env = make(cfg.env, **cfg.env_kwargs)
            seats = _seats(trainer, env, probe)
            curve: list[tuple[int, float]] = []

            def read() -> float:
                trainer.model.eval()
                run = ProbeRun(env, seats)
                value = probe.measure(trainer.engine.backend, run)
                curve.append((trainer.state.step, value))
                cpu = (time.process_time() - cpu_start) / 60
                readings.append({"updates": trainer.state.step, "cpu_minutes": cpu, "value": value, **run.details})
                if on_read is not None:
                    on_read(readings[-1])
                return value

            value = read()
            while trainer.state.step < updates and (not probe.reached(value) or not probe.higher_is_better):
                trainer.update()
                if trainer.state.step % read_every == 0 or trainer.state.step == updates:
                    value = read()
        finally:
            trainer.close()
    if not probe.higher_is_better:  # time-averaged over the readings after the first update
        later = [v for step, v in curve if step > 0] or [value]
        value = sum(later) / len(later)
    return ProbeResult(
        probe=probe.name,
        algorithm=algorithm,
        model=model,
        seed=seed,
        threshold=probe.threshold,
        value=value,
        reached=probe.reached(value),
        updates=trainer.state.step,
        games=trainer.state.step * cfg.games_per_update,
        minutes=(time.perf_counter() - start) / 60,
        curve=curve,
        cpu_minutes=(time.process_time() - cpu_start) / 60,
        readings=readings,
    )


def _seats(trainer: Any, env: TextEnv, probe: Probe) -> dict[str, LLMAgentSpec]:
    """Each seat's learner, decoded as training samples it (the policy the update moves)."""
    out: dict[str, LLMAgentSpec] = {}
    for learner, spec in zip(trainer.cfg.learners, trainer.learner_specs, strict=True):
        for seat in learner.seats or env.possible_agents:
            out[seat] = spec
    return out


def table(results: Sequence[ProbeResult]) -> str:
    """The probe x algorithm x model table, one line per run."""
    lines = [
        "| probe | algorithm | model | seed | measure | threshold | reached | updates | games | minutes |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        sign = ">=" if PROBES[r.probe].higher_is_better else "<="
        lines.append(
            f"| {r.probe} | {r.algorithm} | {r.model} | {r.seed} | {r.value:.3f} | {sign} {r.threshold:g} | "
            f"{'yes' if r.reached else 'NO'} | {r.updates} | {r.games} | {r.minutes:.1f} |"
        )
    return "\n".join(lines)


def applicable(probes: Sequence[str], algorithms: Sequence[str]) -> list[tuple[str, str]]:
    """Every (probe, algorithm) pair of the suite that applies."""
    unknown = [p for p in probes if p not in PROBES] + [a for a in algorithms if a not in ALGORITHMS]
    if unknown:
        raise ValueError(
            f"unknown probe(s)/algorithm(s) {unknown}; probes: {list(PROBES)}, algorithms: {list(ALGORITHMS)}"
        )
    return [(p, a) for p in probes for a in algorithms if PROBES[p].applies(a)]


__all__ = ["ALGORITHMS", "PROBES", "TINY", "Probe", "ProbeResult", "applicable", "probe_config", "run_probe", "table"]
