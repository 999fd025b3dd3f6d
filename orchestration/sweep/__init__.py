"""Hyper-parameter sweeps over `train.*` keys (the `sweep:` section, docs/sweeps.md).

- params.py: the section's schema (imported when params.yaml is checked: it must stay light);
- space.py: the space as Optuna distributions, and trial values written into params.yaml;
- study.py: the study's name and storage, and `plan` (which trials to run now);
- trial.py: `run_trial`, one trial as a DVC experiment, pruned on its per-epoch values;
- experiments.py: a pruned or failed trial saved as an experiment; an experiment pushed;
- winner.py: the best completed trial, written into params.yaml;
- local.py and __main__.py: `python -m orchestration.sweep run|show`, the sweep on this machine.
"""
