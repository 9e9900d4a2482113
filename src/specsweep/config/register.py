"""Register the typed schemas in Hydra's ConfigStore, so every yaml in conf/ is checked against them.

The root schema types every group but `backend/`, whose options are different dataclasses: each backend's schema is
stored as `schema/backend/<name>` and named by its yaml (`- /schema/backend/<name>@_here_`), which keeps schemas
out of the `backend=` choices. A plugin backend with no yaml is stored as a `backend=` option itself.
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.config_store import ConfigStore

from specsweep.backends import registry
from specsweep.config.help import help_node
from specsweep.config.schema import ExperimentConfig

CONF_DIR = Path(__file__).resolve().parents[3] / "conf"  # the repository's conf/ (main.py's config_path)


def register_configs(conf_dir: Path = CONF_DIR) -> None:
    cs = ConfigStore.instance()
    cs.store(name="experiment_schema", node=ExperimentConfig)
    for name, cls in registry().items():
        cs.store(group="schema/backend", name=name, node=cls)
        if not (conf_dir / "backend" / f"{name}.yaml").is_file():
            cs.store(group="backend", name=name, node=cls)
    cs.store(group="hydra/help", name="specsweep", node=help_node(conf_dir))
