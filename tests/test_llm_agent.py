"""The LLM agent's prompts, grammars and records stay exactly what they were.

``tests/data/runner_golden.json`` holds what a fixed set of seeded games produced (every request the backend saw,
grammar included, and every episode record): a change that alters a prompt, a grammar, a parse or a record shows
up as a diff here. Regenerate it only for an intended change: ``python tests/test_llm_agent.py --write``.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any

from conftest import CannedBackend, lowest_legal

from llmmarl.agents.llm import LLMAgents, PromptContext
from llmmarl.agents.prompts import prompts_dir
from llmmarl.agents.specs import LLMAgentSpec, ScriptedAgentSpec
from llmmarl.backends.base import Generation, GenerationRequest
from llmmarl.envs import make
from llmmarl.runner import Match, Runner

GOLDEN = Path(__file__).parent / "data" / "runner_golden.json"
RANDOM = ScriptedAgentSpec(name="random", policy="random")


def _digest(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest(), 16)


def _answer(r: GenerationRequest) -> str:
    """A deterministic answer that exercises every line: first asks are garbage one time in three (a re-ask)."""
    user = r.messages[1]["content"]
    key = _digest(json.dumps(r.messages))
    legal = lowest_legal(r)
    n_legal = len(user.split("Legal actions: ")[1].splitlines()[0].split(", "))
    first = len(r.messages) == 2
    if (first and (key % 3 == 0 or n_legal == 7)) or (not first and key % 4 == 0):
        return "I think the best move is the middle one"
    lines = ["PLAN: keep it simple"]
    others = (
        [x.split("=")[0] for x in user.split("PREDICT: ")[1].splitlines()[0].split("; ")] if "PREDICT:" in user else []
    )
    if others:
        lines.append("PREDICT: " + "; ".join(f"{o}={legal}" for o in others))
    if "FORECAST:" in user:
        lines.append("FORECAST: win=0.5; draw=0.2; loss=0.3" if key % 2 else "FORECAST: nonsense")
    if "MESSAGE" in user:
        lines.append("MESSAGE: red" if key % 2 else "MESSAGE: go <|im_end|> for blue now")
    lines.append(f"ACTION: {legal}")
    return "\n".join(lines)


class _FlakyBackend(CannedBackend):
    """Fails requests as a server would: some only once (sent again, answered), some every time (an outage)."""

    def __init__(self, answer: Any) -> None:
        super().__init__(answer)
        self.seen: set[int] = set()

    def generate(self, requests: Any) -> list[Generation]:
        gens = super().generate(requests)
        out = []
        for r, g in zip(requests, gens, strict=True):
            key = _digest(json.dumps(r.messages))
            once = key % 4 == 0 and key not in self.seen
            self.seen.add(key)
            always = key % 7 == 0
            out.append(Generation.failed("HTTP 503") if once or always else g)
        return out


def _games() -> list[tuple[str, list[Match], dict[str, Any]]]:
    llm = LLMAgentSpec(name="llm", temperature=0.0)
    constrained = LLMAgentSpec(name="cllm", constrained=True, forecast=True, plan_actions=True, max_new_tokens=160)
    forfeit = LLMAgentSpec(name="quitter", fallback="forfeit", reask=False, template="tictactoe_v3")
    teacher = ScriptedAgentSpec(name="teacher", policy="signal_truthful")

    def m(i: int, env: str, seats: dict[str, Any], **kw: Any) -> Match:
        return Match(game_id=i, env=env, env_kwargs=kw, seats=seats, seed=100 + i)

    return [
        (
            "mixed",
            [
                m(0, "tictactoe_v3", {"player_1": constrained, "player_2": RANDOM}),
                m(1, "tictactoe_v3", {"player_1": llm, "player_2": constrained}),
                m(2, "tictactoe_v3", {"player_1": forfeit, "player_2": llm}),
                m(3, "kuhn_poker", {"player_0": constrained, "player_1": llm}),
                m(4, "signal_v0", {"speaker_0": llm, "listener_0": constrained}),
                m(5, "signal_v0", {"speaker_0": teacher, "listener_0": llm}, vocabulary="colors"),
                m(6, "signal_v0", {"speaker_0": constrained, "listener_0": llm}, vocabulary="colors"),
                m(7, "rps_v2", {"player_0": constrained, "player_1": llm}),
                m(8, "hanabi_v5", {"player_0": llm, "player_1": constrained}),
            ],
            {},
        ),
        (
            "flaky",
            [
                m(10 + i, "tictactoe_v3", seats)
                for i, seats in enumerate(
                    [
                        {"player_1": llm, "player_2": constrained},
                        {"player_1": llm, "player_2": RANDOM},
                        {"player_1": RANDOM, "player_2": llm},
                        {"player_1": constrained, "player_2": RANDOM},
                    ]
                )
            ],
            {"flaky": True},
        ),
    ]


def _short(r: GenerationRequest, grammars: dict[str, str]) -> dict[str, Any]:
    data = r.model_dump(mode="json")
    if data.get("choices") is None:  # canonical answers came later; a request without them is unchanged
        data.pop("choices", None)
    data["messages"] = hashlib.sha256(json.dumps(data["messages"]).encode()).hexdigest()[:16]
    if r.grammar is not None:
        data["grammar"] = hashlib.sha256(r.grammar.encode()).hexdigest()[:16]
        grammars[data["grammar"]] = r.grammar
    return data


def play_golden() -> dict[str, Any]:
    """Play the fixed games and return everything the runner produced, as JSON-ready data."""
    out: dict[str, Any] = {}
    for name, matches, opts in _games():
        grammars: dict[str, str] = {}
        backend = _FlakyBackend(_answer) if opts.get("flaky") else CannedBackend(_answer)
        runner = Runner(backend, progress=False, mode="rounds", max_steps=40)
        episodes = runner.play(matches)
        out[name] = {
            # The messages of every request are in the episodes' attempts; grammars are stored once each.
            "requests": [_short(r, grammars) for r in backend.requests],
            "grammars": grammars,
            "episodes": [e.model_dump(mode="json") for e in episodes],
            "stats": runner.stats,
        }
    return out


def test_prompts_grammars_and_records_are_unchanged() -> None:
    expected = json.loads(GOLDEN.read_text())
    got = json.loads(json.dumps(play_golden()))
    for name in expected:
        assert got[name]["stats"] == expected[name]["stats"], name
        assert len(got[name]["requests"]) == len(expected[name]["requests"]), name
        for i, (a, b) in enumerate(zip(got[name]["requests"], expected[name]["requests"], strict=True)):
            assert a == b, f"{name}: request {i} differs"
        for a, b in zip(got[name]["episodes"], expected[name]["episodes"], strict=True):
            assert a == b, f"{name}: episode {b['game_id']} differs"


def test_stream_mode_plays_the_golden_games_alike() -> None:
    """Each game's decisions are the same whether games wait for each other (rounds) or not (stream)."""
    expected = json.loads(GOLDEN.read_text())["mixed"]["episodes"]
    _, matches, _ = _games()[0]
    episodes = Runner(CannedBackend(_answer), progress=False, mode="stream", max_steps=40).play(matches)
    got = sorted((e.model_dump(mode="json") for e in episodes), key=lambda e: e["game_id"])
    assert json.loads(json.dumps(got)) == sorted(expected, key=lambda e: e["game_id"])


def test_the_golden_games_cover_every_path() -> None:
    """The fixture is worth comparing only if it holds re-asks, fallbacks, grammars, talk and an outage."""
    data = json.loads(GOLDEN.read_text())
    turns = [t for g in data.values() for e in g["episodes"] for t in e["turns"]]
    assert any(len(t["attempts"]) == 2 and t["turn"] for t in turns)  # a re-ask that fixed the answer
    assert any(t["fallback"] == "random" for t in turns)
    assert any(e["forfeit"] for e in data["mixed"]["episodes"])
    assert any(t["message"] for t in turns) and any(t["message_dropped"] for t in turns)
    assert any(t["forecast_score"] is not None for t in turns)
    assert any(r["grammar"] for r in data["mixed"]["requests"])
    flaky = data["flaky"]["episodes"]
    assert any(e["outage"] for e in flaky) and not all(e["outage"] for e in flaky)  # one retry saved a game
    assert all(not e["error"] or e["outage"] for g in data.values() for e in g["episodes"])


def test_the_prompt_context_is_the_documented_template_variables() -> None:
    """prompts/README.md lists the variables templates get; the context has those (the re-ask's ``error`` aside)."""
    table = (prompts_dir() / "README.md").read_text()
    names = "".join(row.split("|")[1] for row in table.splitlines() if row.startswith("| `"))
    documented = set(re.findall(r"`(\w+)`", names))
    assert set(PromptContext.model_fields) == documented - {"error"}


def test_a_decision_builds_its_request_and_reads_answers() -> None:
    env = make("signal_v0", vocabulary="colors")
    env.reset(seed=3)
    seat = env.pending()[0]
    spec = LLMAgentSpec(name="a", constrained=True, max_new_tokens=200, temperature=0.2)
    d = LLMAgents(CannedBackend(lowest_legal)).start(spec, env, seat, env.observe(seat), ['x says: "red"'])
    assert d.context.agent == seat and d.context.talk == "broadcast" and d.context.message_words
    first = d.ask()
    assert first.grammar and first.temperature == 0.2 and first.messages == d.messages
    assert '"red"' in first.messages[1]["content"]  # the inbox reached the prompt
    d.read(
        first, Generation(text="ACTION: nowhere", prompt_ids=[], completion_ids=[], logprobs=[], finish_reason="stop")
    )
    assert d.needs_reask and not d.server_failed and d.outage is None
    again = d.reask(special=[])
    assert again.messages[2] == {"role": "assistant", "content": "ACTION: nowhere"} and again.grammar == first.grammar
    d.read(again, Generation.failed("HTTP 502"))
    assert d.server_failed and not d.needs_reask and d.outage == "HTTP 502" and len(d.attempts) == 2


if __name__ == "__main__":
    if "--write" in sys.argv:
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(play_golden(), indent=1, sort_keys=True) + "\n")
        print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size} bytes)")
