"""specsweep's theory-guided sweeper for Hydra: `hydra/sweeper=best_k` (preset: `hparams_search=best_k`).

Hydra imports this package at every start to find plugins, so it stays light; the tuning itself is
`specsweep.tuning`, imported when a sweep runs.
"""
