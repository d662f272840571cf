"""Checkpoints: atomic writes, exact resume, and a bounded number of files on disk.

    ckpt = Checkpointer(cfg.OUTPUT_DIR, model, optimizer, scheduler, scaler, max_keep=5, config=cfg)
    data = ckpt.resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)   # {} when starting fresh
    start_iter = data.get("iteration", 0)
    ...
    ckpt.save("model_0005000", iteration=5000, sampler=sampler.state_dict(consumed=5000 * batch))

One checkpoint is one dict: "model" (the plain module's state dict, unwrapped from DDP/compile),
"optimizer", "scheduler", "scaler", "iteration" (steps completed = the next step to run), "rng"
(every process's RNG states, a list indexed by rank), "config" (the resolved config as YAML text), and
whatever extra values `save` is given (e.g. "sampler"). Objects passed to the constructor as
`**extra_objects` (with state_dict/load_state_dict, e.g. an EMA model) are saved and restored too.

Files are written to a temporary file in the same folder, flushed, fsynced and renamed over the
target, so a crash never leaves a half-written checkpoint under the real name. `last_checkpoint`
names the newest one. Periodic files (`<prefix>_<iteration>.pth`) beyond the newest `max_keep` are
deleted. Checkpoints hold only tensors and plain values and are read with `weights_only=True`.

`save` must be called on every process (it gathers every rank's RNG state); only rank 0 writes.
"""
from __future__ import annotations

import logging
import os
import re
import tempfile
from typing import Any, Dict, Optional

import torch
from torch import nn

from ..utils.env import get_rng_state
from .distributed import all_gather_object, get_rank, get_world_size, is_main_process, unwrap_model

__all__ = ["CheckpointError", "atomic_save", "atomic_write_text", "load_checkpoint", "Checkpointer"]

logger = logging.getLogger(__name__)

LAST_CHECKPOINT = "last_checkpoint"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit the model; the message names the file."""


def _fsync_dir(folder: str) -> None:
    # The rename itself is only durable once the directory entry is on disk (POSIX); not on Windows.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: str, write_fn) -> str:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(folder)
    return path


def atomic_save(obj: Any, path: str) -> str:
    """torch.save to `path` through a temporary file + fsync + rename; no partial file on failure."""
    return _atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(text: str, path: str) -> str:
    return _atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def load_checkpoint(path: str, map_location: Any = "cpu") -> Dict[str, Any]:
    """Read a checkpoint (or plain state dict); a missing, truncated or foreign file names itself."""
    if not os.path.isfile(path):
        raise CheckpointError(f"Checkpoint file not found: '{path}'")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # zipfile / unpickling errors from a truncated or corrupt file
        raise CheckpointError(
            f"Checkpoint '{path}' ({os.path.getsize(path)} bytes) is truncated, corrupt or not a "
            f"tensors-only torch file: {type(e).__name__}: {e}"
        ) from e
    if not isinstance(data, dict):
        raise CheckpointError(f"Checkpoint '{path}' holds a {type(data).__name__}, expected a dict")
    return data


class Checkpointer:
    """Saves and restores the whole training state; see the module docstring."""

    def __init__(
        self,
        output_dir: str,
        model: nn.Module,
        optimizer: Optional[torch.optim.Optimizer] = None,
        scheduler: Optional[Any] = None,
        scaler: Optional[Any] = None,
        *,
        max_keep: int = 0,
        prefix: str = "model",
        config: Any = None,
        save_to_disk: Optional[bool] = None,
        **extra_objects: Any,
    ):
        """`max_keep` > 0 keeps only that many periodic checkpoints; `config` (a CfgNode or YAML
        text) is stored with each one; `save_to_disk` defaults to "main process only"."""
        if max_keep < 0:
            raise ValueError(f"max_keep must be >= 0 (0 keeps every checkpoint); got {max_keep}")
        self.output_dir = output_dir
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.scaler = scaler
        self.max_keep = max_keep
        self.prefix = prefix
        self.config_text = config if (config is None or isinstance(config, str)) else config.dump()
        self.save_to_disk = is_main_process() if save_to_disk is None else save_to_disk
        for name in extra_objects:
            if name in _RESERVED:
                raise ValueError(f"extra object name '{name}' is reserved for the checkpoint's own entries")
        self.extra_objects = extra_objects
        self._periodic = re.compile(rf"^{re.escape(prefix)}_(\d+)\.pth$")

    # ------------------------------------------------------------------ saving
    def _stateful(self) -> Dict[str, Any]:
        objs = {"optimizer": self.optimizer, "scheduler": self.scheduler, "scaler": self.scaler}
        objs.update(self.extra_objects)
        return {k: v for k, v in objs.items() if v is not None}

    def save(self, name: str, iteration: int, **extra: Any) -> Optional[str]:
        """Write `<output_dir>/<name>.pth` holding everything; returns the path (None off rank 0)."""
        rng = all_gather_object(get_rng_state())  # collective: every rank must call save
        if not self.save_to_disk:
            return None
        clash = set(extra) & (set(_RESERVED) | set(self.extra_objects))
        if clash:
            raise ValueError(f"save(): extra keys {sorted(clash)} clash with the checkpoint's own entries")
        data: Dict[str, Any] = {"model": unwrap_model(self.model).state_dict(), "iteration": int(iteration), "rng": rng}
        for key, obj in self._stateful().items():
            data[key] = obj.state_dict()
        if self.config_text is not None:
            data["config"] = self.config_text
        data.update(extra)
        path = os.path.join(self.output_dir, f"{name}.pth")
        atomic_save(data, path)
        atomic_write_text(os.path.basename(path) + "\n", os.path.join(self.output_dir, LAST_CHECKPOINT))
        logger.info("Saved checkpoint %s (iteration %d)", path, iteration)
        self._prune()
        return path

    def _prune(self) -> None:
        if self.max_keep <= 0:
            return
        periodic = []
        for fname in os.listdir(self.output_dir):
            m = self._periodic.match(fname)
            if m:
                periodic.append((int(m.group(1)), fname))
        for _, fname in sorted(periodic)[: -self.max_keep]:
            os.remove(os.path.join(self.output_dir, fname))
            logger.info("Removed old checkpoint %s (keeping the newest %d)", fname, self.max_keep)

    # ----------------------------------------------------------------- loading
    def latest(self) -> Optional[str]:
        """The checkpoint `last_checkpoint` names, or None if there is none."""
        pointer = os.path.join(self.output_dir, LAST_CHECKPOINT)
        if not os.path.isfile(pointer):
            return None
        with open(pointer, encoding="utf-8") as f:
            name = f.read().strip()
        path = os.path.join(self.output_dir, name)
        if not os.path.isfile(path):
            raise CheckpointError(f"'{pointer}' names '{name}', which does not exist in {self.output_dir}")
        return path

    def _latest_on_every_rank(self) -> Optional[str]:
        """`latest()`, checked to be the same checkpoint on every process.

        On several machines each process reads OUTPUT_DIR on its own machine. Unless that folder is
        shared, machine 0 (where rank 0 writes) resumes while the others start afresh: the ranks then
        run different numbers of steps and collectives, which hangs or silently diverges. So every rank
        reports what it found (gathered before anyone raises: a rank raising alone would leave the
        others blocked in the gather) and all raise the same error if they disagree.
        """
        try:
            latest, problem = self.latest(), None
        except CheckpointError as e:
            latest, problem = None, str(e)
        found = all_gather_object((os.path.basename(latest) if latest else None, problem))
        if len(set(found)) > 1:
            seen = "; ".join(f"rank {r}: {p or n or 'no checkpoint'}" for r, (n, p) in enumerate(found))
            raise CheckpointError(
                f"Resuming from {self.output_dir}: the processes do not see the same checkpoint ({seen}). "
                "On several machines OUTPUT_DIR must be a folder they all share (only rank 0 writes it)"
            )
        if problem:
            raise CheckpointError(problem)
        return latest

    def has_checkpoint(self) -> bool:
        return os.path.isfile(os.path.join(self.output_dir, LAST_CHECKPOINT))

    def load_model(self, path: str, strict: bool = True) -> Dict[str, Any]:
        """Load only the model weights (from a full checkpoint or a plain state dict); return the file's dict."""
        data = load_checkpoint(path)
        state = data["model"] if isinstance(data.get("model"), dict) else data
        bad = [k for k, v in state.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))]
        if bad:  # torch's load_state_dict fails on these with an AttributeError that names no file
            raise CheckpointError(f"Checkpoint '{path}' has model entries that are not tensors under names, e.g. "
                                  f"{[repr(k) for k in bad[:3]]}: not a state dict")
        model = unwrap_model(self.model)
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as e:  # shape mismatches are raised even with strict=False
            raise CheckpointError(f"Checkpoint '{path}' does not fit {type(model).__name__}: {e}") from e
        if strict and (missing or unexpected):
            raise CheckpointError(
                f"Checkpoint '{path}' does not fit {type(model).__name__}: missing keys {list(missing)[:10]}"
                f"{' ...' if len(missing) > 10 else ''}, unexpected keys {list(unexpected)[:10]}"
                f"{' ...' if len(unexpected) > 10 else ''}"
            )
        if missing or unexpected:
            logger.warning("Loading '%s': missing keys %s, unexpected keys %s", path, missing, unexpected)
        return data

    def load(self, path: str) -> Dict[str, Any]:
        """Restore model and every stateful object from `path`; return the rest of the checkpoint.

        The returned dict holds "iteration", "rng" (this process's RNG state, to be applied right
        before the first resumed step: see Trainer's `rng_state`) and any extra values.
        """
        data = self.load_model(path, strict=True)
        for key, obj in self._stateful().items():
            if key not in data:
                raise CheckpointError(f"Checkpoint '{path}' has no '{key}' state to resume from; it has {sorted(data)}")
            try:
                obj.load_state_dict(data[key])
            except Exception as e:
                raise CheckpointError(f"Checkpoint '{path}': cannot restore '{key}': {e}") from e
        rest = {k: v for k, v in data.items() if k not in ("model",) and k not in self._stateful()}
        rng = rest.get("rng")
        if isinstance(rng, list):
            if len(rng) == get_world_size():
                rest["rng"] = rng[get_rank()]
            else:
                logger.warning(
                    "Checkpoint '%s' was saved by %d processes, this run has %d: RNG states are not restored "
                    "exactly", path, len(rng), get_world_size()
                )
                rest["rng"] = None
        logger.info("Resumed from %s at iteration %s", path, rest.get("iteration"))
        return rest

    def resume_or_load(self, path: str = "", resume: bool = True) -> Dict[str, Any]:
        """With `resume` and a checkpoint in output_dir: restore all of it. Otherwise load the model
        weights from `path` if given (returning {} so training starts at iteration 0)."""
        if resume:
            latest = self._latest_on_every_rank()
            if latest is not None:
                return self.load(latest)
            logger.info("No checkpoint in %s to resume from; starting from iteration 0", self.output_dir)
        if path:
            self.load_model(path, strict=False)
        return {}


_RESERVED = ("model", "optimizer", "scheduler", "scaler", "iteration", "rng", "config")
