"""Turn-level PPO: GAE by hand, the critic's input (decentralised vs centralised), config checks, and one update,
a checkpoint and a resume on the tiny model.

The end-to-end tests use grammar-constrained decoding, as in ``test_train.py``: the tiny random model's free answers
never parse, and under the grammar every answer is a legal move, so the games and the samples are real.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import CannedBackend, lowest_legal
from pydantic import ValidationError

from llmmarl.agents.specs import LLMAgentSpec
from llmmarl.records import EpisodeRecord
from llmmarl.runner import Match, Runner
from llmmarl.train.advantages import gae, turn_rewards
from llmmarl.train.config import TrainConfig
from llmmarl.train.critic import critic_input
from llmmarl.train.samples import TurnSample

NO_NEW_TERMS = {"forecast": 0.0, "plan": 0.0}  # turn parts these tests do not use


@pytest.fixture(autouse=True)
def _restore_torch_threads() -> Iterator[None]:  # the end-to-end tests run with threads=1, which is process-wide
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


# ---- GAE ---------------------------------------------------------------------------------------------------------
def test_gae_matches_a_hand_computed_example() -> None:
    rewards, values = [0.1, -0.2, 1.0], [0.5, 0.3, 0.6]
    # gamma 0.9, lambda 0.8 (gamma * lambda = 0.72), the last turn ends the game:
    #   delta_2 = 1.0 - 0.6                = 0.4      A_2 = 0.4
    #   delta_1 = -0.2 + 0.9 * 0.6 - 0.3   = 0.04     A_1 = 0.04 + 0.72 * 0.4     = 0.328
    #   delta_0 = 0.1 + 0.9 * 0.3 - 0.5    = -0.13    A_0 = -0.13 + 0.72 * 0.328  = 0.10616
    advantages, returns = gae(rewards, values, [False, False, True], gamma=0.9, lam=0.8)
    assert advantages == pytest.approx([0.10616, 0.328, 0.4])
    assert returns == pytest.approx([0.60616, 0.628, 1.0])  # A + V
    # A terminal turn in the middle (an unusable answer) neither bootstraps nor passes later advantages back:
    #   delta_1 = -0.2 - 0.3 = -0.5 = A_1;   A_0 = -0.13 + 0.72 * -0.5 = -0.49
    advantages, _ = gae(rewards, values, [False, True, True], gamma=0.9, lam=0.8)
    assert advantages == pytest.approx([-0.49, -0.5, 0.4])
    # lambda 1, gamma 1: Monte Carlo, the return to the end minus the value.
    advantages, _ = gae(rewards, values, [False, False, False], gamma=1.0, lam=1.0)
    assert advantages == pytest.approx([0.9 - 0.5, 0.8 - 0.3, 1.0 - 0.6])


def _sample(step: int, usable: bool, terms: dict[str, float]) -> TurnSample:
    return TurnSample(
        learner="a",
        game_id=0,
        group=0,
        seat="player_0",
        step=step,
        attempt=0,
        messages=[],
        prompt_ids=[1],
        completion_ids=[2],
        logprobs=[0.0],
        usable=usable,
        episode_return=1.0,
        terms=terms,
    )


def test_turn_rewards_pay_the_game_at_the_end_and_per_turn_terms_on_the_way() -> None:
    weights = {"game": 2.0, "format": 1.0, "prediction": 0.5, "message": 0.25, "forecast": 0.0, "plan": 0.0}
    trajectory = [
        _sample(0, True, {"game": 1.0, "format": 0.0, "prediction": 1.0, "message": -1.0} | NO_NEW_TERMS),
        # fell back:
        _sample(2, False, {"game": -1.0, "format": -0.75, "prediction": 0.0, "message": 0.0} | NO_NEW_TERMS),
        _sample(4, True, {"game": 1.0, "format": 0.0, "prediction": 0.0, "message": 0.0} | NO_NEW_TERMS),
    ]
    rewards, dones = turn_rewards(trajectory, weights)
    # turn 0: 0.5 * 1 + 0.25 * -1; turn 2: unusable, so the forfeit reward now: 2 * -1 - 0.75; turn 4: 2 * 1.
    assert rewards == pytest.approx([0.25, -2.75, 2.0])
    assert dones == [False, True, True]


# ---- the critic's input ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def signal_episode() -> EpisodeRecord:
    """One signal_v0 game with an LLM in both seats (answers canned): records with real prompts and observations."""
    llm = LLMAgentSpec(name="llm")
    match = Match(game_id=0, env="signal_v0", seats={"speaker_0": llm, "listener_0": llm}, seed=3)
    backend = CannedBackend(lambda r: f"ACTION: {lowest_legal(r)}")
    (episode,) = Runner(backend, progress=False).play([match])
    return episode


def test_centralised_critic_sees_the_speakers_goal_but_the_listener_does_not(signal_episode: EpisodeRecord) -> None:
    speaker, listener = signal_episode.turns
    assert (speaker.seat, listener.seat) == ("speaker_0", "listener_0")
    goal_line = next(line for line in speaker.observation.splitlines() if "secret goal is" in line)
    central = critic_input(listener, signal_episode, centralised=True)
    own = critic_input(listener, signal_episode, centralised=False)
    assert goal_line in central and "[speaker_0, teammate]" in central
    assert listener.observation in central and listener.observation in own
    assert goal_line not in own and "secret goal is" not in own and "speaker_0" not in own
    # The actor's prompt is the listener's own: the goal is nowhere in it.
    prompt = "\n".join(m["content"] for m in listener.attempts[0].messages)
    assert listener.observation.splitlines()[0] in prompt and goal_line not in prompt
    # The speaker acts first: the listener has no observation yet.
    assert "[listener_0, teammate]\n(has not acted yet)" in critic_input(speaker, signal_episode, centralised=True)


# ---- config -----------------------------------------------------------------------------------------------------
BASE: dict[str, Any] = {"env": "tictactoe_v3", "model": "tiny", "eval_games": 0, "learners": [{"name": "ann"}]}


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"algorithm": "a2c"}, "unknown algorithm 'a2c'; registered: all_action, grpo, ppo"),
        ({"algorithm": "ppo", "ppo": {"clip_range": 1.5}}, "ppo.clip_range"),
        ({"algorithm": "ppo", "ppo": {"gae_lambda": -0.1}}, "ppo.gae_lambda"),
        ({"algorithm": "ppo", "ppo": {"ppo_epochs": 0}}, "ppo.ppo_epochs"),
        ({"algorithm": "ppo", "ppo": {"critic": "central"}}, "'decentralised' or 'centralised'"),
        ({"algorithm": "ppo", "ppo": {"gama": 0.9}}, "ppo.gama"),
        ({"ppo": {"gamma": 0.9}}, "remove the ppo: block or set algorithm: ppo"),
        ({"algorithm": "ppo", "grpo": {"beta": 0.1}}, "remove the grpo: block or set algorithm: grpo"),
        ({"algorithm": "ppo", "beta": 0.1}, "beta: GRPO settings, and this config has algorithm: ppo"),
        ({"algorithm": "ppo", "learners": [{"name": "ann__critic"}]}, "critics' adapters"),
        ({"algorithm": "ppo", "report_to": ["wandb"]}, "tensorboard only"),
    ],
)
def test_config_errors_name_the_bad_setting(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        TrainConfig.model_validate({**BASE, **kw})


def test_ppo_config_defaults() -> None:
    cfg = TrainConfig.model_validate({**BASE, "algorithm": "ppo", "ppo": {"critic": "centralised"}})
    assert cfg.ppo.critic == "centralised" and cfg.ppo.clip_range == 0.2 and cfg.ppo.ppo_epochs >= 1
    assert TrainConfig.model_validate(BASE).algorithm == "grpo"


# ---- end to end on the tiny model ----------------------------------------------------------------------------
def _cfg(tmp_path: Path, **kw: Any) -> TrainConfig:
    base: dict[str, Any] = {
        "model": "tiny",
        "algorithm": "ppo",
        "games_per_update": 4,
        "group_size": 1,
        "steps": 2,
        "constrained": True,
        "max_new_tokens": 96,
        "learning_rate": 1e-2,
        "micro_batch_size": 4,
        "eval_games": 0,
        "output_dir": str(tmp_path / "run"),
        "threads": 1,
    }
    return TrainConfig.model_validate({**base, **kw})


def _weights(model: torch.nn.Module, adapter: str) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters() if f".{adapter}." in k and "lora_" in k}


def _changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> int:
    return sum(not torch.equal(before[k], after[k]) for k in before)


def test_one_update_trains_each_actor_and_critic_and_nothing_else(tmp_path: Path) -> None:
    from llmmarl.train.ppo import MultiAgentPPO

    cfg = _cfg(
        tmp_path,
        env="kuhn_poker",
        learners=[{"name": "alice", "lora": {"r": 4}}, {"name": "bob", "lora": {"r": 4}}],
        setting="fixed_opponents",
        opponents=["random"],
        ppo={"ppo_epochs": 1, "minibatches": 1, "critic_lr": 1e-2, "kl_coef": 0.1},
    )
    trainer = MultiAgentPPO(cfg, progress=False)
    adapters = ["alice", "alice__critic", "bob", "bob__critic"]
    assert set(trainer.model.peft_config) == set(adapters)
    frozen = "frozen"  # an adapter nobody trains, as a league snapshot or frozen opponent would be
    from llmmarl.train.adapters import lora_config

    trainer.model.add_adapter(frozen, lora_config(cfg.learners[0].lora))
    before = {n: _weights(trainer.model, n) for n in [*adapters, frozen]}
    heads = {n: h.linear.weight.detach().clone() for n, h in trainer.heads.items()}
    base = {k: v.detach().clone() for k, v in trainer.model.named_parameters() if "lora_" not in k}
    logs = trainer.update()
    after = {n: _weights(trainer.model, n) for n in [*adapters, frozen]}
    for name in adapters:
        assert _changed(before[name], after[name]) > 0, name
    assert _changed(before[frozen], after[frozen]) == 0
    assert all(torch.equal(v, dict(trainer.model.named_parameters())[k]) for k, v in base.items())
    assert all(not torch.equal(heads[n], trainer.heads[n].linear.weight) for n in heads)
    # Each optimizer holds its own weights only.
    owned = {n: {id(p) for g in o.optimizer.param_groups for p in g["params"]} for n, o in trainer.optimizers().items()}
    assert all(owned.values()) and sum(len(s) for s in owned.values()) == len(set().union(*owned.values()))
    for name in ("alice", "bob"):
        m = logs[name]
        assert m["samples/count"] > 0 and "game/return" in m and "game/invalid_rate" in m
        assert {"ppo/value_loss", "ppo/explained_variance", "ppo/clip_fraction", "entropy", "ppo/kl_ref"} <= set(m)
        # One epoch, one minibatch: the only step starts from the old policy, so every ratio is exactly 1.
        assert m["ppo/approx_kl"] == pytest.approx(0.0, abs=1e-6) and m["ppo/clip_fraction"] == 0.0
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1] and set(lines[0]["learners"]) == {"alice", "bob"}


def test_centralised_ppo_resumes_with_its_critic(tmp_path: Path) -> None:
    from llmmarl.train import train
    from llmmarl.train.checkpoint import list_checkpoints
    from llmmarl.train.ppo import MultiAgentPPO
    from llmmarl.train.samples import episodes_to_samples

    cfg = _cfg(
        tmp_path,
        env="signal_v0",
        setting="team",
        learners=[
            {"name": "speaker", "seats": ["speaker_0"], "lora": {"r": 4}},
            {"name": "listener", "seats": ["listener_0"], "lora": {"r": 4}},
        ],
        ppo={"critic": "centralised", "critic_lr": 1e-2},
        save_every=1,
        keep_checkpoints=1,
    )
    first = MultiAgentPPO(cfg, progress=False)
    # The old log-probabilities the loss starts from are the ones the rollout recorded (temperature 1).
    episodes, _ = first.rollout()
    samples = episodes_to_samples(episodes, first.learners, cfg.rewards.as_dict(), -1.0)
    turns = {(int(ep.game_id), t.step, t.seat): (t, ep) for ep in episodes for t in ep.turns}
    batch = first.prepare("listener", samples["listener"], turns)
    first.score_old("listener", batch)
    assert batch and all(x.old_logprobs == pytest.approx(x.sample.logprobs, abs=1e-4) for x in batch)
    # The centralised critic of the listener reads the speaker's secret goal.
    assert all("secret goal is" in first.engine.backend.tokenizer.decode(x.critic_ids) for x in batch)
    # The decentralised critic (same adapter, same head, same turns) reads the listener's view only, and so
    # values every turn differently: the two PPO variants' advantages come from different values.
    first.cfg = cfg.model_copy(update={"ppo": cfg.ppo.model_copy(update={"critic": "decentralised"})})
    own = first.prepare("listener", samples["listener"], turns)
    first.cfg = cfg
    assert all("secret goal is" not in first.engine.backend.tokenizer.decode(x.critic_ids) for x in own)
    pairs = [(a.value, b.value) for a, b in zip(batch, own, strict=True)]
    assert all(abs(a - b) > 1e-6 for a, b in pairs), pairs

    first.train(max_updates=1)  # "killed" after one update
    assert [p.name for p in list_checkpoints(tmp_path / "run" / "checkpoints")] == ["step-000001"]
    critic = _weights(first.model, "listener__critic")
    head = {k: v.clone() for k, v in first.heads["listener"].state_dict().items()}
    adam = first.critics["listener"].optimizer.state_dict()["state"]

    second = MultiAgentPPO(cfg, progress=False)
    assert not torch.equal(second.heads["listener"].linear.bias, head["linear.bias"])  # fresh before resuming
    assert second.checkpointer.resume() and second.state.step == 1
    assert any(v.abs().sum() > 0 for k, v in critic.items() if "lora_B" in k)  # trained, not the zero init
    assert _changed(critic, _weights(second.model, "listener__critic")) == 0
    assert all(torch.equal(v, second.heads["listener"].state_dict()[k]) for k, v in head.items())
    restored = second.critics["listener"].optimizer.state_dict()["state"]
    assert adam and all(torch.equal(adam[i]["exp_avg"], restored[i]["exp_avg"]) for i in adam)
    assert second.critics["listener"].state.global_step == second.actors["speaker"].state.global_step == 1

    # `llmmarl train` picks the trainer by algorithm, and the resumed run finishes.
    third = train(cfg, resume=True, progress=False)
    assert isinstance(third, MultiAgentPPO) and third.state.step == 2
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "learners" in x] == [1, 2]
    manifest = json.loads((tmp_path / "run" / "adapters" / "manifest.json").read_text())
    entries = {e["name"]: e for e in manifest["adapters"]}
    assert set(entries) == {"speaker", "listener"}  # the critics are not exported: they only train
    assert entries["listener"]["algorithm"] == "ppo" and entries["listener"]["steps"] == 2
    assert entries["listener"]["config"]["ppo"]["critic"] == "centralised"
