"""`pip install .` (not editable) gives a package that plays on its own: the prompts ship inside the wheel.

The fresh venv borrows the dependencies of the running environment through a path file (no download but the
build backend), and runs from a folder outside the checkout, so nothing is imported from the source tree.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# An LLM agent answered by a stub backend: the prompts are rendered from the installed copy, the answers parsed.
LLM_GAME = textwrap.dedent(
    """
    import re
    import llmmarl
    from llmmarl.agents.prompts import prompts_dir
    from llmmarl.agents.specs import LLMAgentSpec, ScriptedAgentSpec
    from llmmarl.backends.base import Generation, word_truncate
    from llmmarl.runner import Match, Runner

    class FirstLegal:
        adapters = []
        def generate(self, requests):
            out = []
            for r in requests:
                legal = re.search(r"(?:Legal actions:|exactly one of:) (.*)", r.messages[-1]["content"]).group(1)
                answer = "ACTION: " + legal.split(", ")[0]
                out.append(Generation(text=answer, prompt_ids=[], completion_ids=[1], logprobs=[0.0],
                                      finish_reason="stop"))
            return out
        def truncate(self, text, n):
            return word_truncate(text, n)

    seats = {"player_1": LLMAgentSpec(name="llm"), "player_2": ScriptedAgentSpec(name="random", policy="random")}
    (ep,) = Runner(FirstLegal(), progress=False).play([Match(game_id=0, env="tictactoe_v3", seats=seats, seed=0)])
    assert ep.error is None and all(not t.invalid for t in ep.turns), ep
    print("package", llmmarl.__file__)
    print("prompts", prompts_dir())
    """
)


def test_a_non_editable_install_plays_games(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LLMMARL_PROMPTS")}  # no source tree
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [python, "-c", "import site; print(site.getsitepackages()[0])"], capture_output=True, text=True
        ).stdout.strip()
    )
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # a plain path: its .pth files stay off
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(REPO)],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stderr[-2000:]

    run = subprocess.run([python, "-c", LLM_GAME], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    assert f"package {site}/llmmarl/" in run.stdout and f"prompts {site}/llmmarl/prompts" in run.stdout

    play = subprocess.run(
        [venv / "bin" / "llmmarl", "play", "tictactoe_v3", "--agents", "random,minimax", "--games", "2"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert play.returncode == 0, play.stderr[-2000:]
    assert "tictactoe_v3: 2 games" in play.stdout and "minimax" in play.stdout
