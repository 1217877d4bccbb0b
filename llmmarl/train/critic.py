"""PPO's critic: what it reads (:func:`critic_input`) and how it scores it (:class:`ValueHead`, :func:`critic_values`).

Each learner's critic is a second LoRA adapter on the shared base model, ``<learner>__critic``, plus a linear value
head on the final hidden state of the last input token: the value of the state before the turn. It costs an
adapter and ``hidden_size + 1`` weights per learner, no second model.

The critic reads a compact text of the state rather than the policy's chat prompt: the rules in the system
prompt are the same in every turn of a game and carry nothing a value needs, and leaving them out makes the
critic's passes several times cheaper. A decentralised critic sees what the acting seat saw (its observation, the
messages it received, its legal moves); a centralised critic (MAPPO: centralised training, decentralised
execution) also sees every other seat's latest observation - hidden cards, secret goals - which only exists
during training. The policy's prompt never changes, so the trained adapters play from their own view alone.

Other seats' observations come from the episode record: a game exposes a seat's observation only while that seat
is to act, so "latest" means as of that seat's last turn at or before this one (in simultaneous-move games, the
same step). A seat that has not acted yet is listed as such.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from llmmarl.records import EpisodeRecord, TurnRecord


def critic_input(turn: TurnRecord, episode: EpisodeRecord, centralised: bool, attempt: int = 0) -> str:
    """The critic's text for answer ``attempt`` of ``turn``; with ``centralised`` it includes the other seats' views."""
    lines = [
        f"Game: {episode.env}. Seat: {turn.seat}. Step {turn.step}.",
        f"Observation of {turn.seat} (acting):",
        turn.observation,
    ]
    if turn.inbox:
        lines += ["Messages received:", *turn.inbox]
    lines.append(f"Legal actions: {', '.join(turn.legal_actions)}")
    if attempt > 0:
        # A re-ask is a different state: the previous answer was rejected and the prompt says why.
        lines.append(f"Re-asked after: {turn.attempts[attempt - 1].error}")
    if centralised:
        lines.append("What the other agents observed (their latest turn):")
        for seat in episode.seats:
            if seat == turn.seat:
                continue
            relation = "teammate" if episode.teams.get(seat) == episode.teams.get(turn.seat) else "opponent"
            seen = _latest_observation(episode.turns, seat, turn.step)
            lines.append(f"[{seat}, {relation}]")
            lines.append(seen if seen is not None else "(has not acted yet)")
    return "\n".join(lines)


def _latest_observation(turns: Sequence[TurnRecord], seat: str, step: int) -> str | None:
    latest = None
    for t in turns:
        if t.seat == seat and t.step <= step:
            latest = t.observation
    return latest


class ValueHead(torch.nn.Module):
    """A linear map from the last token's final hidden state to a value, kept in float32."""

    def __init__(self, hidden_size: int, seed: int = 0) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(hidden_size, 1)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            # Small but non-zero: a zero head would also give the critic's LoRA weights no gradient at first.
            torch.nn.init.normal_(self.linear.weight, std=0.1 / hidden_size**0.5)
            torch.nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden.float()).squeeze(-1)


def backbone(model: Any) -> Any:
    """The transformer under a PEFT causal LM (LlamaModel under LlamaForCausalLM): hidden states, no LM head."""
    base = model.get_base_model()
    return getattr(base, base.base_model_prefix)


def critic_values(model: Any, head: ValueHead, ids: Sequence[Sequence[int]], pad_id: int, device: str) -> torch.Tensor:
    """Values of token sequences under the active adapter, shape (B,); grad flows if enabled by the caller.

    Rows are right-padded, so positions count from 0 in every row and the last real token is at ``len - 1``.
    """
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, x in enumerate(ids):
        input_ids[row, : len(x)] = torch.tensor(list(x))
        mask[row, : len(x)] = 1
    hidden = backbone(model)(input_ids=input_ids.to(device), attention_mask=mask.to(device)).last_hidden_state
    last = torch.tensor([len(x) - 1 for x in ids], device=hidden.device)
    return head(hidden[torch.arange(len(ids), device=hidden.device), last])
