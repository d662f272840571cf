from .config import get_cfg, load_config, load_config_text, save_config
from .node import CfgNode, ConfigError, flatten_keys

__all__ = ["CfgNode", "ConfigError", "flatten_keys", "get_cfg", "load_config", "load_config_text", "save_config"]
