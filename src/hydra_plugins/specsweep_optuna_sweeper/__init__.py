"""specsweep's Optuna sweeper for Hydra: `hydra/sweeper=optuna` on Optuna's ask/tell API (Optuna 4.9+; 5.0 pinned).

Hydra imports this package (and its modules not starting with "_") at every start to find plugins, so nothing here
imports Optuna: only the sweep itself does (`_impl`), when a sweep runs.
"""
