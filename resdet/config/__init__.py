from .config import CfgNode, ConfigError, flatten_keys, get_cfg, load_config, save_config

__all__ = ["CfgNode", "ConfigError", "flatten_keys", "get_cfg", "load_config", "save_config"]
