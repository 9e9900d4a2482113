"""Optuna define-by-run search spaces that the sweeper's flat `params` cannot express."""

from __future__ import annotations

NGRAM_WINDOW_LIMIT = 5


def ngram_window(cfg, trial) -> None:
    """ngram_min in [1, limit], then ngram_max in [ngram_min, limit]: every sampled window is valid."""
    low = trial.suggest_int("speculation.ngram_min", 1, NGRAM_WINDOW_LIMIT)
    trial.suggest_int("speculation.ngram_max", low, NGRAM_WINDOW_LIMIT)
