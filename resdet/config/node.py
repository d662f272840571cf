"""resdet's CfgNode: fvcore's, with `_BASE_` inheritance and `KEY VALUE` overrides that fail by name.

fvcore already does YAML loading, `_BASE_` merging and type-checked overrides; what we add is the
error a user needs when something is wrong: the file that could not be found, the key that does not
exist (with the closest valid key), the key whose value has the wrong type. The defaults
(defaults.py) are built from this class, and config.py loads files into a copy of them.
"""
from __future__ import annotations

import ast
import difflib
import os
from typing import Iterable, List, Sequence

import yaml
from fvcore.common.config import CfgNode as _FvCfgNode

__all__ = ["CfgNode", "ConfigError", "flatten_keys"]


class ConfigError(ValueError):
    """A config file, key or value that cannot be used; the message names it."""


def flatten_keys(node: _FvCfgNode, prefix: str = "") -> List[str]:
    """All leaf keys of a config, as dotted names (`SOLVER.BASE_LR`)."""
    keys = []
    for k, v in node.items():
        name = f"{prefix}{k}"
        if isinstance(v, _FvCfgNode):
            keys.extend(flatten_keys(v, name + "."))
        else:
            keys.append(name)
    return keys


def _closest(key: str, valid: Iterable[str]) -> str:
    valid = list(valid)
    match = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    if not match:  # try the last component alone: `SOLVER.BASELR` -> `SOLVER.BASE_LR`
        last = {v.split(".")[-1]: v for v in valid}
        m = difflib.get_close_matches(key.split(".")[-1], list(last), n=1, cutoff=0.6)
        match = [last[m[0]]] if m else []
    return f" Did you mean '{match[0]}'?" if match else ""


class CfgNode(_FvCfgNode):
    """fvcore's CfgNode with errors that name the file, key and value at fault."""

    def merge_from_file(self, cfg_filename: str, allow_unsafe: bool = False) -> None:
        if not os.path.isfile(cfg_filename):
            raise ConfigError(f"Config file not found: '{cfg_filename}'")
        if allow_unsafe:
            raise ConfigError("allow_unsafe=True is not supported: configs are read with yaml.safe_load only")
        loaded = type(self)(read_yaml_with_base(cfg_filename))
        self._check_known(loaded, source=f"config file '{cfg_filename}'")
        try:
            self.merge_from_other_cfg(loaded)
        except ConfigError as e:
            raise ConfigError(f"In config file '{cfg_filename}': {e}") from e

    def _check_known(self, other: _FvCfgNode, source: str, prefix: str = "", valid=None) -> None:
        valid = flatten_keys(self) if valid is None else valid
        for k, v in other.items():
            name = f"{prefix}{k}"
            if not isinstance(k, str):
                raise ConfigError(f"Key {k!r} in {source} under '{prefix or '(top level)'}' is a "
                                  f"{type(k).__name__}; config keys are names")
            if k not in self:
                raise ConfigError(f"Unknown key '{name}' in {source}.{_closest(name, valid)}")
            if isinstance(v, _FvCfgNode):
                if not isinstance(self[k], _FvCfgNode):
                    raise ConfigError(f"Key '{name}' in {source} is a value, not a section")
                type(self)._check_known(self[k], v, source, name + ".", valid)

    def merge_from_list(self, cfg_list: Sequence) -> None:
        """`KEY VALUE` pairs from a command line; values are parsed as Python literals where they can be."""
        if len(cfg_list) % 2 != 0:
            raise ConfigError(
                f"Overrides must come as KEY VALUE pairs; got an odd number of items: {list(cfg_list)}"
            )
        valid = flatten_keys(self)
        for key, value in zip(cfg_list[0::2], cfg_list[1::2]):
            node = self
            parts = key.split(".")
            for p in parts[:-1]:
                if p not in node or not isinstance(node[p], _FvCfgNode):
                    raise ConfigError(f"Unknown key '{key}' on the command line.{_closest(key, valid)}")
                node = node[p]
            if parts[-1] not in node:
                raise ConfigError(f"Unknown key '{key}' on the command line.{_closest(key, valid)}")
            old = node[parts[-1]]
            new = _parse_value(value)
            node[parts[-1]] = _coerce(key, new, old)

    def merge_from_other_cfg(self, cfg_other: _FvCfgNode) -> None:
        try:
            super().merge_from_other_cfg(cfg_other)
        except ValueError as e:
            raise ConfigError(str(e)) from e
        except KeyError as e:
            raise ConfigError(f"Unknown key {e}") from e
        except (TypeError, AssertionError) as e:  # fvcore's checks of odd values (e.g. a list as a section)
            raise ConfigError(f"{type(e).__name__}: {e}") from e


BASE_KEY = "_BASE_"
MAX_BASE_DEPTH = 16


def _read_yaml_mapping(filename: str) -> dict:
    """One YAML file as a dict (an empty file is {}), or ConfigError naming the file."""
    try:
        with open(filename, "r", encoding="utf-8") as f:
            loaded = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(f"Cannot read config file '{filename}': {e}") from e
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError, ValueError) as e:
        raise ConfigError(f"Config file '{filename}' is not valid YAML: {type(e).__name__}: {e}") from e
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"Config file '{filename}' holds a {type(loaded).__name__}; a config is a mapping of "
                          "KEY: value")
    _check_key_names(loaded, filename)
    return loaded


def _check_key_names(node: dict, filename: str, prefix: str = "") -> None:
    """Every key of every section a string (fvcore's CfgNode fails on `1:` with a TypeError)."""
    for k, v in node.items():
        if not isinstance(k, str):
            raise ConfigError(f"Config file '{filename}': key {k!r} under '{prefix or '(top level)'}' is a "
                              f"{type(k).__name__}; config keys are names")
        if isinstance(v, dict):
            _check_key_names(v, filename, f"{prefix}{k}.")


def _merge_base(a: dict, b: dict, filename: str, prefix: str = "") -> None:
    """Merge dict `a` (a file) into dict `b` (its bases): sections merge, values replace."""
    for k, v in a.items():
        if isinstance(v, dict) and k in b:
            if not isinstance(b[k], dict):
                raise ConfigError(f"Config file '{filename}' makes '{prefix}{k}' a section, but its _BASE_ has "
                                  f"a value there ({b[k]!r})")
            _merge_base(v, b[k], filename, f"{prefix}{k}.")
        else:
            b[k] = v


def read_yaml_with_base(filename: str, _chain: Sequence[str] = ()) -> dict:
    """A YAML config as a dict, with its `_BASE_` files (a path or a list of paths, relative to the file,
    local files only) merged underneath. Written here instead of fvcore's load_yaml_with_base, which
    hands a `_BASE_` URL to iopath's path manager (a download wherever an HTTP handler is registered
    with it; none is by default), recurses until RecursionError on a file that is its own base, and
    fails with TypeError / AttributeError / AssertionError on a file that is not a mapping or a base that
    is not a path; every such case is a ConfigError naming the file."""
    here = os.path.realpath(filename)
    if here in _chain:
        raise ConfigError(f"Config file '{filename}' is its own _BASE_ (through {' -> '.join(_chain)})")
    if len(_chain) >= MAX_BASE_DEPTH:
        raise ConfigError(f"Config file '{filename}': _BASE_ chain longer than {MAX_BASE_DEPTH} files")
    cfg = _read_yaml_mapping(filename)
    if BASE_KEY not in cfg:
        return cfg
    bases = cfg.pop(BASE_KEY)
    bases = [bases] if isinstance(bases, str) else bases
    if not (isinstance(bases, list) and all(isinstance(b, str) and b for b in bases)):
        raise ConfigError(f"Config file '{filename}': _BASE_ must be a file name or a list of file names, got "
                          f"{cfg.get(BASE_KEY, bases)!r}")
    merged: dict = {}
    for base in bases:
        if "://" in base:
            raise ConfigError(f"Config file '{filename}' names the _BASE_ '{base}': only local files are read")
        path = os.path.join(os.path.dirname(filename), os.path.expanduser(base))
        if not os.path.isfile(path):
            raise ConfigError(f"Config file '{filename}' names a _BASE_ that does not exist: '{path}'")
        _merge_base(read_yaml_with_base(path, tuple(_chain) + (here,)), merged, path)
    _merge_base(cfg, merged, filename)
    return merged


def _parse_value(value):
    if not isinstance(value, str):
        return value
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):  # not a literal: the text itself
        return value


def _coerce(key: str, new, old):
    """Match the type of the default, as fvcore does, with a message that names the key."""
    if old is None or new is None or type(new) is type(old):
        return new
    if isinstance(old, float) and isinstance(new, int) and not isinstance(new, bool):
        return float(new)
    if isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)):
        return type(old)(new)
    if isinstance(old, (list, tuple)) and isinstance(new, (int, float, str)) and not isinstance(new, bool):
        return type(old)([new])
    raise ConfigError(
        f"Key '{key}' expects a value of type {type(old).__name__} (default {old!r}); "
        f"got {new!r} of type {type(new).__name__}"
    )
