"""Run one speculative-decoding experiment; `-m` sweeps it.

    python main.py                                   # the embedded default: draft_model on Qwen2.5-Coder 1.5B/0.5B
    python main.py speculation=ngram                 # any group option or field override
    python main.py -m speculation=ngram,draft_model  # a Hydra multirun
    python main.py --support-matrix                  # which backend runs which method
    python main.py backend=tensorrt speculation=eagle3 --dry-run   # print the native engine config only

Path of one run: compose (Hydra) -> validate -> map (native config) -> run + measure -> record -> objective.
"""

import atexit
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from specsweep.config.register import register_configs
from specsweep.session import Session

CONF_DIR = Path(__file__).parent / "conf"
register_configs(CONF_DIR)
SESSION = Session()  # what outlives one job of a sweep: loaded models, kept engines, baselines (see session.py)
atexit.register(SESSION.close)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig):
    from specsweep import app

    return app.run(cfg, SESSION)


if __name__ == "__main__":
    from specsweep.cli import precheck

    sys.argv[1:] = precheck(CONF_DIR, sys.argv[1:], SESSION)
    main()
