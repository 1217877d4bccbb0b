"""Rock-paper-scissors (PettingZoo ``rps_v2``), played simultaneously for a fixed number of rounds."""

from __future__ import annotations

from typing import Any

import numpy as np

# The implementation module, not the ``rps_v2`` shim: in PettingZoo 1.27 the shim warns DeprecationWarning
# on import. Same env (v2 of this installed version).
from pettingzoo.classic.rps import rps

from llmmarl.envs.pettingzoo import ParallelTextEnv, PettingZooTextEnv, Renderer

#: Move names in action-id order (PettingZoo: 0 rock, 1 paper, 2 scissors); also the action labels.
MOVES = ("rock", "paper", "scissors")
#: PettingZoo's default game length: long enough that reading the opponent's habits can pay off.
DEFAULT_ROUNDS = 15


def _outcome(mine: int, theirs: int) -> str:
    if mine == theirs:
        return "a draw"
    # Each move beats the one before it in MOVES, cyclically: paper > rock, scissors > paper, rock > scissors.
    return "you won" if (mine - theirs) % 3 == 1 else "you lost"


class RPSRenderer(Renderer):
    def __init__(self, rounds: int = DEFAULT_ROUNDS) -> None:
        self.description = (
            f"Rock-paper-scissors against one opponent for {rounds} rounds; both players choose at the same "
            "time. Rock beats scissors, scissors beats paper, paper beats rock. Each round you win gives +1, each "
            "round you lose -1, a draw 0; your return is the sum over all rounds. After each round you see the "
            "opponent's move, so you may try to exploit its habits."
        )

    def observation(self, env: PettingZooTextEnv, agent: str, raw: Any) -> str:
        # The PettingZoo observation is a scalar: the opponent's previous move, or 3 ("none") before round 1.
        theirs = int(np.asarray(raw))
        game = env.pz.unwrapped  # the raw AEC game under the Parallel conversion; its counters are public
        rounds_played = int(getattr(game, "num_moves", 0))
        max_rounds = getattr(game, "max_cycles", None)
        of_total = f" of {max_rounds}" if max_rounds else ""
        lines = [f"Round {rounds_played + 1}{of_total}."]
        if theirs >= len(MOVES):
            lines.append("No moves have been played yet.")
            return "\n".join(lines)
        # Our own previous move is this seat's own knowledge, not hidden from it; PettingZoo keeps it in `state`.
        mine = getattr(game, "state", {}).get(agent)
        if mine is not None and 0 <= int(mine) < len(MOVES):
            mine = int(mine)
            result = _outcome(mine, theirs)
            lines.append(f"Last round you played {MOVES[mine]}, your opponent played {MOVES[theirs]}: {result}.")
        else:
            lines.append(f"Last round your opponent played {MOVES[theirs]}.")
        totals = env.returns()  # every move is revealed after each round, so the score is public
        opponent = next(a for a in env.possible_agents if a != agent)
        lines.append(f"Score so far: you {totals[agent]:g}, opponent {totals[opponent]:g}.")
        return "\n".join(lines)

    def action_label(self, env: PettingZooTextEnv, agent: str, action: int) -> str:
        return MOVES[action]


def make_rps(max_cycles: int = DEFAULT_ROUNDS) -> ParallelTextEnv:
    """``max_cycles`` is the number of rounds; PettingZoo truncates the game after it."""
    return ParallelTextEnv("rps_v2", lambda: rps.parallel_env(max_cycles=max_cycles), RPSRenderer(max_cycles))
