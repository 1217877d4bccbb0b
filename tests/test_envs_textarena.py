"""TextArena games through the ``textarena:`` adapter, with real TextArena games (the ``textarena`` extra).

Two parts: the adapter's own behaviour on the games the issue names (seats, turn order, eliminations, teams,
rewards at the end, the game's refusals), and checks in the spirit of TextArena's 1.0 conformance test run on one
id of every game that works offline (same seed -> same observations, a refused move changes nothing but the
counters, hostile moves end in a clear result quickly).
"""

from __future__ import annotations

import copy
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("textarena")

from conftest import CannedBackend

from llmmarl.agents.specs import LLMAgentSpec, ScriptedAgentSpec
from llmmarl.agents.turn import parse_turn
from llmmarl.envs import UnknownEnvError, make
from llmmarl.envs.base import check_text_env, random_action
from llmmarl.envs.textarena import (
    TextArenaTextEnv,
    availability,
    game_of,
    listed_moves,
    textarena_games,
)
from llmmarl.records import summarise
from llmmarl.runner import Match, Runner

ROOT = Path(__file__).resolve().parents[1]
# One id per game folder that runs here: the conformance checks' parameters (cheap: a game's ids share its code).
OFFLINE = sorted({game_of(i): i for i in reversed(textarena_games()) if availability(i).ok}.values())
MAX_STEPS = 60  # steps per game in the conformance checks: enough to cross turns, refusals and most endings
# Where a TextArena 0.7.4 game itself breaks a check (the check stays strict; docs/textarena.md lists these).
KNOWN = {
    "Poker-v0-small": "a refused move still advances the betting round's turn counter (round_turn)",
}


def ta(name: str, **kwargs: object) -> TextArenaTextEnv:
    env = make(f"textarena:{name}", **kwargs)
    assert isinstance(env, TextArenaTextEnv)
    return env


def play_random(env: TextArenaTextEnv, seed: int, max_steps: int = 400) -> list[tuple[str, str, str]]:
    """Play ``env`` with random moves; return (seat, observation, move) per step."""
    env.reset(seed=seed)
    rng, trace = random.Random(seed), []
    while not env.done and len(trace) < max_steps:
        (seat,) = env.pending()
        obs = env.observe(seat)
        move = random_action(obs, rng)
        trace.append((seat, obs.text, str(move)))
        env.step({seat: move})
    return trace


# ---- the adapter on the games the issue names ---------------------------------------------------------------
@pytest.mark.parametrize(
    "name", ["SimpleNegotiation-v0", "TicTacToe-v0", "KuhnPoker-v0", "LiarsDice-v0", "Poker-v0(players=3)", "Taboo-v0"]
)
def test_named_games_pass_the_text_env_checker(name: str) -> None:
    env = make(f"textarena:{name}")
    check_text_env(env, episodes=2, max_steps=400)
    assert env.message_rules.mode == "off"  # talk is the move: the game delivers it (docs/textarena.md)


def test_listed_moves_become_legal_actions_and_templates_do_not() -> None:
    env = ta("TicTacToe-v0")
    env.reset(seed=0)
    obs = env.observe("player_0")
    assert obs.free_text is not None and obs.legal_actions == [f"[{i}]" for i in range(9)]
    env.step({"player_0": "[4]"})
    assert "[4]" not in env.observe("player_1").legal_actions  # the new part of the text, not a stale list
    kuhn = ta("KuhnPoker-v0")
    kuhn.reset(seed=0)
    assert kuhn.observe(kuhn.pending()[0]).legal_actions == ["[check]", "[bet]"]
    neg = ta("SimpleNegotiation-v0")
    neg.reset(seed=0)
    assert neg.observe("player_0").legal_actions == []  # talk and offers: free text under the cap
    assert listed_moves("Your possible actions: '[check]', '[bet X]'") == []  # a template is not a move


def test_turn_order_comes_from_the_game_and_rewards_reach_every_seat_at_the_end() -> None:
    env = ta("Poker-v0-small", num_players=3)
    assert env.possible_agents == ["player_0", "player_1", "player_2"]
    env.reset(seed=3)
    rng, seen, last = random.Random(3), set(), {}
    while not env.done:
        (seat,) = env.pending()
        seen.add(seat)
        last = env.step({seat: random_action(env.observe(seat), rng)})
    assert seen == set(env.possible_agents)
    assert set(last) == set(env.possible_agents) == set(env.returns())  # the final step pays every seat
    assert env.returns() == last


def test_eliminated_players_stop_acting() -> None:
    for seed in range(20):
        env = ta("LiarsDice-v0-small", num_players=3)
        env.reset(seed=seed)
        rng, acted_after = random.Random(seed), []
        while not env.done:
            (seat,) = env.pending()
            out = env.eliminated()
            acted_after += [seat] if seat in out else []
            env.step({seat: random_action(env.observe(seat), rng)})
        if env.eliminated():
            assert acted_after == []
            return
    pytest.fail("no random 3-player Liar's Dice game eliminated anyone in 20 seeds")


def test_team_game_keeps_its_teams_and_teammates_share_the_outcome() -> None:
    env = ta("Taboo-v0")
    assert env.teams == {"player_0": "team_0", "player_1": "team_0", "player_2": "team_1", "player_3": "team_1"}
    episodes = Runner(progress=False).play([Match(game_id=0, env="textarena:Taboo-v0", seats=_scripted(4), seed=1)])
    (ep,) = episodes
    assert ep.error is None and ep.teams == env.teams
    assert ep.outcomes["player_0"] == ep.outcomes["player_1"] and ep.outcomes["player_2"] == ep.outcomes["player_3"]


def test_secret_mafia_reveals_its_sides_only_at_the_end() -> None:
    env = ta("SecretMafia-v0")
    assert len(env.possible_agents) == 6
    env.reset(seed=0)
    assert len(set(env.teams.values())) == 6  # secret: every seat on its own during the game
    play_random(env, seed=0, max_steps=2000)
    assert env.done and set(env.teams.values()) == {"mafia", "village"}
    by_team: dict[str, set[float]] = {}
    for seat, r in env.returns().items():
        by_team.setdefault(env.teams[seat], set()).add(r)
    assert all(len(rs) == 1 for rs in by_team.values())  # one side wins, the other loses


def test_a_refused_move_is_reported_with_the_games_reason_then_the_second_ends_the_game() -> None:
    env = ta("TicTacToe-v0")
    env.reset(seed=0)
    env.step({"player_0": "[4]"})
    before = copy.deepcopy(env.game_state)
    env.step({"player_1": "[4]"})  # taken
    refusal = env.rejection("player_1")
    assert refusal is not None and "occupied" in refusal.reason and not refusal.final
    assert env.pending() == ["player_1"] and env.game_state == before  # a retry; the board is unchanged
    assert "[4]" not in env.observe("player_1").legal_actions
    env.step({"player_1": "[4]"})
    refusal = env.rejection("player_1")
    assert refusal is not None and refusal.final and env.done
    assert env.returns() == {"player_0": 1.0, "player_1": -1.0}


def test_the_runner_counts_refusals_as_invalid_and_a_final_one_as_a_forfeit() -> None:
    backend = CannedBackend(lambda r: "ACTION: [4]")  # always the centre: taken from the second move on
    llm = LLMAgentSpec(name="llm", reask=False)
    seats = {"player_0": llm, "player_1": LLMAgentSpec(name="llm2", reask=False)}
    (ep,) = Runner(backend, progress=False).play([Match(game_id=0, env="textarena:TicTacToe-v0", seats=seats, seed=0)])
    refused = [t for t in ep.turns if t.rejected]
    assert [t.seat for t in refused] == ["player_1", "player_1"] and "occupied" in (refused[0].rejected or "")
    assert refused[0].fallback is None and refused[1].fallback == "forfeit"
    assert ep.outcomes == {"player_0": "win", "player_1": "loss"}
    stats = {s.player: s for s in summarise([ep])}
    assert stats["llm2"].invalid_rate == 1.0 and stats["llm2"].fallback_rate == 0.5
    assert stats["llm"].invalid_rate == 0.0


def test_free_text_answers_reach_the_game_and_listed_moves_are_matched() -> None:
    backend = CannedBackend(lambda r: "PLAN: trade\nACTION: I offer wood. [Offer: 1 Wheat -> 1 Wood]")
    seats = {"player_0": LLMAgentSpec(name="a", lines=[]), "player_1": ScriptedAgentSpec(name="r", policy="random")}
    (ep,) = Runner(backend, progress=False).play(
        [Match(game_id=0, env="textarena:SimpleNegotiation-v0-short", seats=seats, seed=2)]
    )
    moves = [t.action for t in ep.turns if t.seat == "player_0"]
    assert moves and all(m == "I offer wood. [Offer: 1 Wheat -> 1 Wood]" for m in moves)
    assert ep.error is None and set(ep.returns) == {"player_0", "player_1"}
    kuhn = CannedBackend(lambda r: "ACTION: check" if "now: [check]" in r.messages[-1]["content"] else "ACTION: call")
    seats = {"player_0": LLMAgentSpec(name="p0"), "player_1": LLMAgentSpec(name="p1")}
    (ep,) = Runner(kuhn, progress=False).play([Match(game_id=0, env="textarena:KuhnPoker-v0", seats=seats, seed=0)])
    assert {t.action for t in ep.turns} <= {"[check]", "[call]"}  # "check" played as the listed "[check]"


@pytest.mark.parametrize(
    "lines", [None, []], ids=["play-default-lines", "config-action-only"]
)  # `llmmarl play --constrained`; the configs
def test_a_full_offer_fits_the_constrained_move_at_the_configs_token_budget(lines: list[str] | None) -> None:
    """SimpleNegotiation's offer format ("[Offer: 3 Sheep, 2 Ore -> 5 Brick, 2 Sheep]", its own example, 43
    characters) fits the turn grammar at the textarena configs' max_new_tokens, and the whole answer fits the budget
    in the default model's tokens. The move's cap was once counted one character per token: 21 characters."""
    xgr = pytest.importorskip("xgrammar")
    import yaml
    from transformers import AutoTokenizer

    from llmmarl.agents.llm import PromptContext, grammar_for
    from llmmarl.models import resolve_model

    budgets = {
        yaml.safe_load((ROOT / "configs" / f).read_text())["max_new_tokens"]
        for f in ["train_textarena_negotiation.yaml"]
    }
    budgets |= {
        p["max_new_tokens"]
        for p in yaml.safe_load((ROOT / "configs" / "tournament_textarena.yaml").read_text())["participants"]
        if p["kind"] == "llm"
    }
    tok = AutoTokenizer.from_pretrained(resolve_model("default"))
    compiler = xgr.GrammarCompiler(xgr.TokenizerInfo.from_huggingface(tok, vocab_size=len(tok)))
    env = ta("SimpleNegotiation-v0")
    env.reset(seed=0)
    (seat,) = env.pending()
    offer = "[Offer: 3 Sheep, 2 Ore -> 5 Brick, 2 Sheep]"
    assert offer in env.observe(seat).text  # the game's own example of its format
    for budget in budgets:
        extra = {} if lines is None else {"lines": lines}
        spec = LLMAgentSpec(name="a", constrained=True, max_new_tokens=budget, **extra)
        context = PromptContext.of(env, seat, env.observe(seat), [], spec)
        grammar = grammar_for(env, seat, context, spec)
        assert grammar is not None
        answer = ("PLAN: trade ore\n" if spec.asks("PLAN") else "") + f"ACTION: {offer}"
        ids = tok(answer, add_special_tokens=False)["input_ids"]
        matcher = xgr.GrammarMatcher(compiler.compile_grammar(grammar))
        assert all(matcher.accept_token(t) for t in ids) and matcher.accept_token(tok.eos_token_id), (budget, grammar)
        assert len(ids) + 1 <= budget  # the answer and its end fit the budget, in tokens
        parsed = parse_turn(answer, context.legal, context.others, context.free_text)
        assert parsed.turn is not None and parsed.turn.action == offer


def test_games_that_cannot_run_fail_with_one_line() -> None:
    for name, why in [
        ("Wordle-v0", "nltk data"),
        ("Debate-v0", "remote LLM judge"),
        ("UsedCarNegotiation-v0", "missing from the TextArena 0.7.4 wheel"),
        ("NoSuchGame-v0", "unknown TextArena game"),
    ]:
        with pytest.raises(UnknownEnvError) as e:
            make(f"textarena:{name}")
        assert why in str(e.value) and "\n" not in str(e.value)
    if sys.version_info < (3, 12):
        with pytest.raises(UnknownEnvError, match=r"Python 3\.12"):
            make("textarena:Chess-v0")
    with pytest.raises(UnknownEnvError, match="players=N"):
        make("textarena:Poker-v0(seats=3)")


def test_word_games_never_call_nltk_download() -> None:
    """TextArena's word games call nltk.download at import, which reaches the network: neither listing the games
    nor asking for one may do that (it can hang without network). Bounded in time."""
    code = (
        "import nltk, sys\n"
        "def no(*a, **k): sys.exit('nltk.download was called')\n"
        "nltk.download = no\n"
        "from llmmarl.envs import make, UnknownEnvError\n"
        "from llmmarl.envs.textarena import availability, textarena_games\n"
        "[availability(i) for i in textarena_games()]\n"
        "for g in ('Wordle-v0', 'Hangman-v0', 'Codenames-v0', 'SpellingBee-v0'):\n"
        "    try: make('textarena:' + g)\n"
        "    except UnknownEnvError as e: print(e)\n"
        "import textarena.envs.Hangman.env\n"  # imported directly: the download is reached at import
    )
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.stderr.strip().splitlines()[-1] == "nltk.download was called"  # the direct import, not ours
    assert out.stdout.count("nltk data that is not installed") == 4
    assert time.perf_counter() - start < 60


def test_games_side_by_side_replay_like_one_alone() -> None:
    """Each env keeps its own copy of the global RNG state TextArena draws from (docs/textarena.md)."""
    alone = play_random(ta("LiarsDice-v0"), seed=5)
    a, b = ta("LiarsDice-v0"), ta("LiarsDice-v0")
    a.reset(seed=5), b.reset(seed=6)
    rng, trace = random.Random(5), []
    while not a.done:
        (seat,) = a.pending()
        obs = a.observe(seat)
        move = random_action(obs, rng)
        trace.append((seat, obs.text, str(move)))
        a.step({seat: move})
        if not b.done:  # interleaved draws of another game
            (other,) = b.pending()
            b.step({other: random_action(b.observe(other), random.Random(len(trace)))})
    assert trace == alone


# ---- conformance-style checks on every game that works offline ------------------------------------------------
def test_the_offline_games_are_most_of_textarena() -> None:
    games = {game_of(i) for i in OFFLINE}
    assert len(games) >= 60 and {"SimpleNegotiation", "KuhnPoker", "LiarsDice", "SecretMafia", "Taboo"} <= games


@pytest.mark.parametrize(
    "env_id",
    [pytest.param(i, marks=pytest.mark.xfail(reason=KNOWN[i], strict=True)) if i in KNOWN else i for i in OFFLINE],
)
def test_conformance(env_id: str) -> None:
    env = ta(env_id)
    first = play_random(env, seed=11, max_steps=MAX_STEPS)
    assert play_random(env, seed=11, max_steps=MAX_STEPS) == first, "same seed, different observations"

    env.reset(seed=11)
    (seat,) = env.pending()
    for move in ("x" * 100_000, "", "\x00\x07\x1b[2J\r\x7f"):  # huge, empty, control characters
        if env.done:
            break
        (seat,) = env.pending()
        start = time.perf_counter()
        state = copy.deepcopy(env.game_state)
        env.step({seat: move})
        assert time.perf_counter() - start < 5.0, f"{move[:8]!r}... took too long"
        refusal = env.rejection(seat)
        if refusal is not None and not refusal.final:
            # A refused move changes nothing but the counters: same seat to move, same game state.
            assert env.pending() == [seat] and env.game_state == state
        assert env.done or len(env.pending()) == 1


def _scripted(n: int) -> dict[str, ScriptedAgentSpec]:
    return {f"player_{i}": ScriptedAgentSpec(name=f"random_{i}", policy="random") for i in range(n)}


def test_llmmarl_envs_lists_textarena_games_with_why_not() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "llmmarl.cli", "envs"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "250"},
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    row = next(line for line in lines if "│ Wordle " in line)
    assert "no:" in row and "nltk" in row
    assert "available" in next(line for line in lines if "│ SimpleNegotiation " in line)
    assert re.search(r"\d+ of \d+ games available here", out.stdout)


def test_a_tournament_of_textarena_games_with_its_html_report(tmp_path: Path) -> None:
    from llmmarl.tournament import TournamentConfig, run_tournament
    from llmmarl.tournament.report import build_report, render_html
    from llmmarl.tournament.store import TournamentStore

    cfg = TournamentConfig.model_validate(
        {
            "name": "ta",
            "games": ["textarena:KuhnPoker-v0", "textarena:SimpleNegotiation-v0-short"],
            "participants": ["random", {"kind": "scripted", "name": "random2", "policy": "random"}],
            "schedule": {"format": "round_robin", "games_per_pairing": 4},
            "db": str(tmp_path / "ta.sqlite"),
            "bootstrap": 50,
        }
    )
    run_tournament(cfg, progress=False)
    with TournamentStore(cfg.db) as store:
        results = store.results(cfg.name)
        report = build_report(store, cfg.name, bootstrap=50)
    assert len(results) == 16 and {r.game for r in results} == {
        g.env for g in cfg.games
    }  # 2 games x 4 x both seat orders
    assert all(r.error is None for r in results)
    page = render_html(report)
    assert "textarena:KuhnPoker-v0" in page and "random2" in page


def test_an_agent_behind_an_openai_endpoint_plays_a_textarena_game() -> None:
    """The OpenAI backend against a real HTTP server on 127.0.0.1 (the test server answers a move it reads from
    the prompt, as a served model would answer)."""
    from hostile_server import HostileServer

    from llmmarl.backends.openai import OpenAIBackend

    seats = {"player_0": LLMAgentSpec(name="served"), "player_1": ScriptedAgentSpec(name="r", policy="random")}
    with HostileServer(["ok"]) as srv, OpenAIBackend(srv.url, timeout=5.0, max_retries=0) as backend:
        (ep,) = Runner(backend, progress=False).play(
            [Match(game_id=0, env="textarena:TicTacToe-v0", seats=seats, seed=0)]
        )
    served = [t for t in ep.turns if t.player == "served"]
    assert ep.error is None and served and all(t.attempts and t.turn is not None for t in served)
    assert all(t.action.startswith("[") and not t.rejected for t in served)  # a listed move, read from the prompt


def test_a_refused_move_earns_the_forfeit_reward_in_training() -> None:
    from llmmarl.train.samples import reward_terms

    backend = CannedBackend(lambda r: "ACTION: [4]")
    seats = {"player_0": LLMAgentSpec(name="a", reask=False), "player_1": LLMAgentSpec(name="b", reask=False)}
    (ep,) = Runner(backend, progress=False).play([Match(game_id=0, env="textarena:TicTacToe-v0", seats=seats, seed=0)])
    taken = next(t for t in ep.turns if t.seat == "player_0")
    refused = next(t for t in ep.turns if t.rejected)
    assert reward_terms(ep, taken, 0, forfeit_reward=-1.0)["game"] == ep.returns["player_0"] == 1.0
    assert reward_terms(ep, refused, 0, forfeit_reward=-3.0)["game"] == -3.0
    assert reward_terms(ep, refused, 0, forfeit_reward=-3.0)["format"] == 0.0  # well formed for the parser


def test_the_retrying_seat_hears_why_its_move_was_refused() -> None:
    env = ta("SimpleNegotiation-v0")  # its observation wrapper drops TextArena's own notice
    env.reset(seed=0)
    env.step({"player_0": "[Offer: 1000 Ore -> 1 Wheat]"})
    refusal = env.rejection("player_0")
    assert refusal is not None and not refusal.final and env.pending() == ["player_0"]
    assert refusal.reason in env.observe("player_0").text


def test_grpo_trains_on_a_textarena_game_and_logs_answer_length(tmp_path: Path) -> None:
    """One GRPO update of the shipped config on the tiny model: the free-text game goes through the same loop."""
    from typer.testing import CliRunner

    from llmmarl.cli import app
    from llmmarl.train.config import TrainConfig
    from llmmarl.train.metrics import read_metrics

    sets = ["model=tiny", "steps=1", "games_per_update=4", "eval_games=2", f"output_dir={tmp_path}"]
    config = str(ROOT / "configs" / "train_textarena_negotiation.yaml")
    result = CliRunner().invoke(app, ["train", config, *[a for s in sets for a in ("--set", s)]])
    assert result.exit_code == 0, result.output
    (update,) = [row for row in read_metrics(tmp_path / "metrics.jsonl") if row.is_update]
    m = update.learners["negotiator"]
    assert m["samples/count"] > 0
    cap = TrainConfig.from_yaml(config).max_new_tokens
    assert 1 <= m["samples/completion_tokens_min"] <= m["samples/completion_tokens_max"] <= cap
    assert 0.0 <= m["samples/cut_rate"] <= 1.0


def test_a_game_whose_players_are_all_eliminated_ends_instead_of_hanging() -> None:
    """PublicGoodsGame (0.7.4) eliminates players for invalid moves and then looks for a next player forever once
    nobody is left; the adapter ends the game there, each seat losing."""
    env = ta("PublicGoodsGame-v0")
    start = time.perf_counter()
    play_random(env, seed=0, max_steps=300)
    assert env.done and time.perf_counter() - start < 30
    if len(env.eliminated()) == len(env.possible_agents):
        assert env.returns() == dict.fromkeys(env.possible_agents, -1.0)


def test_the_table_script_reports_a_game_from_a_real_attempt() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    import textarena_games as table

    ok = table.attempt("KuhnPoker-v0", steps=300, timeout=120)
    line = table.row("KuhnPoker", ["KuhnPoker-v0"], ok, {"KuhnPoker"})
    assert ok["players"] == [2] and line.startswith("| KuhnPoker | `KuhnPoker-v0` | 2 | yes (random games:")
    blocked = table.attempt("Wordle-v0", steps=300, timeout=120)
    assert "nltk data" in table.row("Wordle", ["Wordle-v0"], blocked, set())
