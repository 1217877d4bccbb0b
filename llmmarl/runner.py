"""Play many games at once with any mix of LLM and scripted agents.

Data flows one way: env -> observation text -> prompt -> *one backend call for every pending LLM decision of
every running game* -> parsed turn -> action -> env step -> :class:`~llmmarl.records.TurnRecord`. Answers without a
legal action are re-asked together in a second batched call, then fall back (random legal move or forfeit),
counted per agent. A request the server failed (an outage, a malformed response) is sent again in that second
call; if that fails too, the decision is an *outage*, not a move: the game stops there with ``outage`` set and
its ``error`` saying why, and counts nowhere (ratings, training), so tournaments play it again on resume.
Finished games are written at once, so a killed run loses only games in flight.

Two schedules (``mode``):

* ``rounds``: every pending decision of every live game goes into one backend call, and every game waits for the
  slowest answer of the round. Best for the in-process transformers backend, whose batched ``generate`` is where
  its speed comes from (a batch of 32 costs ~3x one sequence on a CPU).
* ``stream``: each game moves on as soon as its own answer is back: one thread per live game plays it round by
  round, and the backend keeps at most ``concurrency`` requests in flight. Best for a continuous-batching engine
  (vLLM behind :class:`~llmmarl.backends.openai.OpenAIBackend`), which admits new requests between decode steps, so
  a game whose answer is short no longer waits for the longest answer of its round.

``auto`` picks ``stream`` for backends that say they take concurrent calls (``concurrent_calls = True``).

The LLM agent itself (prompt context, requests, grammar, reading answers) is
:class:`~llmmarl.agents.llm.LLMDecision`, and what a decision becomes (the action, the
:class:`~llmmarl.records.TurnRecord`, the delivered message, scored predictions) is :mod:`llmmarl.game_turns`;
the runner schedules decisions. It owns no model: training, tournaments and ``llmmarl play`` all drive it with a
backend and a list of :class:`Match` es (:mod:`llmmarl.matches`, re-exported here), and get
:class:`~llmmarl.records.EpisodeRecord` s back.
"""

from __future__ import annotations

import random
import threading
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, Literal, Protocol

from llmmarl.agents.llm import LLMAgents, LLMDecision
from llmmarl.agents.messages import MessageBoard
from llmmarl.agents.scripted import make_policy
from llmmarl.agents.specs import LLMAgentSpec, ScriptedAgentSpec
from llmmarl.backends.base import (
    Backend,
    BackendError,
    Generation,
    GenerationRequest,
    special_tokens,
    word_truncate,
)
from llmmarl.envs import make
from llmmarl.envs.base import Action
from llmmarl.envs.bots import ScriptedPolicy, TalkingPolicy
from llmmarl.game_turns import Decision, LiveGame, record_turn, score_predictions
from llmmarl.jsonl import JsonlWriter
from llmmarl.matches import Match, request_seed, seatings
from llmmarl.progress import count_game, games_bar
from llmmarl.records import EpisodeRecord, TurnRecord, outcomes_from_returns
from llmmarl.scoring import score_turns

# Match and the seeding helpers live in llmmarl.matches
__all__ = ["AnswerHook", "Match", "Runner", "request_seed", "seatings"]


class HookedAnswer(Protocol):
    """An answer after an :data:`AnswerHook`: the generation played, its loss weight (None: not weighed)."""

    generation: Generation
    weight: float | None
    explored: bool


#: Sees a batch's decisions, requests and answers; returns the answers to read (see ``Runner(explore=...)``).
AnswerHook = Callable[[list[LLMDecision], list[GenerationRequest], list[Generation]], Sequence[HookedAnswer]]


class Runner:
    """Plays matches concurrently through one backend.

    Args:
        backend: answers LLM agents' requests; may be None when every agent is scripted.
        concurrency: games in flight at once (each round batches all their pending LLM decisions).
        max_steps: a game still running after this many steps is ended and recorded with an error.
        out: JSONL file that receives each finished game's :class:`EpisodeRecord`.
        progress: show a progress bar.
        mode: ``rounds``, ``stream`` or ``auto`` (see the module docstring).
        explore: sees every batch of LLM answers before they are read and may replace them, each with the weight
            recorded on its attempt (training's label-level exploration, :mod:`llmmarl.train.exploration`).
    """

    def __init__(
        self,
        backend: Backend | None = None,
        concurrency: int = 32,
        max_steps: int = 500,
        out: str | Path | None = None,
        progress: bool = True,
        mode: Literal["auto", "rounds", "stream"] = "auto",
        explore: AnswerHook | None = None,
    ) -> None:
        self.backend = backend
        self.explore = explore
        if mode == "auto":
            mode = "stream" if getattr(backend, "concurrent_calls", False) else "rounds"
        self.mode = mode
        self._lock = threading.Lock()  # stats, shared by the game threads of stream mode
        self.concurrency = concurrency
        self.max_steps = max_steps
        self.out = out
        self.progress = progress
        self._policies: dict[str, ScriptedPolicy] = {}
        self._agents = LLMAgents(backend)
        self.stats = {"decisions": 0, "llm_requests": 0, "reasks": 0, "backend_calls": 0, "failed_requests": 0}

    # ---- public -------------------------------------------------------------------------------------------
    def play(
        self,
        matches: Iterable[Match],
        on_episode: Callable[[EpisodeRecord], None] | None = None,
        desc: str = "games",
        keep: bool = True,
    ) -> list[EpisodeRecord]:
        """Play every match (``concurrency`` at a time); ``desc`` labels the progress bar.

        Returns the finished games' records, in the order they ended. With ``keep=False`` it returns none and holds
        none: each record goes to ``on_episode`` (and ``out``) and is dropped, so memory stays flat however many
        matches there are (a tournament of 20,000 LLM games would otherwise hold about 2 GiB of transcripts).
        """
        queue = deque(matches)
        writer = JsonlWriter(self.out) if self.out else None
        bar = games_bar(len(queue), self.concurrency, desc, disable=not self.progress)
        episodes: list[EpisodeRecord] = []

        def done(ep: EpisodeRecord) -> None:
            if keep:
                episodes.append(ep)
            if writer:
                writer.write(ep)
            if on_episode:
                on_episode(ep)
            count_game(bar, self.concurrency)

        try:
            if self.mode == "stream":
                self._play_streaming(queue, done, bar)
            else:
                self._play_rounds(queue, done, bar)
        finally:
            bar.close()
            if writer:
                writer.close()
        return episodes

    def _play_rounds(self, queue: deque[Match], done: Callable[[EpisodeRecord], None], bar: Any) -> None:
        live: list[LiveGame] = []
        try:
            while queue or live:
                while queue and len(live) < self.concurrency:
                    live.append(self._start(queue.popleft()))
                self._round(live)
                still: list[LiveGame] = []
                for g in live:
                    if g.error is None and not g.env.done:
                        still.append(g)
                        continue
                    done(self._finish(g))
                live = still
                # Redrawn every round: with all games in flight at once, no game may finish for minutes.
                bar.set_postfix(decisions=self.stats["decisions"], reasks=self.stats["reasks"])
        finally:
            for g in live:
                g.env.close()

    def _play_streaming(self, queue: deque[Match], done: Callable[[EpisodeRecord], None], bar: Any) -> None:
        """One thread per live game (at most ``concurrency``); episodes are handed over in the calling thread."""
        stop = threading.Event()  # set on Ctrl-C or an error: game threads end at their next round

        def play_one(match: Match) -> EpisodeRecord | None:
            g = self._start(match)
            try:
                while g.error is None and not g.env.done:
                    if stop.is_set():
                        g.env.close()
                        return None
                    self._round([g])
            except BaseException:
                g.env.close()
                raise
            return self._finish(g)  # closes the env

        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="llmmarl-game")
        running: set[Future[EpisodeRecord | None]] = set()
        try:
            while queue or running:
                while queue and len(running) < self.concurrency:
                    running.add(pool.submit(play_one, queue.popleft()))
                finished, running = wait(running, timeout=0.5, return_when=FIRST_COMPLETED)
                for fut in finished:
                    ep = fut.result()  # a BackendError that ends the run is raised here, in the caller's thread
                    if ep is not None:
                        done(ep)
                bar.set_postfix(decisions=self.stats["decisions"], reasks=self.stats["reasks"], refresh=False)
        finally:
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)

    # ---- game lifecycle -----------------------------------------------------------------------------------
    def _start(self, match: Match) -> LiveGame:
        env = make(match.env, **match.env_kwargs)
        truncate = self.backend.truncate if self.backend is not None else word_truncate
        board = MessageBoard(env, truncate, special_tokens(self.backend))
        game = LiveGame(match=match, env=env, board=board, rng=random.Random(match.seed))
        missing = set(env.possible_agents) - set(match.seats)
        if missing:
            game.error = f"no agent for seats {sorted(missing)}"
            return game
        try:
            env.reset(seed=match.seed)
        except Exception as e:  # a broken game must not take the other games down with it
            game.error = f"reset failed: {e!r}"
        return game

    def _finish(self, g: LiveGame) -> EpisodeRecord:
        returns = g.env.returns() if g.error is None else {}
        forecasts = {seat: g.env.forecast_spec(seat) for seat in g.env.possible_agents} if g.error is None else {}
        g.env.close()
        episode = EpisodeRecord(
            game_id=g.match.game_id,
            env=g.match.env,
            seed=g.match.seed,
            seats={seat: spec.name for seat, spec in g.match.seats.items()},
            teams=dict(g.env.teams),
            returns=returns,
            outcomes=outcomes_from_returns(returns, g.env.teams) if returns else {},
            turns=g.turns,
            forfeit=g.forfeit,
            error=g.error,
            outage=g.outage,
        )
        score_turns(episode, forecasts)
        return episode

    # ---- one round: every pending decision of every live game ---------------------------------------------
    def _round(self, games: list[LiveGame]) -> None:
        decisions: list[Decision] = []
        for g in games:
            if g.error is not None or g.env.done:
                continue
            try:
                for seat in g.env.pending():
                    decisions.append(
                        Decision(g, seat, g.match.seats[seat], g.env.observe(seat), inbox=g.board.take(seat))
                    )
            except Exception as e:
                g.error = f"observe failed: {e!r}\n{traceback.format_exc(limit=3)}"
        llm = [d for d in decisions if isinstance(d.spec, LLMAgentSpec) and d.game.error is None]
        self._decide_llm(llm)
        for d in decisions:
            if isinstance(d.spec, ScriptedAgentSpec) and d.game.error is None:
                self._decide_scripted(d)
        by_game: dict[int, list[Decision]] = {}
        for d in decisions:
            by_game.setdefault(id(d.game), []).append(d)
        for ds in by_game.values():
            self._apply(ds[0].game, ds)
        self._count("decisions", len(decisions))

    def _decide_llm(self, decisions: list[Decision]) -> None:
        if not decisions:
            return
        if self.backend is None:
            raise BackendError("LLM agents need a backend: pass one to Runner(backend=...)")
        for d in decisions:
            self._start_llm(d)
        self._generate(decisions, [d.llm.ask(self._seed(d)) for d in decisions if d.llm])
        # A request the server failed is sent again as it was (it was never answered); an answer without a legal
        # turn is re-asked, showing the model its answer and the error. Both go in one second call.
        failed = [d for d in decisions if d.llm and d.llm.server_failed]
        invalid = [d for d in decisions if d.llm and d.llm.needs_reask]
        if failed or invalid:
            self._count("reasks", len(invalid))
            again = [d.llm.ask(self._seed(d)) for d in failed if d.llm]
            again += [d.llm.reask(d.game.board.special, self._seed(d)) for d in invalid if d.llm]
            self._generate(failed + invalid, again)
        for d in decisions:
            # No legal answer and the server failed the last try: an outage, not a move (see the module docstring).
            assert d.llm is not None
            if (why := d.llm.outage) is not None:
                g = d.game
                g.outage = True
                g.error = f"server outage at step {g.step} ({d.seat}): {why}"

    def _start_llm(self, d: Decision) -> LLMDecision:
        assert isinstance(d.spec, LLMAgentSpec)
        d.llm = self._agents.start(d.spec, d.game.env, d.seat, d.obs, d.inbox)
        return d.llm

    @staticmethod
    def _seed(d: Decision) -> int:
        """The sampling seed of ``d``'s next request (see :func:`request_seed`)."""
        assert d.llm is not None
        return request_seed(d.game.match, d.game.step, d.seat, len(d.llm.attempts))

    def _generate(self, decisions: list[Decision], requests: list[GenerationRequest]) -> None:
        assert self.backend is not None
        gens = self.backend.generate(requests)
        self._count("backend_calls", 1)
        self._count("llm_requests", len(requests))
        played = self.explore([d.llm for d in decisions if d.llm], requests, gens) if self.explore else None
        for i, (d, req, gen) in enumerate(zip(decisions, requests, gens, strict=True)):
            if gen.error is not None:
                self._count("failed_requests", 1)
            assert d.llm is not None
            d.llm.read(req, played[i].generation if played is not None else gen)
            if played is not None and played[i].weight is not None:
                d.llm.attempts[-1].explore_weight = played[i].weight
                d.llm.attempts[-1].explored = played[i].explored

    def _decide_scripted(self, d: Decision) -> None:
        spec = d.spec
        assert isinstance(spec, ScriptedAgentSpec)
        policy = self._policies.get(spec.policy) or self._policies.setdefault(spec.policy, make_policy(spec.policy))
        try:
            action = policy(d.game.env, d.obs, d.game.rng)
            if isinstance(policy, TalkingPolicy):
                d.scripted_message = policy.message(d.game.env, d.obs, d.game.rng)
        except Exception as e:
            d.game.error = f"scripted policy {spec.policy!r} failed: {e!r}"
            return
        d.scripted_action = action

    # ---- applying a game's decisions -------------------------------------------------------------------------
    def _apply(self, g: LiveGame, decisions: list[Decision]) -> None:
        if g.error is not None:
            return
        actions: dict[str, Action] = {}
        records: dict[str, TurnRecord] = {}
        for d in decisions:
            record = record_turn(g, d)
            records[d.seat] = record
            actions[d.seat] = record.action if d.obs.free_text is not None else record.action_id
            if record.fallback == "forfeit" and g.forfeit is None:
                g.forfeit = d.seat
        try:
            if g.forfeit is not None:
                g.env.forfeit(g.forfeit)
                rewards: dict[str, float] = {}
            else:
                rewards = g.env.step(actions)
        except Exception as e:
            g.error = f"step failed: {e!r}\n{traceback.format_exc(limit=3)}"
            return
        for seat, record in records.items():
            record.reward = rewards.get(seat, 0.0)
            if (refused := g.env.rejection(seat)) is not None:  # a free-text game judged the move itself
                record.rejected = refused.reason
                if refused.final and record.fallback is None:
                    record.fallback = "forfeit"
            g.turns.append(record)
        score_predictions(g, records)
        g.step += 1
        if not g.env.done and g.step >= self.max_steps:
            g.error = f"game exceeded max_steps={self.max_steps}"

    def _count(self, key: str, n: int) -> None:
        with self._lock:
            self.stats[key] += n
