"""Learning you can check: the probe suite's runs on the tiny model, read exactly, and the runs that must fail.

The tiny model is a random two-layer network: in the budget CI can afford (4 updates of 16 games) it does not reach
a probe's threshold, but its exact reading must move toward the known answer, and away from it when the advantage's
sign is flipped, and not at all when the adapter is frozen. What each algorithm reaches with which model and budget
is in docs/learning.md (``scripts/bench_learning.py``).
"""

from __future__ import annotations

import pytest

from llmmarl.eval.probes import PROBES, applicable, probe_config, run_probe, table

UPDATES = 4
# A two-word bandit, at a learning rate the random tiny model moves at (the default model's runs use 1e-4).
SMALL = ["env_kwargs.arms=2", "learning_rate=0.003"]


def _gain(algorithm: str, extra: tuple[str, ...] = ()) -> tuple[float, float]:
    r = run_probe(
        PROBES["bandit"], algorithm, "tiny", seed=0, updates=UPDATES, read_every=UPDATES, overrides=SMALL + list(extra)
    )
    assert r.updates == UPDATES and r.games == UPDATES * 16 and [s for s, _ in r.curve] == [0, UPDATES]
    return r.curve[0][1], r.curve[-1][1]


def test_rloo_moves_the_bandit_toward_the_paying_word() -> None:
    before, after = _gain("rloo")
    assert after - before > 0.08, (before, after)


def test_a_flipped_advantage_moves_it_away(monkeypatch: pytest.MonkeyPatch) -> None:
    import llmmarl.train.rloo as rloo

    honest = rloo.leave_one_out

    def flipped(samples):  # the bug this test exists to catch: the update climbs the wrong way
        honest(samples)
        for s in samples:
            s.advantage = -s.advantage

    monkeypatch.setattr(rloo, "leave_one_out", flipped)
    before, after = _gain("rloo")
    assert after < before - 0.05, (before, after)


def test_a_frozen_adapter_does_not_move() -> None:
    before, after = _gain("rloo", ("learning_rate=1e-12",))
    assert abs(after - before) < 1e-3, (before, after)


def test_the_suite_covers_every_algorithm_where_it_applies() -> None:
    pairs = applicable(list(PROBES), ["grpo", "rloo", "ppo", "ppo_central"])
    assert ("bandit", "ppo_central") not in pairs  # one seat: nothing for a centralised critic to see
    assert ("coordination", "ppo_central") in pairs and ("speaker_listener", "grpo") in pairs
    assert len(pairs) == 6 * 3 + 3
    cfg = probe_config(PROBES["speaker_listener"], "ppo_central", "tiny", 3, 5, "out", ["learning_rate=0.0002"])
    assert cfg["env_kwargs"]["seed"] == 3 and cfg["ppo"]["critic"] == "centralised" and cfg["learning_rate"] == 2e-4
    assert cfg["lines"] == ["MESSAGE"] and cfg["constrained"]
    with pytest.raises(ValueError, match="unknown probe"):
        applicable(["nope"], ["grpo"])


# speaker_listener's 40-token turns (a MESSAGE line, then ACTION) make the random tiny model's answer tree large:
# 771 s for this one run on the loaded 2-core machine, so it is marked slow.
@pytest.mark.parametrize(
    "probe",
    ["contextual", "delayed", "coordination", pytest.param("speaker_listener", marks=pytest.mark.slow), "pennies"],
)
def test_every_probe_reads_and_trains_one_update(probe: str) -> None:
    algorithm = "ppo_central" if PROBES[probe].multi_seat and probe != "pennies" else "grpo"
    r = run_probe(PROBES[probe], algorithm, "tiny", updates=1, read_every=1, overrides=["games_per_update=8"])
    assert r.updates == 1 and len(r.curve) == 2
    assert all(0.0 <= v <= 1.0 for _, v in r.curve)
    if PROBES[probe].higher_is_better:
        assert not r.reached  # a random network does not already know the answer
    assert f"| {probe} | {algorithm} | tiny |" in table([r])
