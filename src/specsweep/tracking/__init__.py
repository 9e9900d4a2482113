"""Experiment trackers: they receive a finished result and never fail a run."""
