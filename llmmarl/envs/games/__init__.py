"""Built-in games. Each module registers itself; add a game by adding a module and one import line here."""

from llmmarl.envs.games import (
    bargaining,  # noqa: F401
    connect_four,  # noqa: F401
    hanabi,  # noqa: F401
    kuhn_poker,  # noqa: F401
    leduc_holdem,  # noqa: F401
    rps,  # noqa: F401
    signal,  # noqa: F401
    tictactoe,  # noqa: F401
)
