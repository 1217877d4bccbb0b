"""Tournaments: deterministic schedules, resume after a kill with every game once, ratings that order bots
correctly and agree for identical agents, Swiss without rematches, and a report that opens offline."""

from __future__ import annotations

import gc
import io
import itertools
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import weakref
from collections import Counter
from pathlib import Path

import pytest
import yaml
from conftest import CannedBackend, lowest_legal
from rich.console import Console

from llmmarl.agents.specs import ScriptedAgentSpec
from llmmarl.backends.base import BackendError, GenerationRequest
from llmmarl.records import EpisodeRecord
from llmmarl.runner import Match, Runner
from llmmarl.tournament import TournamentConfig, run_tournament
from llmmarl.tournament.config import adapter_digest
from llmmarl.tournament.ratings import bradley_terry, openskill_ratings
from llmmarl.tournament.report import build_report, render_html, render_markdown
from llmmarl.tournament.results import GameResult, duplicate_boards, head_to_head
from llmmarl.tournament.routing import RoutingBackend, build_routing_backend, route
from llmmarl.tournament.schedule import round_robin, seat_counts, standings, swiss_round
from llmmarl.tournament.store import StoreError, TournamentStore

SEATS = ["player_0", "player_1"]
RANDOM = ScriptedAgentSpec(name="random", policy="random")
CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def ttt_config(tmp_path: Path, per_pairing: int = 3, **kw: object) -> TournamentConfig:
    data = {
        "name": "t",
        "games": ["tictactoe_v3"],
        "participants": ["random", "minimax", {"kind": "scripted", "name": "random2", "policy": "random"}],
        "schedule": {"format": "round_robin", "games_per_pairing": per_pairing},
        "db": str(tmp_path / "t.sqlite"),
        "bootstrap": 100,
        **kw,
    }
    return TournamentConfig.model_validate(data)


def result(gid: int, a: str, b: str, score_a: float, rnd: int = 0) -> GameResult:
    ret = {1.0: 1.0, 0.5: 0.0, 0.0: -1.0}[score_a]
    return GameResult(
        game_id=gid,
        key=f"k{gid}",
        game="g",
        round=rnd,
        seats={"player_0": a, "player_1": b},
        teams={"player_0": "player_0", "player_1": "player_1"},
        returns={"player_0": ret, "player_1": -ret},
    )


# ---- config ------------------------------------------------------------------------------------------------------
def test_config_short_forms_and_checks(tmp_path: Path) -> None:
    cfg = TournamentConfig.model_validate(
        {"games": ["kuhn_poker"], "participants": ["llm", "random", "kuhn_nash", "random"]}
    )
    assert [p.name for p in cfg.participants] == ["llm", "random", "kuhn_nash", "random-2"]
    assert cfg.participants[0].kind == "llm" and cfg.participants[2].kind == "scripted"
    with pytest.raises(ValueError, match="unique"):
        TournamentConfig.model_validate(
            {"games": ["x"], "participants": [{"kind": "scripted", "name": "a", "policy": "random"}] * 2}
        )
    with pytest.raises(ValueError, match="unknown agent"):
        TournamentConfig.model_validate({"games": ["x"], "participants": ["random", "alphazero"]})
    with pytest.raises(ValueError, match="no adapter folder"):
        TournamentConfig.model_validate(
            {
                "games": ["x"],
                "participants": [
                    "random",
                    {"kind": "openai", "name": "o", "base_url": "http://u", "model": "m", "adapter": "d"},
                ],
            }
        )
    for path in sorted(CONFIGS.glob("tournament_*.yaml")):
        loaded = TournamentConfig.from_yaml(path)
        assert len(loaded.participants) >= 3, path


# ---- schedules -----------------------------------------------------------------------------------------------------
def test_round_robin_is_deterministic_and_complete() -> None:
    names = ["a", "b", "c", "d"]
    kw = {"cooperative": False, "games_per_pairing": 3, "seed": 5}
    first = round_robin("ttt", "tictactoe_v3", SEATS, names, **kw)
    assert first == round_robin("ttt", "tictactoe_v3", SEATS, names, **kw)
    assert len(first) == 6 * 2 * 3  # pairs x seat orders x games
    assert len({g.key for g in first}) == len(first)
    pairs = Counter(frozenset(g.seats.values()) for g in first)
    assert set(pairs) == {frozenset(p) for p in itertools.combinations(names, 2)} and set(pairs.values()) == {6}
    assert all(c == Counter({"player_0": 9, "player_1": 9}) for c in seat_counts(first).values())
    # Duplicate format: the swapped game of a pairing shares its deal; a different seed changes every deal.
    by_key = {g.key: g.seed for g in first}
    assert by_key["ttt|rr|player_0=a,player_1=b|g1"] == by_key["ttt|rr|player_0=b,player_1=a|g1"]
    assert len(set(by_key.values())) == len(first) // 2
    other = round_robin("ttt", "tictactoe_v3", SEATS, names, **{**kw, "seed": 6})
    assert not {g.seed for g in other} & set(by_key.values())


def test_cooperative_schedule_has_self_play_and_cross_play() -> None:
    games = round_robin(
        "sig", "signal_v0", ["speaker_0", "listener_0"], ["a", "b", "c"], cooperative=True, games_per_pairing=2
    )
    seatings = Counter(tuple(g.seats.values()) for g in games)
    assert {("a", "a"), ("b", "b"), ("c", "c")} <= set(seatings)  # self-play
    assert all((x, y) in seatings for x in "abc" for y in "abc")  # every agent with every other, in both roles
    assert set(seatings.values()) == {2} and len(games) == 9 * 2


def test_swiss_avoids_rematches_and_balances_seats() -> None:
    for n in (4, 5, 6, 7):
        names = [f"p{i}" for i in range(n)]
        results: list[GameResult] = []
        byes: list[tuple[str, int]] = []
        met: list[frozenset[str]] = []
        rounds = n - 1 if n % 2 == 0 else n  # as many rounds as a rematch-free event can have
        for r in range(rounds):
            games, bye = swiss_round(
                "g", "tictactoe_v3", SEATS, names, results, byes, round_index=r, games_per_pairing=1
            )
            again, _ = swiss_round("g", "tictactoe_v3", SEATS, names, results, byes, round_index=r, games_per_pairing=1)
            assert games == again  # same standings -> same round
            met += [frozenset(g.seats.values()) for g in games]
            if bye:
                byes.append((bye, 1))
            # The lower-numbered player always wins: standings then pair leaders with leaders.
            for g in games:
                a, b = g.seats["player_0"], g.seats["player_1"]
                results.append(result(len(results), a, b, 1.0 if int(a[1:]) < int(b[1:]) else 0.0, r))
        assert len(met) == len(set(met)), f"rematch in a field of {n}"
        assert len({p for p, _ in byes}) == len(byes), "a second bye before everyone had one"
        # One game per pairing: two leaders may both be owed the first seat, so, as FIDE allows for colours,
        # an imbalance of 2 can occur; never more.
        table = standings(names, results, byes)
        assert all(abs(s.first_seat) <= 2 for s in table), [(s.participant, s.first_seat) for s in table]


def test_swiss_tournament_runs_and_resumes(tmp_path: Path) -> None:
    cfg = ttt_config(
        tmp_path,
        schedule={"format": "swiss", "rounds": 3, "games_per_pairing": 2},
        participants=["random", "minimax", "random", "random"],
    )
    summary = run_tournament(cfg, progress=False)
    assert summary.finished == summary.scheduled == 3 * 2 * 2  # 3 rounds x 2 pairings x 2 games
    with TournamentStore(cfg.db) as store:
        rounds = [store.games(cfg.name, round=r) for r in range(3)]
    assert [len(r) for r in rounds] == [4, 4, 4]
    again = run_tournament(cfg, progress=False)
    assert again.played_now == 0 and again.scheduled == summary.scheduled


# ---- store and resume ----------------------------------------------------------------------------------------------
class Killed(Exception):
    pass


def assert_each_game_once(db: Path, scheduled: int) -> None:
    with sqlite3.connect(db) as c:
        (games,) = c.execute("SELECT COUNT(*) FROM games").fetchone()
        (results,) = c.execute("SELECT COUNT(*) FROM results").fetchone()
        (distinct,) = c.execute("SELECT COUNT(DISTINCT game_id) FROM results").fetchone()
        (orphans,) = c.execute(
            "SELECT COUNT(*) FROM games g LEFT JOIN results r ON r.game_id = g.id WHERE r.game_id IS NULL"
        ).fetchone()
    assert games == scheduled and results == distinct == scheduled and orphans == 0


def test_resume_after_an_interrupt_plays_exactly_the_missing_games(tmp_path: Path) -> None:
    cfg = ttt_config(tmp_path, per_pairing=4, concurrency=5)
    seen: list[int] = []

    def die_after_7(ep: object) -> None:
        seen.append(ep.game_id)  # type: ignore[attr-defined]
        if len(seen) == 7:
            raise Killed

    with pytest.raises(Killed):
        run_tournament(cfg, progress=False, on_game=die_after_7)
    with TournamentStore(cfg.db) as store:
        assert store.counts(cfg.name) == (24, 7, 0)
    second: list[int] = []
    summary = run_tournament(cfg, progress=False, on_game=lambda ep: second.append(ep.game_id))
    assert summary.played_now == len(second) == 24 - 7
    assert not set(second) & set(seen)
    assert_each_game_once(cfg.db, 24)
    # A replayed result is refused by the store, not added.
    with TournamentStore(cfg.db) as store:
        ep = store.episode(second[0])
        assert store.record(ep) is False
    assert_each_game_once(cfg.db, 24)


def test_resume_after_sigkill(tmp_path: Path) -> None:
    cfg_path = tmp_path / "t.yaml"
    db = tmp_path / "t.sqlite"
    data = {
        "name": "k",
        "games": ["tictactoe_v3"],
        "participants": ["random", "minimax", "random"],
        "schedule": {"games_per_pairing": 50},
        "db": str(db),
        "concurrency": 4,
        "bootstrap": 0,
    }
    cfg_path.write_text(yaml.safe_dump(data))
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmmarl.cli", "tournament", str(cfg_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "COLUMNS": "100"},
    )
    done = 0
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if db.exists():
                try:
                    with sqlite3.connect(db, timeout=1) as c:
                        done = c.execute("SELECT COUNT(*) FROM results").fetchone()[0]
                except sqlite3.OperationalError:
                    done = 0  # tables not created yet
                if done >= 10:
                    break
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    if done < 10:
        pytest.fail("the tournament subprocess stored no games in time")
    with sqlite3.connect(db) as c:
        (stored,) = c.execute("SELECT COUNT(*) FROM results").fetchone()
    assert stored < 300, "the run finished before the kill: make the schedule longer"
    summary = run_tournament(TournamentConfig.from_yaml(cfg_path), progress=False)
    assert summary.played_now == 300 - stored
    assert_each_game_once(db, 300)


def test_changed_config_refuses_to_resume(tmp_path: Path) -> None:
    run_tournament(ttt_config(tmp_path, per_pairing=1), progress=False)
    with pytest.raises(StoreError, match="other games"):
        run_tournament(ttt_config(tmp_path, per_pairing=2), progress=False)
    run_tournament(ttt_config(tmp_path, per_pairing=1, concurrency=3), progress=False)  # not schedule-relevant


def test_exports(tmp_path: Path) -> None:
    cfg = ttt_config(tmp_path, per_pairing=1)
    run_tournament(cfg, progress=False)
    with TournamentStore(cfg.db) as store:
        csv_text = store.export_csv(cfg.name, tmp_path / "r.csv").read_text()
        data = yaml.safe_load(store.export_json(cfg.name, tmp_path / "r.json").read_text())
    assert csv_text.count("\n") == 1 + 6 * 2  # header + seats of 6 games
    assert len(data["games"]) == 6 and all(len(g["seat_results"]) == 2 for g in data["games"])


# ---- ratings -------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ttt_results(tmp_path_factory: pytest.TempPathFactory) -> tuple[TournamentConfig, list[GameResult]]:
    cfg = ttt_config(tmp_path_factory.mktemp("ratings"), per_pairing=20)
    run_tournament(cfg, progress=False)
    with TournamentStore(cfg.db) as store:
        return cfg, store.results(cfg.name)


def test_minimax_rated_above_random_and_identical_agents_agree(ttt_results) -> None:
    cfg, results = ttt_results
    names = cfg.participant_names()
    for ratings in (bradley_terry(results, names, bootstrap=200), openskill_ratings(results, names)):
        by = {r.participant: r for r in ratings}
        assert ratings[0].participant == "minimax"
        assert by["minimax"].low > max(by["random"].high, by["random2"].high), ratings
        assert by["random"].overlaps(by["random2"]), ratings
        assert by["random"].low < by["random"].rating < by["random"].high


def test_bradley_terry_recovers_known_strengths() -> None:
    # Two players, a beats b 3 times in 4, no draws: the ML difference is ln 3 logits = 190.8 Elo (alpha ~ 0).
    results = [result(i, "a", "b", 1.0 if i % 4 else 0.0) for i in range(400)]
    a, b = bradley_terry(results, ["a", "b"], alpha=1e-6, bootstrap=50)
    assert a.participant == "a" and a.rating - b.rating == pytest.approx(190.8, abs=0.5)
    assert a.rating + b.rating == pytest.approx(3000.0)  # centred on the field mean
    draws = [result(i, "a", "b", 0.5) for i in range(20)]
    a, b = bradley_terry(draws, ["a", "b"], bootstrap=0)
    assert a.rating == pytest.approx(b.rating)


# ---- report --------------------------------------------------------------------------------------------------------
def test_html_report_is_self_contained(ttt_results, tmp_path: Path) -> None:
    cfg, _ = ttt_results
    with TournamentStore(cfg.db) as store:
        report = build_report(store, cfg.name, bootstrap=50)
    page = render_html(report)
    images = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(images) >= 2 and all(src.startswith("data:image/png;base64,") for src in images)
    assert not re.search(r"https?://", page) and "<script" not in page and "<link" not in page
    md = render_markdown(report)
    assert "| 1 | minimax |" in md and "Head to head" in md


def test_cooperative_report_has_cross_play(tmp_path: Path) -> None:
    cfg = TournamentConfig.model_validate(
        {
            "name": "coop",
            "games": [{"env": "signal_v0", "env_kwargs": {"num_items": 2}}],
            "participants": ["random", "random"],
            "schedule": {"games_per_pairing": 6},
            "db": str(tmp_path / "c.sqlite"),
            "bootstrap": 20,
        }
    )
    summary = run_tournament(cfg, progress=False)
    assert summary.finished == 3 * 6 + 6  # (a,a), (b,b): one order each; (a,b): two orders
    with TournamentStore(cfg.db) as store:
        report = build_report(store, cfg.name)
    (section,) = report.sections
    assert section.cooperative and section.cross_play_seats == ("speaker_0", "listener_0")
    assert all(v is not None for row in section.cross_play for v in row)
    assert "cross-play" in render_html(report)


# ---- backends --------------------------------------------------------------------------------------------------------
def test_routing_backend_sends_each_request_to_its_backend() -> None:
    one, two = CannedBackend(lambda r: f"one:{r.adapter}"), CannedBackend(lambda r: f"two:{r.adapter}")
    router = RoutingBackend({"@x": (one, None), "@y": (two, "served-y"), "@z": (one, "z")})
    chat = [{"role": "user", "content": "hi"}]
    out = router.generate([GenerationRequest(messages=chat, adapter=a) for a in ("@y", "@x", "@z", "@y")])
    assert [g.text for g in out] == ["two:served-y", "one:None", "one:z", "two:served-y"]
    assert one.calls == [2] and two.calls == [2]  # one batched call per backend
    with pytest.raises(BackendError, match="no tournament participant"):
        router.generate([GenerationRequest(messages=chat, adapter="@nobody")])


def test_openai_participant_without_backend_or_key_fails_clearly(tmp_path: Path) -> None:
    cfg = ttt_config(
        tmp_path,
        participants=[
            "random",
            {
                "kind": "openai",
                "name": "o",
                "base_url": "http://127.0.0.1:9/v1",
                "model": "m",
                "api_key_env": "LLMMARL_TEST_UNSET_KEY",
            },
        ],
    )
    with pytest.raises(BackendError, match=r"LLMMARL_TEST_UNSET_KEY|llmmarl\.backends\.openai"):
        build_routing_backend(cfg, {"o"})


def test_llm_participants_play_through_the_router(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A canned "model" that always plays the lowest legal cell stands in for the base model; everything else -
    # specs, routes, runner, store - is real.
    canned = CannedBackend(lambda r: f"ACTION: {lowest_legal(r)}")
    monkeypatch.setattr(
        "llmmarl.tournament.run.build_routing_backend",
        lambda cfg, names: RoutingBackend({route("llm"): (canned, None)}),
    )
    cfg = ttt_config(tmp_path, per_pairing=2, participants=["llm", "random"])
    summary = run_tournament(cfg, progress=False)
    assert summary.finished == 4
    with TournamentStore(cfg.db) as store:
        (stats,) = [s for s in store.seat_stats(cfg.name) if s.participant == "llm"]
    assert stats.llm_turns > 0 and stats.invalid == 0
    assert canned.requests and all(r.adapter is None for r in canned.requests)  # the route became "base model"


def test_tiny_model_tournament_end_to_end(tmp_path: Path) -> None:
    # The real local path: config -> TransformersBackend("tiny") behind the router -> runner -> store -> report.
    cfg = ttt_config(
        tmp_path,
        per_pairing=1,
        base_model="tiny",
        participants=[{"kind": "llm", "name": "tiny", "max_new_tokens": 8, "temperature": 1.0}, "random"],
    )
    summary = run_tournament(cfg, progress=False)
    assert summary.finished == summary.scheduled == 2 and summary.errors == 0
    with TournamentStore(cfg.db) as store:
        report = build_report(store, cfg.name, bootstrap=10)
    (row,) = [r for r in report.sections[0].rows if r.participant == "tiny"]
    assert row.llm_turns > 0 and row.invalid_rate is not None  # a random tiny model: mostly invalid, counted


# ---- the Kuhn poker bot ------------------------------------------------------------------------------------------
def test_kuhn_nash_is_an_equilibrium_and_beats_random(tmp_path: Path) -> None:
    import pyspiel
    from open_spiel.python import policy
    from open_spiel.python.algorithms import exploitability

    from llmmarl.envs.games.kuhn_poker.bots import nash_bet_probability

    game = pyspiel.load_game("kuhn_poker")
    for alpha in (0.0, 1 / 6, 1 / 3):

        def probs(state: pyspiel.State, alpha: float = alpha) -> dict[int, float]:
            info = state.information_state_string(state.current_player())  # the acting seat's own view only
            p = nash_bet_probability(int(info[0]), info[1:], alpha)
            return {0: 1.0 - p, 1: p}

        assert exploitability.nash_conv(game, policy.tabular_policy_from_callable(game, probs)) < 1e-9
    cfg = TournamentConfig.model_validate(
        {
            "name": "kuhn",
            "games": ["kuhn_poker"],
            "participants": ["kuhn_nash", "random"],
            "schedule": {"games_per_pairing": 150},
            "db": str(tmp_path / "k.sqlite"),
        }
    )
    run_tournament(cfg, progress=False)
    with TournamentStore(cfg.db) as store:
        results = store.results(cfg.name)
    nash = sum(r.returns[s] for r in results for s, p in r.seats.items() if p == "kuhn_nash")
    assert nash / len(results) > 0.05  # about +0.16 a hand against random play
    # Duplicate scoring rates the boards (seat-swapped games with one deal) by summed payoff: the pot size counts.
    with TournamentStore(cfg.db) as store:
        report = build_report(store, cfg.name, bootstrap=100, scoring="duplicate")
    (section,) = report.sections
    assert (section.scoring, section.boards, section.unpaired) == ("duplicate", 150, 0)
    by = {r.participant: r.bradley_terry for r in section.rows}
    assert by["kuhn_nash"].low > by["random"].high, by
    assert "Duplicate scoring" in render_markdown(report)


def test_duplicate_boards_sum_payoffs_over_seat_swaps() -> None:
    def game(gid: int, seed: int, p0: str, p1: str, r0: float) -> GameResult:
        return GameResult(
            game_id=gid, key=f"k{gid}", game="g", seats={"player_0": p0, "player_1": p1},
            teams={"player_0": "player_0", "player_1": "player_1"}, returns={"player_0": r0, "player_1": -r0},
            seed=seed,
        )  # fmt: skip

    # Deal 1: a wins a big pot as player_0 and loses a small one as player_1 -> a wins the board.
    # Deal 2: both seat orders end level -> a drawn board. Deal 3 has no twin yet -> unpaired.
    results = [game(0, 1, "a", "b", 2.0), game(1, 1, "b", "a", 1.0), game(2, 2, "a", "b", 1.0)]
    results += [game(3, 2, "b", "a", 1.0), game(4, 3, "a", "b", -2.0)]
    assert sorted(s for r in results for s in [r.pairwise()[0][2]]) == [0.0, 1.0, 1.0, 1.0, 1.0]
    boards, unpaired = duplicate_boards(results)
    assert unpaired == 1
    assert [b.returns for b in boards] == [{"a": 1.0, "b": -1.0}, {"a": 0.0, "b": 0.0}]
    assert [b.pairwise() for b in boards] == [[("a", "b", 1.0)], [("a", "b", 0.5)]]
    h2h, n = head_to_head(boards, ["a", "b"])
    assert h2h[0, 1] == pytest.approx(0.75) and n[0, 1] == 2


def test_duplicate_scoring_needs_both_seat_orders(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="swap_seats"):
        ttt_config(tmp_path, games=[{"env": "tictactoe_v3", "scoring": "duplicate"}], schedule={"swap_seats": False})
    same = ttt_config(tmp_path).fingerprint()
    assert ttt_config(tmp_path, games=[{"env": "tictactoe_v3", "scoring": "duplicate"}]).fingerprint() == same


# ---- the fingerprint covers adapter weights -------------------------------------------------------------------------
def _save_lora(folder: Path, seed: int) -> None:
    """A real PEFT adapter of the tiny model, its weights drawn from ``seed``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from llmmarl.models import resolve_model

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(resolve_model("tiny"))
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.save_pretrained(str(folder))


def test_resuming_after_an_adapter_was_retrained_says_so(tmp_path: Path) -> None:
    folder = tmp_path / "ann"
    _save_lora(folder, seed=1)
    cfg = ttt_config(
        tmp_path,
        per_pairing=1,
        base_model="tiny",
        participants=["random", {"kind": "llm", "name": "ann", "adapter": str(folder), "max_new_tokens": 8}],
    )
    assert run_tournament(cfg, progress=False).played_now == 2
    played_with = adapter_digest(folder)
    (folder / "README.md").write_text("notes")  # not the weights: the same tournament
    assert run_tournament(cfg, progress=False).played_now == 0
    _save_lora(folder, seed=2)  # retrained in place: same path, other weights
    with pytest.raises(StoreError, match=r"weights of adapter\(s\) ann \(.*ann\) changed since tournament 't'"):
        run_tournament(cfg, progress=False)
    with TournamentStore(cfg.db) as store:  # what the games were played with stays on record
        assert store.config("t")["adapter_weights"] == {"ann": played_with} != {"ann": adapter_digest(folder)}
    renamed = cfg.model_copy(update={"name": "t2"})  # the way forward the error gives
    assert run_tournament(renamed, progress=False).played_now == 2


def test_a_missing_adapter_folder_is_a_config_error_before_the_store_opens(tmp_path: Path) -> None:
    cfg = ttt_config(
        tmp_path, base_model="tiny", participants=["random", {"kind": "llm", "name": "x", "adapter": str(tmp_path)}]
    )
    with pytest.raises(ValueError, match="is not a PEFT adapter folder"):
        run_tournament(cfg, progress=False)
    assert not cfg.db.exists()


# ---- a store is data: only what the config schedules is played ----------------------------------------------------
def _plant(db: Path, tournament: str, key: str, env: str, env_kwargs: dict, rnd: int = 0) -> None:
    """Add a game row to a store by hand, as a shared or downloaded store file could hold it."""
    with sqlite3.connect(db) as c:
        c.execute(
            "INSERT INTO games (tournament, key, round, game, env, env_kwargs, seats, seed) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                tournament,
                key,
                rnd,
                "tictactoe_v3",
                env,
                json.dumps(env_kwargs),
                json.dumps(dict(zip(SEATS, ["random", "minimax"], strict=True))),
                1,
            ),
        )


def test_resume_plays_only_the_scheduled_games_never_a_stored_command(tmp_path: Path) -> None:
    cfg = ttt_config(tmp_path, per_pairing=1)
    first: list[int] = []

    def stop_after_2(ep: object) -> None:
        first.append(ep.game_id)  # type: ignore[attr-defined]
        if len(first) == 2:
            raise Killed

    with pytest.raises(Killed):
        run_tournament(cfg, progress=False, on_game=stop_after_2)
    marker = tmp_path / "pwned"
    _plant(Path(cfg.db), cfg.name, "evil", "os:system", {"command": f"touch {marker}"})
    console = Console(record=True, width=200)
    summary = run_tournament(cfg, progress=False, console=console)
    assert not marker.exists(), "a command stored in the store ran"
    assert summary.played_now == 6 - 2 and summary.scheduled == summary.finished == 6 and summary.unscheduled == 1
    out = console.export_text()
    assert "1 game(s)" in out and "'evil'" in out and "os:system" in out
    with TournamentStore(cfg.db) as store:
        evil = next(g for g in store.games(cfg.name) if g.key == "evil")
        assert not evil.done  # never played, so no result either


def test_a_tampered_scheduled_game_is_refused_not_played(tmp_path: Path) -> None:
    cfg = ttt_config(tmp_path, per_pairing=1)

    def stop(ep: object) -> None:
        raise Killed

    with pytest.raises(Killed):
        run_tournament(cfg, progress=False, on_game=stop)
    marker = tmp_path / "pwned"
    # Round robin: a row under a scheduled key says another env than the schedule: a clear error, nothing runs.
    with sqlite3.connect(cfg.db) as c:
        c.execute(
            "UPDATE games SET env = 'os:system', env_kwargs = ? WHERE id NOT IN (SELECT game_id FROM results)",
            (json.dumps({"command": f"touch {marker}"}),),
        )
    with pytest.raises(StoreError, match="another env, seats, seed or kwargs"):
        run_tournament(cfg, progress=False)
    assert not marker.exists()


def test_a_tampered_swiss_round_is_skipped_not_played(tmp_path: Path) -> None:
    cfg = ttt_config(tmp_path, schedule={"format": "swiss", "rounds": 2, "games_per_pairing": 1})
    run_tournament(cfg, progress=False)
    marker = tmp_path / "pwned"
    with sqlite3.connect(cfg.db) as c:  # a stored round-1 game now names a command, and has no result
        (gid,) = c.execute("SELECT id FROM games WHERE round = 1 ORDER BY id LIMIT 1").fetchone()
        c.execute("DELETE FROM seat_results WHERE game_id = ?", (gid,))
        c.execute("DELETE FROM results WHERE game_id = ?", (gid,))
        c.execute(
            "UPDATE games SET env = 'os:system', env_kwargs = ? WHERE id = ?",
            (json.dumps({"command": f"touch {marker}"}), gid),
        )
    summary = run_tournament(cfg, progress=False, console=Console(file=io.StringIO()))
    assert not marker.exists() and summary.played_now == 0 and summary.unscheduled == 1


def test_a_tournament_keeps_no_records_in_memory(tmp_path: Path) -> None:
    """Records stream to the store: while the last game is being stored, the earlier ones are gone from memory."""
    cfg = ttt_config(tmp_path, per_pairing=4, concurrency=4)
    alive: list[int] = []

    def count(ep: object) -> None:
        gc.collect()
        alive.append(sum(type(o) is EpisodeRecord for o in gc.get_objects()))

    summary = run_tournament(cfg, progress=False, on_game=count)
    assert summary.played_now == len(alive) == 24
    assert max(alive) <= 2, alive  # the game being stored (and at most one more on its way), never all 24


def test_the_runner_hands_records_over_without_keeping_them() -> None:
    refs: list[weakref.ref[EpisodeRecord]] = []
    matches = [
        Match(game_id=i, env="tictactoe_v3", seats=dict(zip(SEATS, [RANDOM, RANDOM], strict=True)), seed=i)
        for i in range(6)
    ]
    out = Runner(concurrency=2, progress=False).play(
        matches, on_episode=lambda ep: refs.append(weakref.ref(ep)), keep=False
    )
    gc.collect()
    assert out == [] and len(refs) == 6 and all(r() is None for r in refs)
