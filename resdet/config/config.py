"""Loading configs: the defaults (defaults.py), then a YAML file with its `_BASE_` chain, then
`KEY VALUE` overrides; and saving the resolved config. The CfgNode that checks keys and values by
name is in node.py.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

from fvcore.common.config import CfgNode as _FvCfgNode

from .defaults import _C
from .node import CfgNode, ConfigError

__all__ = ["get_cfg", "load_config", "load_config_text", "save_config"]


def get_cfg() -> CfgNode:
    """A fresh copy of the defaults (every key is documented in `resdet/config/defaults.py`)."""
    return _C.clone()


def load_config(path: Optional[str] = None, overrides: Sequence[str] = (), freeze: bool = True) -> CfgNode:
    """Defaults, then the YAML file (with its `_BASE_` chain), then `KEY VALUE` overrides."""
    cfg = get_cfg()
    if path:
        cfg.merge_from_file(path)
    if overrides:
        cfg.merge_from_list(list(overrides))
    if freeze:
        cfg.freeze()
    return cfg


def load_config_text(text: str, source: str, overrides: Sequence[str] = (), freeze: bool = True) -> CfgNode:
    """Defaults, then a resolved config saved as YAML text (a checkpoint's "config", a run's
    config.yaml), then `KEY VALUE` overrides. `source` names where the text came from in errors."""
    import yaml

    cfg = get_cfg()
    try:
        loaded = yaml.safe_load(text)
    except (yaml.YAMLError, TypeError, ValueError, RecursionError) as e:
        raise ConfigError(f"The config stored in {source} is not valid YAML: {e}") from e
    loaded = {} if loaded is None else loaded  # empty text: the defaults, as fvcore reads it
    if not isinstance(loaded, dict):  # fvcore's load_cfg fails on a bare string with an AttributeError
        raise ConfigError(f"The config stored in {source} is a {type(loaded).__name__}, not a mapping of KEY: value")
    try:
        loaded = CfgNode(loaded)
    except (TypeError, ValueError, AssertionError, KeyError) as e:
        raise ConfigError(f"The config stored in {source} cannot be read: {type(e).__name__}: {e}") from e
    cfg._check_known(loaded, source=f"the config stored in {source}")
    try:
        cfg.merge_from_other_cfg(loaded)
    except ConfigError as e:
        raise ConfigError(f"The config stored in {source}: {e}") from e
    if overrides:
        cfg.merge_from_list(list(overrides))
    if freeze:
        cfg.freeze()
    return cfg


def save_config(cfg: _FvCfgNode, path: str) -> str:
    """Write the full resolved config (every key, not only the changed ones), atomically."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(cfg.dump())
    os.replace(tmp, path)
    return path
