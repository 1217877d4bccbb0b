"""No answer from a model or a server crashes a run (see docs/reliability.md).

Everything here runs against :mod:`tests.hostile_server`, a real HTTP server on 127.0.0.1, through the real
``openai`` client, and kills real ``llmmarl`` processes.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmmarl.agents.messages import CHARS_PER_TOKEN, sanitise_message
from llmmarl.agents.specs import LLMAgentSpec, ScriptedAgentSpec
from llmmarl.backends.base import BackendError, Generation, GenerationRequest, safe_text, word_truncate
from llmmarl.backends.openai import OpenAIBackend
from llmmarl.cli import app
from llmmarl.envs import make
from llmmarl.records import EpisodeRecord, read_episodes, summarise
from llmmarl.runner import Match, Runner
from llmmarl.tournament import TournamentConfig, run_tournament
from llmmarl.tournament.store import TournamentStore

sys.path.insert(0, str(Path(__file__).parent))
from hostile_server import BEHAVIOURS, INJECTION, MARKUP, HostileServer

ROOT = Path(__file__).resolve().parents[1]
REQUEST = GenerationRequest(messages=[{"role": "user", "content": "Legal actions: 3, 4, 5"}], max_new_tokens=16)
CONTROL = ("<|im_start|>", "<|im_end|>", "<|eot_id|>", "[INST]", "[/INST]", "</s>", "<s>")

# The reason each failing behaviour must be reported with (the server's own words where it has some).
FAILURES = {
    "html_200": "not JSON \\(content-type text/html\\)",
    "junk_200": "not JSON \\(content-type application/json\\)",
    "empty_choices": "choices: List should have at least 1 item",
    "wrong_types": "choices.0.message.content: Input should be a valid string",
    "missing_fields": "choices: Field required",
    "500": "\\(500\\): hostile 500",
    "429": "\\(429\\): hostile 429",
    "503": "\\(503\\): hostile 503",
    "cut": "connect|Connection|deadline",
    "slow": "deadline|did not answer",
    "trickle": "trickling body",
    "huge_body": "larger than the 262,144-byte cap",
}


def backend(url: str, **kw: object) -> OpenAIBackend:
    options: dict[str, object] = {"timeout": 1.0, "max_retries": 0, "max_response_bytes": 2**18, **kw}
    return OpenAIBackend(url, **options)  # type: ignore[arg-type]


# ---- the backend: one bad request fails one decision -----------------------------------------------------------
@pytest.mark.parametrize("behaviour", sorted(FAILURES))
def test_a_bad_reply_fails_its_request_only(behaviour: str) -> None:
    with HostileServer([behaviour, "ok"], slow_s=2.0, huge_bytes=2**20) as srv, backend(srv.url) as b:
        gens = b.generate([REQUEST, REQUEST])
    failed = [g for g in gens if g.error is not None]
    answered = [g for g in gens if g.error is None]
    assert len(failed) == 1 and len(answered) == 1, gens  # the batch's other request is answered
    assert failed[0].text == "" and failed[0].completion_ids == []
    assert pytest.importorskip("re").search(FAILURES[behaviour], failed[0].error), failed[0].error
    assert answered[0].text.endswith(("ACTION: 3", "ACTION: 4", "ACTION: 5"))
    assert b.stats["failed_requests"] == 1


def test_every_behaviour_is_covered() -> None:
    answered = {"ok", "inject", "huge_text", "escapes", "surrogate", "markup", "no_action"}
    assert set(FAILURES) | answered == set(BEHAVIOURS)


def test_retries_ride_out_a_burst_of_500s_and_429s() -> None:
    with HostileServer(["500", "500", "429", "ok"]) as srv, backend(srv.url, max_retries=3) as b:
        (gen,) = b.generate([REQUEST])
    assert gen.error is None and "ACTION" in gen.text and srv.counts["500"] == 2 and srv.counts["429"] == 1


def test_a_request_has_one_deadline_for_all_its_retries() -> None:
    with HostileServer(["slow"], slow_s=5.0) as srv, backend(srv.url, max_retries=3) as b:
        start = time.perf_counter()
        (gen,) = b.generate([REQUEST])
        took = time.perf_counter() - start
    assert gen.error is not None and took < 3.0  # 1 s deadline (+ one back-off), not 4 tries of 1 s each


@pytest.mark.parametrize("behaviour", ["surrogate", "escapes"])
def test_model_text_is_made_safe_where_it_enters(behaviour: str) -> None:
    with HostileServer([behaviour]) as srv, backend(srv.url) as b:
        (gen,) = b.generate([REQUEST])
    assert gen.error is None
    gen.text.encode("utf-8")  # a lone surrogate would raise here, in the next request and in model_dump_json
    assert json.loads(gen.model_dump_json())["text"] == gen.text
    assert not any(c in gen.text for c in "\x00\x1b\r\x07\ud800\udfff")


def test_safe_text_keeps_ordinary_text() -> None:
    text = "PLAN: é, 日本, emoji 😀\n\tACTION: 3"
    assert safe_text(text) == text
    assert safe_text("a\x1b[1;31mb\x1b]8;;http://x\x1b\\c\x9b2Jd\x00e\ud83d") == "abcde\ufffd"
    gen = Generation(text="\ud800", prompt_ids=[], completion_ids=[], logprobs=[], finish_reason="stop")
    assert gen.text == "\ufffd"


def test_a_server_that_keeps_failing_is_one_clear_error() -> None:
    with HostileServer(["503"]) as srv, backend(srv.url, max_failures_in_a_row=4) as b:
        assert b.generate([REQUEST] * 3)[0].error is not None  # 3 in a row: still going
        with pytest.raises(BackendError, match=r"failed 4 requests in a row.*503.*finished games are kept"):
            b.generate([REQUEST])


def test_huge_answers_are_cut_to_the_token_budget() -> None:
    with HostileServer(["huge_text"]) as srv, backend(srv.url) as b:
        (gen,) = b.generate([REQUEST])
    assert gen.error is None and len(gen.text) <= 16 * 64 and gen.finish_reason == "length"


# ---- the runner: outages are not moves --------------------------------------------------------------------------
def test_an_outage_stops_the_game_and_counts_nowhere() -> None:
    llm = LLMAgentSpec(name="llm", max_new_tokens=16)
    rand = ScriptedAgentSpec(name="random", policy="random")
    seats = {"player_1": llm, "player_2": rand}
    matches = [Match(game_id=i, env="tictactoe_v3", seats=seats, seed=i) for i in range(3)]
    with HostileServer(["empty_choices"]) as srv, backend(srv.url) as b:
        eps = Runner(b, progress=False).play(matches)
    assert all(ep.outage and ep.error and "server outage at step 0" in ep.error for ep in eps)
    assert all(ep.turns == [] and ep.returns == {} for ep in eps)  # no random move stood in for the model
    assert summarise(eps) == []  # counts in no statistics (ratings, training skip errored games too)
    assert srv.counts["empty_choices"] == 6  # each decision asked twice: once, then once more


def test_a_failed_request_is_sent_again_and_is_not_an_invalid_answer() -> None:
    llm = LLMAgentSpec(name="llm", max_new_tokens=16)
    rand = ScriptedAgentSpec(name="random", policy="random")
    match = Match(game_id=0, env="tictactoe_v3", seats={"player_1": llm, "player_2": rand}, seed=0)
    with HostileServer(["html_200", "ok"]) as srv, backend(srv.url) as b:
        (ep,) = Runner(b, progress=False).play([match])
    assert ep.error is None and not ep.outage
    first = ep.turns[0]
    assert first.attempts[0].server_error and first.attempts[0].messages == first.attempts[1].messages
    assert first.fallback is None and not first.invalid  # the model's only answer was legal


# ---- the command line against the hostile server ----------------------------------------------------------------
MIXED = [
    *("ok", "inject", "html_200", "ok", "huge_text", "500", "500", "escapes", "junk_200", "surrogate", "ok"),
    *("empty_choices", "no_action", "inject", "429", "429", "ok", "cut", "wrong_types", "ok", "slow"),
    *("missing_fields", "ok", "trickle", "huge_body", "inject", "markup", "ok"),
]
# Transcripts printed or not: with them, every answer above also goes through the terminal's markup.
SHOW = pytest.mark.parametrize("show", [0, 8], ids=["quiet", "shown"])


def _play(env: str, srv: HostileServer, out: Path, games: int, agents: str, show: int = 0) -> str:
    result = CliRunner().invoke(
        app,
        [
            "play",
            env,
            "--endpoint",
            srv.url,
            "--agents",
            agents,
            "--games",
            str(games),
            "--timeout",
            "1",
            "--out",
            str(out),
            "--show",
            str(show),
            "--max-new-tokens",
            "32",
        ],
    )
    assert result.exit_code == 0, result.output
    return result.output


@SHOW
def test_play_tictactoe_finishes_every_game_against_a_hostile_server(tmp_path: Path, show: int) -> None:
    out = tmp_path / "t.jsonl"
    with HostileServer(MIXED, slow_s=2.0) as srv:
        text = _play("tictactoe_v3", srv, out, 8, "llm,random", show)
    eps = list(read_episodes(out))
    assert sorted(int(ep.game_id) for ep in eps) == list(range(8))  # every game written, none lost
    assert all(ep.error is None or ep.outage for ep in eps)  # the only broken games are outages
    assert any(ep.error is None for ep in eps)
    assert "inv/fb" in text and "failed by the" in text  # the summary's invalid/fallback column and counts
    assert set(srv.counts) >= {"html_200", "empty_choices", "surrogate", "500", "429", "cut", "slow", "trickle"}


@SHOW
def test_play_signal_delivers_clean_messages_within_budget(tmp_path: Path, show: int) -> None:
    out = tmp_path / "s.jsonl"
    budget = make("signal_v0").message_rules.max_tokens
    with HostileServer(["inject", "huge_text", "surrogate", "escapes", *MIXED]) as srv:
        _play("signal_v0", srv, out, 8, "llm", show)
        prompts = [m["content"] for body in srv.requests for m in body["messages"]]
    eps = list(read_episodes(out))
    assert sorted(int(ep.game_id) for ep in eps) == list(range(8))
    delivered = [t.message for ep in eps for t in ep.turns if t.message]
    assert delivered, "no message was delivered"
    for m in delivered:
        assert not any(tok in m for tok in CONTROL) and "\n" not in m and '"' not in m
        assert len(m.split()) <= budget and len(m) <= budget * CHARS_PER_TOKEN
    # What reached the model, inboxes and quoted re-asks included, carries none of the injected control tokens.
    assert not any(tok in p for p in prompts for tok in CONTROL)


def test_model_text_prints_as_written_not_as_markup(tmp_path: Path) -> None:
    with HostileServer(["markup"]) as srv:
        text = _play("tictactoe_v3", srv, tmp_path / "m.jsonl", 1, "llm,random", show=1)
    assert f"PLAN: {MARKUP} [bold red]win[/]" in text  # the answer, literally: no MarkupError, no hyperlink
    assert "\x1b]8;" not in text


def test_names_and_errors_print_as_written(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["play", "tictactoe_v3", "--model", "[/x]none", "--games", "1"])
    assert result.exit_code == 1 and "MarkupError" not in result.output, result.output
    assert "cannot load model '[/x]none'" in result.output


def test_message_caps_characters_and_strips_the_tokenizers_special_tokens() -> None:
    assert len(sanitise_message("w" * 20_000, 4, word_truncate)) == 4 * CHARS_PER_TOKEN
    clean = sanitise_message(f"go <tok_special> left {INJECTION}", 64, word_truncate, ["<tok_special>"])
    assert not any(tok in clean for tok in (*CONTROL, "<tok_special>")) and clean.startswith("go left")


# ---- config errors: one line, with the file and the place ----------------------------------------------------------
@pytest.mark.parametrize("command", ["train", "tournament"])
def test_yaml_syntax_errors_are_one_line(tmp_path: Path, command: str) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: x\ngames: [tictactoe_v3\nseed: 0\n", encoding="utf-8")
    result = CliRunner().invoke(app, [command, str(bad)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert lines[0].startswith(f"invalid config {bad}: not valid YAML at line ")


def test_tournament_field_errors_name_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ngames: [tictactoe_v3]\nparticipants: [random, minimax]\nseed: many\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["tournament", str(bad)])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert "seed: Input should be a valid integer" in result.output


# ---- tournaments: outages are played again on resume ---------------------------------------------------------------
def test_tournament_replays_games_an_outage_stopped(tmp_path: Path) -> None:
    with HostileServer(["empty_choices"]) as srv:
        cfg = TournamentConfig.model_validate(
            {
                "name": "hostile",
                "games": ["tictactoe_v3"],
                "participants": [
                    {"kind": "openai", "name": "served", "base_url": srv.url, "model": "hostile-model"}
                    | {"api_key_env": None},
                    "random",
                ],
                "schedule": {"format": "round_robin", "games_per_pairing": 1},
                "db": str(tmp_path / "t.sqlite"),
            }
        )
        first = run_tournament(cfg, progress=False)
        assert (first.scheduled, first.finished, first.errors) == (2, 0, 0)  # outages are neither
        with TournamentStore(cfg.db) as store:
            assert len(store.missing("hostile")) == 2 and store.results("hostile") == []
        srv.script = itertools.cycle(["ok"])  # the server recovers
        second = run_tournament(cfg, progress=False)
    assert (second.played_now, second.finished) == (2, 2)
    with TournamentStore(cfg.db) as store:
        assert store.missing("hostile") == [] and len(store.results("hostile")) == 2
        assert not any(store.episode(g.id).outage for g in store.games("hostile"))
        assert store.conn.execute("SELECT COUNT(*) FROM seat_results").fetchone()[0] == 4  # old rows replaced


# ---- killed runs keep their games ------------------------------------------------------------------------------------
def _llmmarl(*args: str, cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "llmmarl.cli", *args]
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(cond: object, proc: subprocess.Popen[str], limit: float = 90.0) -> None:
    deadline = time.monotonic() + limit
    while not cond():  # type: ignore[operator]
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.02)


def _lines(path: Path) -> int:
    return path.read_text(encoding="utf-8").count("\n") if path.exists() else 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killed_play_keeps_its_finished_games(tmp_path: Path, sig: signal.Signals) -> None:
    out = tmp_path / "games.jsonl"
    proc = _llmmarl("play", "tictactoe_v3", "--agents", "random,minimax", "--games", "50000", "--out", str(out),
                    "--show", "0", cwd=tmp_path)  # fmt: skip
    _wait_for(lambda: _lines(out) >= 20, proc)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    lines = out.read_text(encoding="utf-8").splitlines(keepends=True)
    if sig == signal.SIGTERM:
        assert proc.returncode == 130 and "interrupted" in stdout and "Traceback" not in stderr, stderr
        assert all(line.endswith("\n") for line in lines)  # closed cleanly: no half line
        complete = lines
    else:
        assert proc.returncode == -signal.SIGKILL
        complete = [line for line in lines if line.endswith("\n")]  # at most the last one is cut off
    episodes = [EpisodeRecord.model_validate_json(line) for line in complete]
    assert len(episodes) >= 20 and len(episodes) < 50000
    assert len({ep.game_id for ep in episodes}) == len(episodes)
    assert all(ep.error is None and ep.returns for ep in episodes)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killed_tournament_keeps_its_games_and_resumes_the_rest(tmp_path: Path, sig: signal.Signals) -> None:
    db = tmp_path / "t.sqlite"
    config = tmp_path / "t.yaml"
    config.write_text(
        "name: kill\ngames: [tictactoe_v3]\nparticipants: [random, minimax]\n"
        f"schedule: {{format: round_robin, games_per_pairing: 300}}\ndb: {db}\nconcurrency: 8\n",
        encoding="utf-8",
    )

    def stored() -> int:
        if not db.exists():
            return 0
        try:
            with sqlite3.connect(db, timeout=5) as c:
                return int(c.execute("SELECT COUNT(*) FROM results").fetchone()[0])
        except sqlite3.OperationalError:  # tables not made yet
            return 0

    proc = _llmmarl("tournament", str(config), cwd=tmp_path)
    _wait_for(lambda: stored() >= 50, proc)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    if sig == signal.SIGTERM:
        assert proc.returncode == 130 and "interrupted" in stdout and "Traceback" not in stderr, stderr
    else:
        assert proc.returncode == -signal.SIGKILL
    with TournamentStore(db) as store:
        assert store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        scheduled, kept, _ = store.counts("kill")
        assert 50 <= kept < scheduled == 600
        before = {g.id: store.episode(g.id).model_dump_json() for g in store.games("kill") if g.done}
    cfg = TournamentConfig.from_yaml(config)
    summary = run_tournament(cfg, progress=False)
    assert summary.played_now == scheduled - kept and summary.finished == scheduled  # only the missing ones
    with TournamentStore(db) as store:
        assert all(store.episode(i).model_dump_json() == ep for i, ep in before.items())  # kept games untouched
