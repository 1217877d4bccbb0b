"""A game package's own prompt templates: found after the prompt root's GAME folder, before the defaults."""

from __future__ import annotations

import shutil
from pathlib import Path

from llmmarl.agents.prompts import PromptSet, prompts_dir
from llmmarl.envs import EnvSpec, register_game
from llmmarl.envs.games.tictactoe import make_tictactoe


def _register(tmp_path: Path, name: str) -> Path:
    own = tmp_path / "package_prompts"
    (own / "player_2").mkdir(parents=True)
    (own / "user.j2").write_text("Own user prompt of {{ game }} for {{ agent }}.")
    (own / "player_2" / "user.j2").write_text("Own prompt of the second seat.")
    register_game(EnvSpec(name, make_tictactoe, "tic-tac-toe with its own prompts", "competitive", prompts=own))
    return own


def test_a_game_package_ships_its_prompts(tmp_path: Path) -> None:
    _register(tmp_path, "ttt_own_prompts")
    first, second = PromptSet("ttt_own_prompts", "player_1"), PromptSet("ttt_own_prompts", "player_2")
    assert first.render("user", game="ttt_own_prompts", agent="player_1") == (
        "Own user prompt of ttt_own_prompts for player_1."
    )
    assert second.render("user") == "Own prompt of the second seat."
    # What the package does not have comes from the defaults.
    default = PromptSet("tictactoe_v3", "player_1")
    assert first._names["system"] == default._names["system"] == "default/system.j2"


def test_the_prompt_root_overrides_a_packages_prompts(tmp_path: Path) -> None:
    _register(tmp_path, "ttt_overridden")
    root = tmp_path / "root"
    shutil.copytree(prompts_dir() / "default", root / "default")
    (root / "ttt_overridden").mkdir()
    (root / "ttt_overridden" / "user.j2").write_text("The root's own.")
    prompts = PromptSet("ttt_overridden", "player_2", root=root)
    assert prompts.render("user") == "The root's own."


def test_games_without_own_prompts_read_the_root_as_before() -> None:
    prompts = PromptSet("tictactoe_v3", "player_1")
    assert prompts.package is None
    assert set(prompts._names.values()) == {"default/system.j2", "default/user.j2", "default/reask.j2"}
