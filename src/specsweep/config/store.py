"""Register the typed schemas in Hydra's ConfigStore so every yaml in conf/ is checked against them."""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from specsweep.backends import BACKENDS
from specsweep.config.schema import DatasetConfig, ExperimentConfig, ModelConfig, SpeculationConfig
from specsweep.energy.config import EnergyConfig
from specsweep.tracking.config import LoggerConfig


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="experiment_schema", node=ExperimentConfig)
    for name, entry in BACKENDS.items():
        cs.store(group="backend", name=f"{name}_schema", node=entry.config_class)
    cs.store(group="speculation", name="schema", node=SpeculationConfig)
    cs.store(group="model", name="schema", node=ModelConfig)
    cs.store(group="dataset", name="schema", node=DatasetConfig)
    cs.store(group="energy", name="schema", node=EnergyConfig)
    cs.store(group="logger", name="schema", node=LoggerConfig)
