"""Measurements of agents beyond win rates: a policy as played, read at the decisions a game names, and the game's
own measures of it (:mod:`llmmarl.eval.policy`), and Monte-Carlo action values of a
decision in a cloned game (:mod:`llmmarl.eval.q_values`)."""
