"""`python main.py --help`: specsweep's own help page, listing the real options of each config group.

The option lists are read from `conf/` (and the backend registry, for plugin backends), so the page cannot drift
from what composes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List

GROUPS = ("backend", "speculation", "model", "dataset", "energy", "logger", "hparams_search")

HEADER = """specsweep: what speculative decoding really buys (latency, throughput and energy), per model, workload
and engine.

One run = load, warm up, generate over a prompt set, measure against a paired no-speculation baseline, write
result.json. -m sweeps it (Hydra multirun), hparams_search=<preset> tunes it (Optuna, or best_k by theory)."""

EXAMPLES = """Examples:
  python main.py                                        # draft_model k=5 on the packaged Qwen2.5-Coder 1.5B/0.5B pair
  python main.py speculation=ngram                      # prompt lookup
  python main.py -m speculation.num_speculative_tokens=2,4,6   # a sweep over k
  python main.py -m hparams_search=best_k               # the best k in 3 measured runs (probe + 2)
  python main.py -m hparams_search=draft_model_k        # Optuna over k
  python main.py backend=vllm speculation=eagle3 --dry-run    # print the native engine config, run nothing
  python main.py -m backend=vllm_server speculation=none,ngram generation.concurrency=1,4   # a server under load
  python main.py --support-matrix                       # which backend runs which method"""

FOOTER = """Any field can be overridden as group.field=value (see --cfg job for the composed config); every invalid
value fails before anything loads with one line naming the field, the value and what is allowed.
Flags: --dry-run, --support-matrix, -m/--multirun (--run-valid: run a grid's valid jobs even if others are invalid),
--cfg job, --hydra-help. Docs: README.md and docs/."""


def group_options(conf_dir: Path) -> Dict[str, List[str]]:
    """The choices of each user-facing group: its yaml files, plus plugin backends that have none."""
    from specsweep.backends import registry

    options = {g: sorted(p.stem for p in (conf_dir / g).glob("*.yaml")) for g in GROUPS}
    options["backend"] = sorted(set(options["backend"]) | set(registry()))
    return options


def help_text(conf_dir: Path) -> str:
    menu = "\n".join(f"  {group}: {', '.join(names)}" for group, names in group_options(conf_dir).items())
    return f"{HEADER}\n\nConfig groups (choose with group=option):\n{menu}\n\n{EXAMPLES}\n\n{FOOTER}\n"


def help_node(conf_dir: Path) -> Dict[str, str]:
    """The `hydra/help` config: Hydra prints `template` for --help (`$` is its substitution character)."""
    text = help_text(conf_dir).replace("$", "$$")
    return {"app_name": "specsweep", "header": "", "footer": "", "template": text}
