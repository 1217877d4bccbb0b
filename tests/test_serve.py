"""Serving: one real vLLM server (default model + two LoRA adapters + an API key), agents acting through it.

The server tests are marked ``vllm`` and share one module-scoped server (about a minute to start on CPU); they are
skipped when no Python with vLLM is found (``scripts/install_vllm_cpu.sh`` makes one). The adapters are made here:
random rank-8 LoRAs on q/v whose B matrices are non-zero (``init_lora_weights=False``), so each answers differently
from the base model. alice and bob are strong enough to ramble; carol (alpha 8) stays close to the base model and
plays the games, whose length is set by how much the agent writes. The tests above the server fixture need no vLLM.
"""

from __future__ import annotations

import json
import re
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmmarl.backends.base import BackendError, GenerationRequest
from llmmarl.backends.openai import OpenAIBackend
from llmmarl.serve import ManifestError, ServeConfig, ServeError, VLLMServer, find_vllm_python, read_manifest
from llmmarl.serve.server import build_command

KEY = "test-key-0"
PROMPT = [{"role": "user", "content": "What is the capital of France?"}]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _make_adapter(folder: Path, seed: int, alpha: int = 32) -> Path:
    """A random rank-8 LoRA on the attention q/v projections of the default model, saved as a PEFT folder.

    q/v only: vLLM's CPU LoRA kernels gather each token's adapter weights, so every extra module costs time.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from llmmarl.models import resolve_model

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(resolve_model("default"))
    config = LoraConfig(r=8, lora_alpha=alpha, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(str(folder))
    return folder


# ---- no vLLM needed ---------------------------------------------------------------------------------------------
def test_unreachable_server_is_one_clear_error() -> None:
    url = f"http://127.0.0.1:{_free_port()}/v1"
    with pytest.raises(BackendError, match=r"cannot reach .*is the server running\? start one with `llmmarl serve"):
        OpenAIBackend(url, max_retries=0)
    # ...and the command line prints that sentence, not a traceback.
    from llmmarl.cli import app

    result = CliRunner().invoke(app, ["play", "tictactoe_v3", "--endpoint", url, "--games", "1"])
    assert result.exit_code == 1
    assert "cannot reach" in result.output and "Traceback" not in result.output


def test_manifest_is_read_tolerantly(tmp_path: Path) -> None:
    for name in ("a", "b/step-1", "b/step-2"):
        (tmp_path / name).mkdir(parents=True)
    manifest = tmp_path / "manifest.json"
    entries = [
        {"name": "a", "path": "a", "base_model": "default", "elo": 1012.5},
        {"name": "b", "path": "b/step-2", "version": 2},
        {"agent": "b", "adapter_path": str(tmp_path / "b/step-1"), "version": 1},  # older version listed later
    ]
    for data in ({"adapters": entries}, entries):
        manifest.write_text(json.dumps(data))
        assert read_manifest(manifest) == {"a": tmp_path / "a", "b": tmp_path / "b/step-2"}
    manifest.write_text(json.dumps({"a": "a", "b": {"path": "b/step-1"}}))
    assert read_manifest(manifest) == {"a": tmp_path / "a", "b": tmp_path / "b/step-1"}
    manifest.write_text(json.dumps({"adapters": [{"name": "a"}]}))
    with pytest.raises(ManifestError, match="entry 0 needs a 'name' and a 'path'"):
        read_manifest(manifest)


def test_shipped_adapters_are_servable_and_say_how_they_were_made() -> None:
    root = Path(__file__).resolve().parent.parent / "adapters"
    folders = read_manifest(root / "manifest.json")
    assert {"ttt-grpo", "kuhn-grpo"} <= set(folders)
    config = ServeConfig(adapters=folders)  # each folder is a PEFT adapter folder
    entries = {e["name"]: e for e in json.loads((root / "manifest.json").read_text())["adapters"]}
    for name, folder in config.adapters.items():
        adapter_config = json.loads((folder / "adapter_config.json").read_text())
        assert adapter_config["base_model_name_or_path"] == entries[name]["base_model_id"]  # a hub id, not a path
        assert entries[name]["command"].startswith("python scripts/") and entries[name]["eval"], name


def test_command_line_fits_the_device(tmp_path: Path) -> None:
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 24}))
    config = ServeConfig(adapters={"alice": tmp_path}, port=8123, api_key="secret")
    cpu, env = build_command(config, "python", "cpu")
    # On CPU the KV cache and context are fixed sizes, not a share of whatever RAM is free at start-up.
    assert cpu[cpu.index("--kv-cache-memory-bytes") + 1] == str(2**30) and "--gpu-memory-utilization" not in cpu
    assert cpu[cpu.index("--max-model-len") + 1] == "4096" and cpu[cpu.index("--dtype") + 1] == "float32"
    assert cpu[cpu.index("--max-lora-rank") + 1] == "32"  # rank 24 rounds up to a rank vLLM accepts
    module = json.loads(cpu[cpu.index("--lora-modules") + 1])
    assert module == {"name": "alice", "path": str(tmp_path.resolve()), "base_model_name": "default"}
    assert "secret" not in " ".join(cpu) and env["VLLM_API_KEY"] == "secret"  # the key stays out of `ps`
    assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING" not in env  # only with allow_reload (tests/test_security_servers.py)
    cuda, _ = build_command(config, "python", "cuda")
    assert "--gpu-memory-utilization" not in cuda and "--kv-cache-memory-bytes" not in cuda
    assert cuda[cuda.index("--dtype") + 1] == "auto"
    sized, _ = build_command(config.model_copy(update={"kv_cache_gib": 0.5, "max_model_len": 1024}), "python", "cuda")
    assert sized[sized.index("--kv-cache-memory-bytes") + 1] == str(2**29)
    assert sized[sized.index("--max-model-len") + 1] == "1024"


def test_bad_serve_options_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a PEFT adapter folder"):
        ServeConfig(adapters={"alice": tmp_path})
    with pytest.raises(ServeError, match=r"install_vllm_cpu\.sh"):
        find_vllm_python(str(tmp_path / "no-python"))


# ---- one real server ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vllm_python() -> str:
    try:
        return find_vllm_python()
    except ServeError as e:
        pytest.skip(f"no Python with vLLM: {e}")


@pytest.mark.vllm
def test_short_memory_names_the_flag_to_change(vllm_python: str, tmp_path: Path) -> None:
    """A real server too small for its context dies at start-up; the error says which of our options to change."""
    # 8192 tokens of the 135M model need ~0.35 GiB of KV cache; 0.02 GiB cannot hold one sequence.
    config = ServeConfig(
        python=vllm_python, port=_free_port(), kv_cache_gib=0.02, max_model_len=8192, log_file=tmp_path / "log"
    )
    with pytest.raises(ServeError, match=r"--kv-cache-gib.*--max-model-len"):
        VLLMServer(config).start()


@pytest.fixture(scope="module")
def adapters(vllm_python: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    made = {name: _make_adapter(root / name, seed) for seed, name in enumerate(["alice", "bob", "alice-v2"], 1)}
    return {**made, "carol": _make_adapter(root / "carol", seed=4, alpha=8)}


@pytest.fixture(scope="module")
def server(vllm_python: str, adapters: dict[str, Path]):
    config = ServeConfig(
        python=vllm_python,
        adapters={name: adapters[name] for name in ("alice", "bob", "carol")},
        port=_free_port(),
        api_key=KEY,
        allow_reload=True,  # test_hot_reload_serves_the_new_version loads adapters at run time
        kv_cache_gib=0.5,  # a fixed size (~11k tokens of the 135M model), whatever RAM happens to be free
        max_model_len=2048,
        startup_timeout=300,
    )
    with VLLMServer(config) as running:
        print(f"vLLM started in {running.startup_seconds:.0f}s")
        yield running


@pytest.fixture(scope="module")
def backend(server: VLLMServer):
    with OpenAIBackend(server.url, api_key=KEY, seed=0) as b:
        yield b


def _greedy(backend: OpenAIBackend, adapter: str | None) -> str:
    req = GenerationRequest(messages=PROMPT, adapter=adapter, temperature=0.0, max_new_tokens=12)
    return backend.generate([req])[0].text


@pytest.mark.vllm
def test_official_client_talks_to_an_adapter(server: VLLMServer) -> None:
    import openai

    client = openai.OpenAI(base_url=server.url, api_key=KEY)
    assert {m.id for m in client.models.list().data} == {"default", "alice", "bob", "carol"}
    resp = client.chat.completions.create(model="alice", messages=PROMPT, max_tokens=8, temperature=0)  # type: ignore[arg-type]
    assert resp.model == "alice" and resp.choices[0].message.content


@pytest.mark.vllm
def test_base_and_adapters_answer_differently(backend: OpenAIBackend) -> None:
    assert backend.is_vllm and backend.model == "default" and backend.adapters == ["alice", "bob", "carol"]
    answers = {name: _greedy(backend, name) for name in (None, "alice", "bob")}
    assert len(set(answers.values())) == 3, answers


@pytest.mark.vllm
def test_token_ids_and_logprobs_match_the_local_tokenizer(backend: OpenAIBackend) -> None:
    from transformers import AutoTokenizer

    from llmmarl.models import resolve_model

    reqs = [GenerationRequest(messages=PROMPT, adapter=a, temperature=0.7, max_new_tokens=10) for a in ("alice", None)]
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("default"))
    for gen in backend.generate(reqs):
        # The same ids TransformersBackend would train on: the server applied the same chat template.
        templated = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True)
        assert gen.prompt_ids == list(templated["input_ids"])  # type: ignore[call-overload,index]
        assert len(gen.completion_ids) == len(gen.logprobs) > 0 and all(lp <= 0.0 for lp in gen.logprobs)
        assert tokenizer.decode(gen.completion_ids, skip_special_tokens=True) == gen.text


@pytest.mark.vllm
def test_requests_without_the_key_are_refused(server: VLLMServer) -> None:
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(server.url + "/models", timeout=10)
    assert refused.value.code == 401
    with pytest.raises(BackendError, match=r"refused the API key \(401\)"):
        OpenAIBackend(server.url, api_key="wrong-key")


@pytest.mark.vllm
def test_unknown_model_names_are_one_clear_error(server: VLLMServer, backend: OpenAIBackend) -> None:
    with pytest.raises(BackendError, match=r"'nope' is not served .* it serves \['alice', 'bob', 'carol', 'default'\]"):
        OpenAIBackend(server.url, api_key=KEY, model="nope")
    with pytest.raises(BackendError, match=r"unknown adapter\(s\) \['dave'\]"):
        backend.generate([GenerationRequest(messages=PROMPT, adapter="dave")])


@pytest.mark.vllm
def test_games_through_the_runner(backend: OpenAIBackend) -> None:
    from llmmarl.agents.specs import LLMAgentSpec, ScriptedAgentSpec
    from llmmarl.runner import Match, Runner

    # turn_grammar sizes plan and predictions to max_new_tokens, so even a small budget reaches the ACTION line.
    carol = LLMAgentSpec(name="carol", adapter="carol", constrained=True, temperature=0.0, max_new_tokens=64)
    rand = ScriptedAgentSpec(name="random", policy="random")
    matches = [
        Match(game_id=i, env="tictactoe_v3", seats=dict(zip(("player_1", "player_2"), seats, strict=True)), seed=i)
        for i, seats in enumerate([(carol, rand), (rand, carol)] * 2)
    ]
    episodes = Runner(backend, concurrency=4, progress=False).play(matches)
    assert len(episodes) == 4 and all(ep.error is None and ep.outcomes for ep in episodes)
    llm_turns = [t for ep in episodes for t in ep.turns if t.player == "carol"]
    assert len(llm_turns) >= 8
    for t in llm_turns:
        assert t.fallback is None and t.turn is not None and t.action in t.legal_actions, t.attempts[-1].response
        assert len(t.attempts) == 1  # legal at the first try: the grammar reached the server
        assert t.attempts[0].completion_ids and len(t.attempts[0].logprobs) == len(t.attempts[0].completion_ids)


@pytest.mark.vllm
def test_an_adapter_served_plays_textarena_games_from_the_command_line(server: VLLMServer, tmp_path: Path) -> None:
    """`llmmarl play textarena:<game> --endpoint ... --agents llm@carol,random`: the served adapter's free-text
    moves reach TextArena, and the records carry the game's judgement (its payoffs, and each refused move with the
    game's own reason)."""
    pytest.importorskip("textarena")
    from llmmarl.cli import app
    from llmmarl.records import read_episodes

    runs = {}
    for game in ("KuhnPoker-v0", "LiarsDice-v0-small"):
        out = tmp_path / f"{game}.jsonl"
        args = ["play", f"textarena:{game}", "--endpoint", server.url, "--api-key", KEY, "--agents", "llm@carol,random"]
        args += ["--games", "2", "--constrained", "--max-new-tokens", "48", "--out", str(out), "--show", "0"]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        runs[game] = list(read_episodes(out))
    for game, episodes in runs.items():
        assert len(episodes) == 2 and all(ep.error is None and ep.outcomes for ep in episodes), game
        for ep in episodes:
            assert sum(ep.returns.values()) == 0 and ep.returns, ep.returns  # TextArena's payoffs: zero-sum
            served = [t for t in ep.turns if t.player == "carol"]
            assert served, game
            for t in served:  # every answer came from the server: tokens and log-probs of the adapter's sampling
                assert t.attempts and t.attempts[-1].completion_ids and t.attempts[-1].logprobs
                assert t.action.strip(), t.attempts[-1].response
    kuhn = [t for ep in runs["KuhnPoker-v0"] for t in ep.turns if t.player == "carol"]
    assert all(t.action in t.legal_actions and t.rejected is None for t in kuhn)  # the grammar picked listed moves
    dice = [t for ep in runs["LiarsDice-v0-small"] for t in ep.turns]
    refused = [t for t in dice if t.rejected is not None]
    for t in refused:  # TextArena's words, and counted as invalid (a final refusal as a forfeit)
        assert re.search(r"bid|call", t.rejected, re.I), t.rejected
        if "Submitted action:" in t.rejected:  # the game quotes the move it refused: our text reached it
            assert t.action.strip() in t.rejected, (t.action, t.rejected)
        assert t.invalid or not t.attempts
    for ep in runs["LiarsDice-v0-small"]:
        forfeits = [t for t in ep.turns if t.fallback == "forfeit"]
        if forfeits:  # a second refusal cost the seat the game: it lost
            assert ep.outcomes[forfeits[-1].seat] == "loss"


@pytest.mark.vllm
def test_a_tournament_of_every_adapter_on_one_engine(server: VLLMServer, tmp_path: Path, monkeypatch) -> None:
    """The base model and the three adapters of one server play a round robin: one backend, games streamed."""
    from llmmarl.tournament import TournamentConfig, routing, run_tournament

    monkeypatch.setenv("LLMMARL_TEST_KEY", KEY)
    served = {"base": server.config.base_name, "alice": "alice", "bob": "bob", "carol": "carol"}
    participants = [
        {"kind": "openai", "name": name, "base_url": server.url, "model": model, "api_key_env": "LLMMARL_TEST_KEY",
         "constrained": True, "temperature": 0.7, "max_new_tokens": 48}
        for name, model in served.items()
    ]  # fmt: skip
    cfg = TournamentConfig.model_validate(
        {"name": "one-engine", "games": ["tictactoe_v3"], "participants": participants, "seed": 0,
         "schedule": {"format": "round_robin", "games_per_pairing": 1}, "db": str(tmp_path / "t.sqlite")}
    )  # fmt: skip
    router = routing.build_routing_backend(cfg, set(served))
    assert router is not None and router.concurrent_calls  # the runner streams games through it
    assert len({id(b) for b, _ in router.routes.values()}) == 1  # every participant on one engine
    summary = run_tournament(cfg, progress=False)
    assert summary.finished == summary.scheduled == 12 and summary.errors == 0  # 6 pairs, both seat orders


@pytest.mark.vllm
def test_play_starts_a_vllm_backend_of_its_own_and_stops_it(
    vllm_python: str, adapters, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--backend vllm``: the registry's vllm kind starts a server for the games, loads the agent's adapter folder
    and stops the server when the games are over."""
    from llmmarl.backends.vllm_engine import VLLMEngine
    from llmmarl.cli import app

    stopped: list[bool] = []
    close = VLLMEngine.close

    def spy(engine: VLLMEngine) -> None:
        close(engine)
        stopped.append(engine.server is None and not engine.folder.exists())

    monkeypatch.setattr(VLLMEngine, "close", spy)
    out = tmp_path / "games.jsonl"
    sets = [f"python={vllm_python}", "kv_cache_gib=0.5", "max_model_len=2048", "startup_timeout=300"]
    args = ["play", "tictactoe_v3", "--agents", f"llm@{adapters['alice']},random", "--games", "2", "--show", "0"]
    args += ["--constrained", "--backend", "vllm", "--out", str(out), *(a for s in sets for a in ("--backend-set", s))]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    games = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(games) == 2 and not any(g.get("error") for g in games)
    answered = [a for g in games for t in g["turns"] for a in t.get("attempts", [])]
    assert answered and all(a["completion_ids"] and a["logprobs"] for a in answered)  # token ids from the server
    assert stopped == [True]  # one server, stopped and its temporary folder removed


@pytest.mark.vllm
def test_hot_reload_serves_the_new_version(server: VLLMServer, backend: OpenAIBackend, adapters) -> None:
    from llmmarl.backends.reload import hot_reload

    before = _greedy(backend, "alice")
    names = hot_reload(server.url, "alice", adapters["alice-v2"], api_key=KEY)
    assert names == ["alice", "bob", "carol"]
    backend.load_adapter("alice-v2", adapters["alice-v2"])  # the same weights under a name of their own
    after = _greedy(backend, "alice")
    assert after != before and after == _greedy(backend, "alice-v2")
    assert backend.adapter_path("alice") == str(adapters["alice-v2"].resolve())
    with pytest.raises(BackendError, match="new folder"):
        hot_reload(server.url, "alice", adapters["alice-v2"], api_key=KEY)


@pytest.mark.vllm
def test_a_server_loads_adapters_at_run_time_only_when_asked(
    vllm_python: str, adapters: dict[str, Path], tmp_path: Path
) -> None:
    """Without allow_reload a real server refuses to load an adapter from a path a client names, key or not."""
    config = ServeConfig(
        model="tiny",
        python=vllm_python,
        port=_free_port(),
        api_key=KEY,
        kv_cache_gib=0.1,
        max_model_len=512,
        startup_timeout=300,
        log_file=tmp_path / "log",
    )
    with VLLMServer(config) as server, OpenAIBackend(server.url, api_key=KEY) as client:
        with pytest.raises(BackendError, match=r"does not load adapters at run time.*--allow-reload"):
            client.load_adapter("mallory", adapters["alice"])
        assert "mallory" not in client.refresh()
