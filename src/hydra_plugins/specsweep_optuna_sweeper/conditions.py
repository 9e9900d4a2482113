"""A study mixes only comparable trials. Its conditions (what every trial shares: the job config minus the swept
params, and whatever else the `conditions` function adds) are recorded as a study user attribute when the study is
created; a rerun under other conditions is refused, naming what differs.

`hydra.sweeper.conditions` names a function `fn(job_cfg, swept) -> {dotted key: value}`; null means
`config_conditions`. Both receive the config a trial's job would get (hydra node removed) with the swept keys still
at their defaults, and the swept keys.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Iterable, List, Mapping

from omegaconf import DictConfig, OmegaConf

CONDITIONS_ATTR = "conditions"  # study user attribute (optuna-dashboard shows it with the study)


def flatten(node: Any, prefix: str = "") -> Dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values."""
    if not isinstance(node, Mapping) or (prefix and not node):
        return {prefix: node}
    out: Dict[str, Any] = {}
    for key, value in node.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def is_swept(key: str, swept: Iterable[str]) -> bool:
    """The key is a swept param or lies under one (a swept config group such as `speculation` covers its fields)."""
    return any(key == s or key.startswith(s + ".") for s in swept)


def config_conditions(job_cfg: DictConfig, swept: Iterable[str], drop: Iterable[str] = ()) -> Dict[str, Any]:
    """The resolved job config as dotted keys, minus the swept keys and those in `drop` (and everything under them)."""
    swept, drop = list(swept), list(drop)
    data = OmegaConf.to_container(job_cfg, resolve=True, enum_to_str=True)
    return {k: v for k, v in flatten(data).items() if not is_swept(k, swept) and not is_swept(k, drop)}


def normalized(conditions: Mapping[str, Any]) -> Dict[str, Any]:
    """As the storage gives it back (JSON: tuples become lists), so stored and computed compare equal."""
    return json.loads(json.dumps(dict(conditions), sort_keys=True, default=str))


def differences(stored: Mapping[str, Any], current: Mapping[str, Any]) -> List[str]:
    """`key: old -> new` for each key whose value differs ("unset" where one side lacks it)."""
    changed = [k for k in sorted(set(stored) | set(current)) if stored.get(k, ...) != current.get(k, ...)]
    return [f"{k}: {_show(stored, k)} -> {_show(current, k)}" for k in changed]


def _show(side: Mapping[str, Any], key: str) -> str:
    return json.dumps(side[key], default=str) if key in side else "unset"
