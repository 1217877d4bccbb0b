"""Studies that train: the probe suite (:mod:`llmmarl.studies.probes`: does each algorithm learn each probe game?)
and turn ablations (:mod:`llmmarl.studies.ablation`: arms that differ in the turn's lines and reward terms)."""
