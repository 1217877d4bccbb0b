"""The all-action estimator (llmmarl.train.all_action): on bandits with known pi and Q its gradient is the exact
gradient of sum_a pi(a) Q(a); a flipped sign, or a pi or baseline left differentiable, is not."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from llmmarl.train.advantages import all_action_advantages
from llmmarl.train.all_action import all_action_loss
from llmmarl.train.samples import episodes_to_samples

Loss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def _bandits(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Three decisions with 4, 3 and 2 legal labels (padded to 4): parameters, Q values, legal mask."""
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(3, 4, generator=g, dtype=torch.float64) * 1.5
    q = torch.randn(3, 4, generator=g, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    return theta, q, mask


def _logprobs(theta: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(theta.masked_fill(~mask, float("-inf")), dim=1)


def _exact_gradient(theta: torch.Tensor, q: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """d/d theta of the mean over decisions of sum_a pi(a) Q(a): autograd of the closed form."""
    t = theta.clone().requires_grad_(True)
    pi = _logprobs(t, mask).exp()
    (pi * q.masked_fill(~mask, 0.0)).sum(dim=1).mean().backward()
    assert t.grad is not None
    return t.grad


def _estimator_gradient(loss: Loss, theta: torch.Tensor, q: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Minus the gradient of ``loss`` (a descent step on the loss is an ascent step on the value)."""
    t = theta.clone().requires_grad_(True)
    loss(_logprobs(t, mask), q, mask).backward()
    assert t.grad is not None
    return -t.grad


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_estimator_gradient_is_the_exact_one(seed: int) -> None:
    theta, q, mask = _bandits(seed)
    got = _estimator_gradient(all_action_loss, theta, q, mask)
    exact = _exact_gradient(theta, q, mask)
    assert torch.allclose(got, exact, atol=1e-12, rtol=1e-9), (got, exact)
    assert exact.abs().max() > 1e-2  # a gradient worth comparing
    assert torch.all(got[~mask] == 0)  # padding gets no credit


def test_advantages_are_centred_under_the_policy() -> None:
    theta, q, mask = _bandits(0)
    logp = _logprobs(theta, mask)
    a, v = all_action_advantages(logp, q, mask)
    pi = logp.exp()
    assert torch.allclose((pi * q.masked_fill(~mask, 0)).sum(1), v)
    assert torch.allclose((pi * a).sum(1), torch.zeros(3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(a[0], q[0] - v[0])


# The bugs the exact test exists to catch, each one line from the real loss.
def _flipped(logp: torch.Tensor, q: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return -all_action_loss(logp, q, mask)


def _pi_not_detached(logp: torch.Tensor, q: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    assert mask is not None
    a, _ = all_action_advantages(logp, q, mask)
    lp = logp.masked_fill(~mask, 0.0)
    return -(lp.exp().masked_fill(~mask, 0.0) * a * lp).sum(1).mean()  # pi keeps its gradient


def _baseline_not_detached(logp: torch.Tensor, q: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    assert mask is not None
    lp = logp.masked_fill(~mask, 0.0)
    pi = lp.exp().masked_fill(~mask, 0.0)
    qs = q.masked_fill(~mask, 0.0)
    a = (qs - (pi * qs).sum(1, keepdim=True)).masked_fill(~mask, 0.0)  # V keeps its gradient
    return -(pi.detach() * a * lp).sum(1).mean()


@pytest.mark.parametrize("wrong", [_flipped, _pi_not_detached, _baseline_not_detached])
def test_a_wrong_estimator_fails_the_exact_check(wrong: Loss) -> None:
    for seed in range(3):
        theta, q, mask = _bandits(seed)
        got = _estimator_gradient(wrong, theta, q, mask)
        exact = _exact_gradient(theta, q, mask)
        assert torch.isfinite(got).all()
        assert (got - exact).abs().max() > 1e-3, (wrong.__name__, seed)


def _natural(logp: torch.Tensor, q: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return all_action_loss(logp, q, mask, weighting="natural")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_natural_weighting_moves_each_logit_by_its_advantage(seed: int) -> None:
    """Tabular natural policy gradient: d(-L)/d z(a) = (Q(a) - mean_b Q(b)) / decisions on legal labels, however
    unlikely the label (theta scaled so some labels have ~1e-6 of the mass)."""
    theta, q, mask = _bandits(seed)
    theta = theta * 8
    got = _estimator_gradient(_natural, theta, q, mask)
    qs = q.masked_fill(~mask, 0.0)
    want = (qs - qs.sum(dim=1, keepdim=True) / mask.sum(dim=1, keepdim=True)).masked_fill(~mask, 0.0) / len(q)
    assert torch.allclose(got, want, atol=1e-12), (got, want)
    assert _logprobs(theta, mask).exp()[mask].min() < 1e-4  # some label is all but ruled out, and still moves
    # Not the exact policy gradient: it is a different update, which is why it is an option.
    assert not torch.allclose(got, _exact_gradient(theta, q, mask), atol=1e-3)


def test_the_natural_weighting_escapes_a_collapse_the_exact_gradient_stalls_in() -> None:
    """One decision, the paying label at 1e-4: 200 plain gradient steps of the same size. The natural step brings
    it above 0.9; the exact policy gradient leaves it below 0.01 (the softmax plateau)."""
    q = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    mask = torch.ones_like(q, dtype=torch.bool)
    finals = {}
    for weighting in ("policy", "natural"):
        theta = torch.tensor([[0.0, 9.2, 0.0]], dtype=torch.float64, requires_grad=True)  # pi(paying) ~ 1e-4
        for _ in range(200):
            theta.grad = None
            all_action_loss(_logprobs(theta, mask), q, mask, weighting=weighting).backward()  # type: ignore[arg-type]
            with torch.no_grad():
                theta -= 0.1 * theta.grad
        finals[weighting] = float(_logprobs(theta.detach(), mask).exp()[0, 0])
    assert finals["natural"] > 0.9, finals
    assert finals["policy"] < 0.01, finals


def test_an_unknown_weighting_is_refused() -> None:
    theta, q, mask = _bandits(0)
    with pytest.raises(ValueError, match="weighting"):
        all_action_loss(_logprobs(theta, mask), q, mask, weighting="uniform")  # type: ignore[arg-type]


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="decisions, labels"):
        all_action_loss(torch.zeros(4), torch.zeros(4))
    with pytest.raises(ValueError, match="at least one legal label"):
        all_action_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, 2, dtype=torch.bool))


# ---- wired: algorithm all_action on the bandit probe, tiny model -----------------------------------------------------
def test_a_tiny_all_action_run_trains_on_the_bandit(tmp_path) -> None:
    from llmmarl.studies.probes import PROBES, probe_config
    from llmmarl.train import TrainConfig, trainer_class

    raw = probe_config(PROBES["bandit"], "rloo", "tiny", 0, 2, str(tmp_path), ["env_kwargs.arms=3"])
    cfg = TrainConfig.model_validate({**raw, "algorithm": "all_action", "group_size": 1, "games_per_update": 8})
    trainer = trainer_class("all_action")(cfg, progress=False)
    logs = trainer.update()["learner"]
    assert torch.isfinite(torch.tensor(logs["loss"])) and logs["grad_norm"] > 0
    # Q came from branching each game, and it pays what the bandit pays: 1 for the paying word only.
    env = trainer.env
    paying = {label for label, v in env.optimal().items() if v == 1.0}  # type: ignore[attr-defined]
    assert trainer.q and all({a for a, v in q.items() if v == 1.0} == paying for q in trainer.q.values())
    assert 0.0 <= logs["all_action/value"] <= 1.0
    # One step on a fixed set of decisions raises their value sum_a pi(a) Q(a), read as the loss reads pi.
    episodes, _ = trainer.rollout()
    trainer.begin_update(episodes)
    samples = episodes_to_samples(episodes, ["learner"], cfg.rewards.as_dict(), env.forfeit_reward)["learner"]

    def value() -> float:
        with torch.no_grad():
            logp, q, mask = trainer._label_logprobs(samples)
            return float(all_action_advantages(logp, q, mask)[1].mean())

    before = value()
    trainer.learn("learner", samples)
    assert value() > before + 1e-4, (before, value())


def test_the_natural_weighting_is_chosen_by_the_settings_block(tmp_path, monkeypatch) -> None:
    """``all_action: {weighting: natural}`` reaches the loss: one update's loss equals the natural loss of the same
    decisions (and not the policy-weighted one); a misspelt weighting is a config error."""
    import llmmarl.train.all_action_trainer as trainer_module
    from llmmarl.studies.probes import PROBES, probe_config
    from llmmarl.train import TrainConfig, trainer_class

    raw = probe_config(PROBES["bandit"], "all_action", "tiny", 0, 1, str(tmp_path), [])
    with pytest.raises(ValueError, match="weighting"):
        TrainConfig.model_validate({**raw, "all_action": {"weighting": "uniform"}})
    cfg = TrainConfig.model_validate({**raw, "games_per_update": 8, "all_action": {"weighting": "natural"}})
    seen: list[tuple[str, float, float]] = []
    real = trainer_module.all_action_loss

    def spy(logp: torch.Tensor, q: torch.Tensor, mask: torch.Tensor, weighting: str = "policy") -> torch.Tensor:
        seen.append(
            (weighting, float(_natural(logp.detach(), q, mask)), float(all_action_loss(logp.detach(), q, mask)))
        )
        return real(logp, q, mask, weighting)  # type: ignore[arg-type]

    monkeypatch.setattr(trainer_module, "all_action_loss", spy)
    trainer = trainer_class("all_action")(cfg, progress=False)
    logs = trainer.update()["learner"]
    assert seen and all(w == "natural" for w, _, _ in seen)
    natural = sum(n for _, n, _ in seen)  # one micro-batch of 8 decisions: its loss is the update's
    assert logs["loss"] == pytest.approx(natural, rel=1e-6)
    assert abs(natural - sum(p for _, _, p in seen)) > 1e-6


def test_all_action_refuses_what_it_cannot_credit(tmp_path) -> None:
    from llmmarl.studies.probes import PROBES, probe_config
    from llmmarl.train import TrainConfig, trainer_class

    raw = probe_config(PROBES["bandit"], "rloo", "tiny", 0, 1, str(tmp_path), [])
    cfg = TrainConfig.model_validate({**raw, "algorithm": "all_action", "constrained": False})
    with pytest.raises(ValueError, match="constrained: true"):
        trainer_class("all_action")(cfg, progress=False)
