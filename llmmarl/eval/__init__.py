"""Measurements of agents beyond win rates: Kuhn poker exploitability (:mod:`llmmarl.eval.exploitability`), and
Monte-Carlo action values of a decision in a cloned game (:mod:`llmmarl.eval.q_values`)."""
