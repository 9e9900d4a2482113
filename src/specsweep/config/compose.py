"""Compose the typed config outside Hydra's app runner (the pre-flight check, tests, scripts), with every
composition problem turned into the same one-line `ConfigError` that validation raises."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterator, List, Sequence, Tuple

from omegaconf import DictConfig, OmegaConf

from specsweep.config.register import CONF_DIR, register_configs
from specsweep.config.schema import ExperimentConfig
from specsweep.config.validate import ConfigError


def to_config(dcfg: DictConfig) -> ExperimentConfig:
    """The composed DictConfig as the typed dataclass tree (backend: the selected backend's own class); a key the
    schema does not declare is a ConfigError, however it arrived."""
    unknown = next(unknown_keys(dcfg), None)
    if unknown is not None:
        raise ConfigError(*unknown)
    return OmegaConf.to_object(dcfg)


def unknown_keys(node: DictConfig, prefix: str = "") -> Iterator[Tuple[str, Any, str]]:
    """Keys a `+key=value` override added to a typed section (Hydra adds them to a closed schema without a word, and
    `to_object` then drops them: a misspelled field would silently not apply). Open dicts (`Dict[str, ...]` fields
    such as speculation.backend_overrides or model.heads) take any key."""
    schema = OmegaConf.get_type(node)
    declared = {f.name for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else None
    for key in node.keys():
        path = f"{prefix}{key}"
        if declared is not None and key not in declared:
            names = ", ".join(sorted(declared))
            yield path, node._get_node(key)._value(), f"an existing field; {schema.__name__} has: {names}"
            continue
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            yield from unknown_keys(child, f"{path}.")


def _option_error(err, overrides: Sequence[str]) -> ConfigError:
    group = (err.missing_cfg_file or "").split("/")[0]
    options = sorted(err.options or [])
    chosen = next(
        (o.split("=", 1)[1] for o in overrides if o.split("=")[0].lstrip("+~") == group), err.missing_cfg_file
    )
    if not options:
        return ConfigError(group or "config", chosen, str(err).splitlines()[0])
    return ConfigError(group, chosen, f"one of {', '.join(options)}")


def _value_error(err, overrides: Sequence[str]) -> ConfigError:
    """OmegaConf's ValidationError / ConfigKeyError -> field, value, allowed."""
    import dataclasses

    key = getattr(err, "full_key", None) or "config"
    given = next((o.split("=", 1)[1] for o in overrides if o.split("=")[0].lstrip("+~") == key), None)
    message = str(err).splitlines()[0]
    if message.startswith("Key '") and dataclasses.is_dataclass(getattr(err, "object_type", None)):
        names = ", ".join(f.name for f in dataclasses.fields(err.object_type))
        return ConfigError(key, given, f"an existing field; {err.object_type.__name__} has: {names}")
    parent = key.rsplit(".", 1)[0]
    whole = next((o.split("=", 1)[1] for o in overrides if o.split("=")[0] == parent), None)
    if message.endswith("is not in struct") and whole is not None:  # `field={...}` on a map field: Hydra wants `+`
        return ConfigError(parent, whole, f"a map set with a leading '+': '+{parent}={whole}'")
    if message.startswith("Invalid value '") and "expected one of [" in message:  # an enum field
        return ConfigError(key, message.split("'")[1], f"one of {message.split('expected one of [', 1)[1].rstrip(']')}")
    if "could not be converted to " in message:
        return ConfigError(key, given, f"a value of type {message.rsplit('could not be converted to ', 1)[1]}")
    return ConfigError(key, given, message)


def compose_config(overrides: List[str], conf_dir: Path = CONF_DIR) -> ExperimentConfig:
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException, MissingConfigException
    from omegaconf.errors import OmegaConfBaseException

    register_configs(conf_dir)
    try:
        with initialize_config_dir(str(Path(conf_dir).resolve()), version_base="1.3"):
            return to_config(compose("config", overrides=list(overrides)))
    except MissingConfigException as err:
        raise _option_error(err, overrides) from None
    except OmegaConfBaseException as err:
        raise _value_error(err, overrides) from None
    except HydraException as err:
        cause = err.__cause__
        if isinstance(cause, OmegaConfBaseException):
            raise _value_error(cause, overrides) from None
        raise ConfigError("override", " ".join(overrides), " ".join(str(err).split())) from None
