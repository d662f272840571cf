from .config import get_cfg, load_config, save_config
from .node import CfgNode, ConfigError, flatten_keys

__all__ = ["CfgNode", "ConfigError", "flatten_keys", "get_cfg", "load_config", "save_config"]
