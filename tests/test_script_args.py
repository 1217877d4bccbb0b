"""The reference scripts' command lines build the runs they always built (tests/data/script_configs.json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from script_configs import COMMANDS, FIXTURE, capture

EXPECTED = json.loads(FIXTURE.read_text())


@pytest.mark.parametrize(("script", "command"), [(s, c) for s, commands in COMMANDS.items() for c in commands])
def test_a_command_line_builds_the_same_configs_as_before(script: str, command: str, tmp_path: Path) -> None:
    got, expected = capture(script, command, tmp_path), EXPECTED[script][command]
    assert got["exit"] == expected["exit"]
    assert len(got["configs"]) == len(expected["configs"])
    for new, old in zip(got["configs"], expected["configs"], strict=True):
        changed = {k: (old.get(k), new.get(k)) for k in old.keys() | new.keys() if old.get(k) != new.get(k)}
        assert not changed, f"(before, now) of the keys that differ: {changed}"
