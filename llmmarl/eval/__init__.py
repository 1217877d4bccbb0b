"""Measurements of agents beyond win rates: Kuhn poker exploitability (:mod:`llmmarl.eval.exploitability`)."""
