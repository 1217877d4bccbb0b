"""Servers, keys and stores: a key goes only where it was asked for, and every network read is bounded.

Everything runs against :mod:`tests.hostile_server`, a real HTTP server on 127.0.0.1 that records each request's
headers, through the real :class:`~llmmarl.backends.openai.OpenAIBackend` and the real commands.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from hostile_server import HostileServer
from pydantic import ValidationError
from typer.testing import CliRunner

from llmmarl.backends.base import BackendError, GenerationRequest
from llmmarl.backends.openai import OpenAIBackend
from llmmarl.cli import app
from llmmarl.serve import ServeConfig, ServeError, VLLMServer, find_vllm_python
from llmmarl.serve.server import build_command, is_loopback
from llmmarl.tournament import TournamentConfig, run_tournament

REQUEST = GenerationRequest(messages=[{"role": "user", "content": "Legal actions: 3, 4, 5"}], max_new_tokens=16)
# Credentials a user may have set for other services; none of them may reach an endpoint that did not ask for it.
AMBIENT = {
    "OPENAI_API_KEY": "sk-secret-openai",
    "LLMMARL_API_KEY": "sk-secret-llmmarl",
    "OPENAI_ADMIN_KEY": "sk-secret-admin",
    "OPENAI_ORG_ID": "org-secret",
    "OPENAI_PROJECT_ID": "proj-secret",
    "OPENAI_CUSTOM_HEADERS": "X-Leak: sk-secret-custom",
}


@pytest.fixture
def ambient(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in AMBIENT.items():
        monkeypatch.setenv(name, value)


def leaked(server: HostileServer) -> list[str]:
    """Every header value the server received that carries one of the ambient secrets."""
    return [f"{k}: {v}" for h in server.headers for k, v in h.items() if "secret" in v]


def bearers(server: HostileServer) -> set[str | None]:
    return {next((v for k, v in h.items() if k.lower() == "authorization"), None) for h in server.headers}


# ---- a key goes only where it was asked for --------------------------------------------------------------------------
@pytest.mark.usefixtures("ambient")
def test_no_key_is_sent_unless_one_is_given() -> None:
    with HostileServer(["ok"]) as srv, OpenAIBackend(srv.url, timeout=5, max_retries=0) as b:
        (gen,) = b.generate([REQUEST])
    assert gen.error is None and len(srv.headers) >= 2  # the models list, /version and the chat
    assert leaked(srv) == []
    assert bearers(srv) <= {None, "Bearer EMPTY"}  # the client's placeholder for "no key", never a real one


@pytest.mark.usefixtures("ambient")
def test_the_given_key_and_only_it_goes_to_its_endpoint() -> None:
    with HostileServer(["ok"]) as srv, OpenAIBackend(srv.url, api_key="k-given", timeout=5, max_retries=0) as b:
        b.generate([REQUEST])
    assert bearers(srv) == {"Bearer k-given"} and leaked(srv) == []


def _openai_tournament(tmp_path: Path, url: str, **participant: object) -> TournamentConfig:
    entry = {"kind": "openai", "name": "remote", "base_url": url, "model": "hostile-model", **participant}
    return TournamentConfig.model_validate(
        {
            "name": "keys",
            "games": ["tictactoe_v3"],
            "participants": ["random", entry],
            "schedule": {"format": "round_robin", "games_per_pairing": 1},
            "db": str(tmp_path / "t.sqlite"),
            "bootstrap": 0,
        }
    )


@pytest.mark.usefixtures("ambient")
def test_a_tournament_config_sends_a_key_only_from_the_variable_it_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A shared config pointing at someone's server, naming no variable: the user's OPENAI_API_KEY stays home.
    with HostileServer(["ok"]) as srv:
        summary = run_tournament(_openai_tournament(tmp_path / "a", srv.url), progress=False)
    assert summary.finished == 2 and leaked(srv) == [] and bearers(srv) <= {None, "Bearer EMPTY"}
    # Naming a variable sends that variable's key, to that endpoint only.
    monkeypatch.setenv("MY_SERVER_KEY", "k-named")
    with HostileServer(["ok"]) as srv:
        run_tournament(_openai_tournament(tmp_path / "b", srv.url, api_key_env="MY_SERVER_KEY"), progress=False)
    assert bearers(srv) == {"Bearer k-named"} and leaked(srv) == []


def test_only_openai_itself_gets_openai_api_key_by_default(tmp_path: Path) -> None:
    def key_env(url: str) -> str | None:
        cfg = _openai_tournament(tmp_path, url)
        return next(p for p in cfg.participants if p.name == "remote").api_key_env  # type: ignore[union-attr]

    assert key_env("https://api.openai.com/v1") == "OPENAI_API_KEY"
    assert key_env("http://api.openai.com/v1") is None  # not in clear text
    assert key_env("https://api.openai.com.example.net/v1") is None
    assert key_env("http://127.0.0.1:8000/v1") is None


def test_an_endpoint_without_a_scheme_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="must start with http:// or https://"):
        OpenAIBackend("127.0.0.1:9/v1")
    with pytest.raises(ValidationError, match="must start with http:// or https://"):
        _openai_tournament(tmp_path, "example.com:8000/v1")
    result = CliRunner().invoke(app, ["play", "tictactoe_v3", "--endpoint", "127.0.0.1:9", "--games", "1"])
    assert result.exit_code != 0 and "must start with http://" in result.output and "Traceback" not in result.output


# ---- every network read is bounded -----------------------------------------------------------------------------------
def test_a_trickled_models_list_is_cut_at_the_deadline() -> None:
    with HostileServer(["ok"], get="trickle") as srv:
        start = time.perf_counter()
        with pytest.raises(BackendError, match=r"deadline|trickling"):
            OpenAIBackend(srv.url, timeout=2, max_retries=0)
        took = time.perf_counter() - start
    assert took < 2 + 1.5, f"took {took:.1f} s for a 2 s timeout"


def test_a_huge_models_list_is_refused() -> None:
    with (
        HostileServer(["ok"], get="huge_body", huge_bytes=4 * 2**20) as srv,
        pytest.raises(BackendError, match="larger than the 262,144-byte cap"),
    ):
        OpenAIBackend(srv.url, timeout=10, max_retries=0, max_response_bytes=2**18)


def test_the_plain_routes_are_bounded_too(tmp_path: Path) -> None:
    """/version and adapter loading: a trickled answer ends at the backend's deadline, a huge one at its cap."""
    with HostileServer(["trickle"]) as srv, OpenAIBackend(srv.url, timeout=2, max_retries=0) as b:
        start = time.perf_counter()
        with pytest.raises(BackendError, match=r"deadline|trickling"):
            b.load_adapter("alice", tmp_path)
        took = time.perf_counter() - start
    assert took < 2 + 1.5, f"took {took:.1f} s for a 2 s timeout"
    with (
        HostileServer(["huge_body"], huge_bytes=4 * 2**20) as srv,
        OpenAIBackend(srv.url, timeout=10, max_retries=0, max_response_bytes=2**18) as b,
        pytest.raises(BackendError, match="larger than the 262,144-byte cap"),
    ):
        b.load_adapter("alice", tmp_path)


# ---- servers are safe by default ----------------------------------------------------------------------------------
@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "gpu-box.example.net"])
def test_serve_refuses_to_listen_beyond_loopback_without_a_key(host: str) -> None:
    with pytest.raises(ValidationError, match="serves other machines, so the server needs a key"):
        ServeConfig(host=host)
    assert ServeConfig(host=host, api_key="k").api_key == "k"


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_serve_needs_no_key_on_loopback(host: str) -> None:
    assert ServeConfig(host=host).api_key is None


def test_the_serve_command_refuses_an_open_server_beyond_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLMMARL_API_KEY", raising=False)
    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0", "--python", sys.executable])
    assert result.exit_code == 2, result.output
    assert "needs a key" in result.output and "Traceback" not in result.output


def test_runtime_adapter_loading_only_where_it_is_asked_for(tmp_path: Path) -> None:
    _, env = build_command(ServeConfig(), "python", "cpu")
    assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING" not in env
    _, env = build_command(ServeConfig(allow_reload=True, api_key="k"), "python", "cpu")
    assert env == {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "1", "VLLM_API_KEY": "k"}


def test_the_training_engine_has_a_random_key_of_its_own(tmp_path: Path) -> None:
    from llmmarl.backends.vllm_engine import VLLMEngine

    one, two = (VLLMEngine("tiny", tmp_path / n, tokenizer=None, max_loras=1, max_cpu_loras=1) for n in "ab")
    assert one.config.allow_reload and is_loopback(one.config.host)  # it publishes adapters: runtime loading
    assert one.config.api_key and len(one.config.api_key) >= 32 and one.config.api_key != two.config.api_key


def test_the_port_probe_sends_nothing_to_whatever_listens(tmp_path: Path) -> None:
    with HostileServer(["ok"]) as srv:
        port = int(srv.url.split(":")[2].split("/")[0])
        config = ServeConfig(port=port, api_key="k-probe", python=sys.executable, log_file=tmp_path / "log")
        with pytest.raises(ServeError, match="already listens"):
            VLLMServer(config).start()
    assert srv.headers == []  # not one HTTP request: the key never left


def test_vllm_python_is_never_taken_from_the_current_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / ".venv-vllm" / "bin" / "python"
    fake.parent.mkdir(parents=True)
    fake.write_text("#!/bin/sh\ntouch ran\n")
    fake.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LLMMARL_VLLM_PYTHON", raising=False)
    try:
        found = find_vllm_python()
    except ServeError as e:
        assert "no Python with vLLM found" in str(e)
    else:
        assert Path(found).resolve() != fake.resolve()  # this checkout's own .venv-vllm, or this interpreter
