"""Label-level epsilon-exploration (llmmarl.train.exploration): the importance weight keeps the policy gradient
unbiased (and a flipped or dropped weight does not), the answer scorer agrees with generation, and a tiny-model run
on the bandit probe explores, weighs and trains."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch

from llmmarl.agents.llm import LLMAgents
from llmmarl.agents.specs import LLMAgentSpec
from llmmarl.backends.path_score import score_path
from llmmarl.envs import make
from llmmarl.studies.probes import PROBES, probe_config
from llmmarl.train.exploration import behaviour_weight, canonical_path
from llmmarl.train.samples import episodes_to_samples

# ---- unbiasedness on a softmax policy over answer paths --------------------------------------------------------------
# Four labels, each with two spellings: the canonical one (the only one exploration plays) and another the policy
# may sample. The paying label is one the policy rarely says.
LOGITS = np.array([2.0, 0.0, -1.0, -3.0, 0.5, -1.0, -2.0, -4.0])  # paths 0-3 canonical, 4-7 their other spelling
REWARD = np.array([0.0, 0.2, 0.0, 1.0])  # per label
EPSILON = 0.3
LABELS = 4
SAMPLES = 200_000
Weighting = Callable[[float, bool], float]
WEIGHTINGS: dict[str, Weighting] = {
    "pi/mu": lambda logp, canonical: behaviour_weight(logp, canonical, EPSILON, LABELS),
    "mu/pi (flipped)": lambda logp, canonical: 1.0 / behaviour_weight(logp, canonical, EPSILON, LABELS),
    "none (dropped)": lambda logp, canonical: 1.0,
}


def _exact_gradient() -> np.ndarray:
    """d/d logits of sum_path pi(path) R(label of path), by autograd of the closed form."""
    theta = torch.tensor(LOGITS, requires_grad=True)
    pi = torch.softmax(theta, dim=0)
    (pi * torch.tensor(np.tile(REWARD, 2))).sum().backward()
    assert theta.grad is not None
    return theta.grad.numpy()


def _explored_estimate(weighting: Weighting, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error of w * R * grad log pi over answers drawn from the exploring behaviour mu."""
    rng = np.random.default_rng(seed)
    pi = np.exp(LOGITS - LOGITS.max())
    pi /= pi.sum()
    explored = rng.random(SAMPLES) < EPSILON
    paths = np.where(explored, rng.integers(0, LABELS, SAMPLES), rng.choice(len(pi), SAMPLES, p=pi))
    weight = np.array([weighting(math.log(pi[p]), p < LABELS) for p in range(len(pi))])[paths]
    score = np.eye(len(pi))[paths] - pi  # grad of log softmax at the drawn path
    g = (weight * REWARD[paths % LABELS])[:, None] * score
    return g.mean(axis=0), g.std(axis=0, ddof=1) / math.sqrt(SAMPLES)


def test_the_weighted_explored_gradient_is_the_on_policy_one() -> None:
    mean, stderr = _explored_estimate(WEIGHTINGS["pi/mu"])
    exact = _exact_gradient()
    assert np.all(np.abs(mean - exact) <= 4 * stderr + 1e-12), (mean, exact, stderr)
    assert np.abs(exact).max() > 20 * stderr.max()  # the test has power: the gradient stands far out of the noise


@pytest.mark.parametrize("name", ["mu/pi (flipped)", "none (dropped)"])
def test_a_flipped_or_dropped_weight_is_biased(name: str) -> None:
    mean, stderr = _explored_estimate(WEIGHTINGS[name])
    z = np.abs(mean - _exact_gradient()) / stderr
    assert z.max() > 8, z  # the check the honest weighting passes fails here by far


def test_the_weight_is_bounded_and_exact_where_mu_is_known() -> None:
    assert behaviour_weight(math.log(0.5), False, 0.2, 4) == pytest.approx(1.25)  # non-canonical: 1 / (1 - e)
    assert behaviour_weight(math.log(0.5), True, 0.2, 4) == pytest.approx(0.5 / (0.8 * 0.5 + 0.05))
    assert behaviour_weight(-math.inf, True, 0.2, 4) == 0.0  # a path the policy never samples counts for nothing
    assert behaviour_weight(0.0, True, 0.2, 1) == pytest.approx(1.0)  # one label: mu = pi
    with pytest.raises(ValueError, match="epsilon"):
        behaviour_weight(0.0, True, 1.0, 4)


# ---- the answer scorer against generation ----------------------------------------------------------------------------
def _bandit_decision(backend, temperature: float = 1.0):
    env = make("probe_bandit", arms=3, seed=0)
    env.reset(seed=1)
    seat = env.possible_agents[0]
    spec = LLMAgentSpec(name="x", temperature=temperature, constrained=True, lines=frozenset(), max_new_tokens=16)
    return LLMAgents(backend).start(spec, env, seat, env.observe(seat), [])


def test_a_sampled_path_scores_as_generation_recorded_it(tiny_backend) -> None:
    decision = _bandit_decision(tiny_backend)
    requests = [decision.ask(seed=s) for s in range(4)]
    for request, gen in zip(requests, tiny_backend.generate(requests), strict=True):
        score = score_path(tiny_backend, request, gen.completion_ids)
        assert score.token_logprobs == pytest.approx(gen.logprobs, abs=1e-4)  # untempered, unmasked: as recorded
        # Under the grammar at T=1 the mask only renormalises: the sampling probability is above the raw one.
        assert sum(gen.logprobs) < score.sampling_logprob <= 0.0


def test_a_canonical_label_is_scored_as_the_reader_reads_its_text(tiny_backend) -> None:
    """The canonical path is one of the token paths spelling its answer: its probability is at most the text's."""
    from llmmarl.backends.base import AnswerQuery

    decision = _bandit_decision(tiny_backend)
    request = decision.ask()
    (dist,) = tiny_backend.answer_distribution([AnswerQuery(request=request)])
    for label in decision.context.legal:
        path = canonical_path(tiny_backend.tokenizer, label)
        p = math.exp(score_path(tiny_backend, request, path).sampling_logprob)
        assert 0.0 < p <= dist.answers[f"ACTION: {label}"] + 1e-9
    assert score_path(tiny_backend, request, [tiny_backend.tokenizer.eos_token_id]).sampling_logprob == -math.inf


# ---- configuration -------------------------------------------------------------------------------------------------
def _config(tmp_path, **extra):
    from llmmarl.train.config import TrainConfig

    cfg = probe_config(PROBES["bandit"], "grpo", "tiny", 0, 2, str(tmp_path), ["env_kwargs.arms=4"])
    # Under the grammar at T = 1, not the suite's canonical tiny recipe: the weights' two branches (a canonical
    # spelling or another) both occur only when the grammar lets a label be spelled several ways.
    return TrainConfig.model_validate({**cfg, "canonical": False, "temperature": 1.0, **extra})


def test_exploration_is_off_by_default_and_checked(tmp_path) -> None:
    assert _config(tmp_path).exploration is None
    assert _config(tmp_path, exploration={"epsilon": 0.2}).exploration.epsilon == 0.2  # kind: epsilon by default
    with pytest.raises(ValueError, match=r"constrained: true \(or canonical: true\) and lines"):
        _config(tmp_path, exploration={"epsilon": 0.2}, constrained=False, canonical=False)
    with pytest.raises(ValueError, match="rollout_backend: transformers"):
        _config(tmp_path, exploration={"epsilon": 0.2}, rollout_backend="vllm")
    with pytest.raises(ValueError, match="epsilon"):
        _config(tmp_path, exploration={"epsilon": 1.5})


# ---- a tiny-model run on the bandit probe --------------------------------------------------------------------------
def test_a_tiny_run_explores_weighs_and_trains(tmp_path) -> None:
    from llmmarl.train.grpo import MultiAgentGRPO

    eps = 0.5
    cfg = _config(tmp_path, exploration={"kind": "epsilon", "epsilon": eps}, games_per_update=32, group_size=4)
    trainer = MultiAgentGRPO(cfg, progress=False)
    episodes, _ = trainer.rollout()
    forfeit = trainer.env.forfeit_reward
    samples = episodes_to_samples(episodes, trainer.learners, cfg.rewards.as_dict(), forfeit, cfg.group_size)["learner"]
    # The learner's request as the rollout decoded it (grammar, temperature, adapter); each turn's own messages.
    env = make(cfg.env, **cfg.env_kwargs)
    env.reset(seed=0)
    seat = env.possible_agents[0]
    ask = LLMAgents(trainer.engine.backend).start(trainer.learner_specs[0], env, seat, env.observe(seat), []).ask()
    assert ask.grammar is not None and ask.adapter == "learner"
    assert len(samples) == 32 and all(s.explorable for s in samples)
    explored = [s for s in samples if s.explored]
    # 32 Bernoulli(0.5) draws: within 4 standard errors of epsilon
    assert abs(len(explored) / len(samples) - eps) <= 4 * math.sqrt(eps * (1 - eps) / len(samples))
    turns = {(int(ep.game_id), t.step): t for ep in episodes for t in ep.turns}
    for s in samples:
        turn = turns[(s.game_id, s.step)]
        labels = turn.legal_actions
        canonical = any(s.completion_ids == canonical_path(trainer.tokenizer, a) for a in labels)
        if s.explored:  # the played answer is a label spelled canonically, and the game took it
            assert canonical and turn.action in labels and s.usable
            assert s.completion_ids == canonical_path(trainer.tokenizer, turn.action)
        if not canonical:  # mu = (1 - e) pi exactly: the weight is 1 / (1 - e), not 1
            assert s.weight == pytest.approx(1.0 / (1.0 - eps), rel=1e-12)
        else:  # recomputed from the scored path with the weights of the rollout (no update yet)
            request = ask.model_copy(update={"messages": turn.attempts[s.attempt].messages})
            score = score_path(trainer.engine.backend, request, s.completion_ids)
            assert s.weight == pytest.approx(behaviour_weight(score.sampling_logprob, True, eps, len(labels)))
    # The random tiny model puts far less than e / |A| on a canonical spelling: an explored answer weighs little.
    assert all(s.weight < 1.0 for s in explored)
    # The weights enter GRPO's loss as TRL's per-token ratio, times the engine correction's where there is one.
    grpo = trainer.trainers["learner"]
    grpo.batch = samples[:4]
    output = {"completion_mask": torch.ones(4, 3), "importance_sampling_ratio": torch.full((4, 3), 2.0)}
    grpo._add_exploration(output)
    expected = 2.0 * torch.tensor([s.weight for s in samples[:4]])[:, None].expand(4, 3)
    assert torch.allclose(output["importance_sampling_ratio"], expected)
    grpo.batch = []
    logs = trainer.update()  # one whole update (its own rollout) with the weights in the loss
    m = logs["learner"]
    assert 0.0 < m["explore/share"] < 1.0 and m["explore/weight_max"] == pytest.approx(1.0 / (1.0 - eps))
    assert math.isfinite(m["loss"]) and trainer.state.step == 1


def test_canonical_answers_are_explored_too(tmp_path) -> None:
    """Under ``canonical: true`` every answer is a label's canonical spelling: exploration still draws its share,
    and every weight is pi / ((1 - e) pi + e / |A|), none the non-canonical 1 / (1 - e)."""
    from llmmarl.train.grpo import MultiAgentGRPO

    eps = 0.5
    cfg = _config(tmp_path, canonical=True, exploration={"epsilon": eps}, games_per_update=32, group_size=4)
    trainer = MultiAgentGRPO(cfg, progress=False)
    episodes, _ = trainer.rollout()
    forfeit = trainer.env.forfeit_reward
    samples = episodes_to_samples(episodes, trainer.learners, cfg.rewards.as_dict(), forfeit, cfg.group_size)["learner"]
    assert len(samples) == 32 and all(s.explorable for s in samples)
    explored = [s for s in samples if s.explored]
    assert abs(len(explored) / len(samples) - eps) <= 4 * math.sqrt(eps * (1 - eps) / len(samples))
    assert all(s.weight != pytest.approx(1.0 / (1.0 - eps)) for s in samples)
    assert all(0.0 < s.weight < 1.0 / (1.0 - eps) for s in samples)
