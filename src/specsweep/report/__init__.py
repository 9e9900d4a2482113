"""Comparison reports: a local self-contained HTML report (`scripts/report.py`) and a W&B Report builder
(`scripts/wandb_report.py`)."""
