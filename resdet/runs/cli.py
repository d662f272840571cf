"""How every tool ends: user errors as one clear line, internal errors with their traceback.

    # tools/<x>.py
    from resdet.runs.cli import run_tool
    from resdet.runs.train_det import main
    sys.exit(run_tool(main))

A user error is a problem with what the user gave: a config key or value (ConfigError), a file or
folder that is not there (FileNotFoundError, MissingDatasetError), a dataset (CocoFormatError,
ImageFileError, CorruptImageError, an unknown dataset name), a checkpoint (CheckpointError, e.g.
"the checkpoint has 3 classes, MODEL.ROI_HEADS.NUM_CLASSES is 80") or a device this machine does not
have. Their messages name the key, file or value, so the traceback only hides them: `run_tool` prints
"error: <message>" on stderr and exits with status 1. `--debug` (anywhere on the command line) or
RESDET_DEBUG=1 raises them with the traceback instead. Anything else is an internal error and keeps its
traceback. `main(argv)` functions themselves raise as usual (tests and Python callers see the
exceptions); only the command line goes through here.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, List, Optional, Sequence, Tuple

from resdet.config import ConfigError
from resdet.data.catalog import UnknownDatasetError
from resdet.data.coco import ImageFileError
from resdet.data.coco_validation import CocoFormatError
from resdet.data.folders import CorruptImageError, MissingDatasetError
from resdet.engine.checkpoint import CheckpointError
from resdet.utils.env import DeviceError
from resdet.utils.errors import UserInputError

__all__ = ["USER_ERRORS", "DEBUG_ENV", "run_tool", "is_debug", "image_size"]

# FileNotFoundError covers MissingDatasetError and the package's "... not found: '<path>'" errors, and
# Python's own (whose message names the path too).
USER_ERRORS = (ConfigError, CheckpointError, CocoFormatError, ImageFileError, CorruptImageError,
               MissingDatasetError, FileNotFoundError, NotADirectoryError, UnknownDatasetError, DeviceError,
               UserInputError)
DEBUG_ENV = "RESDET_DEBUG"


def is_debug(argv: Sequence[str] = ()) -> bool:
    return "--debug" in argv or os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _rank_prefix() -> str:
    world = os.environ.get("WORLD_SIZE", "1")
    return f"[rank {os.environ.get('RANK', '0')}] " if world not in ("", "1") else ""


def run_tool(main: Callable[[List[str]], object], argv: Optional[Sequence[str]] = None) -> int:
    """Run `main(argv)` (argv without `--debug`) and return the exit status for sys.exit."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = is_debug(argv)
    argv = [a for a in argv if a != "--debug"]
    try:
        result = main(argv)
    except USER_ERRORS as e:
        if debug:
            raise
        message = str(e)
        if isinstance(e, FileNotFoundError) and e.filename and str(e.filename) not in message:
            message = f"{message}: '{e.filename}'"
        print(f"{_rank_prefix()}error: {message}", file=sys.stderr)
        print(f"(add --debug or set {DEBUG_ENV}=1 to see where it happened)", file=sys.stderr)
        return 1
    if isinstance(result, int) and not isinstance(result, bool):
        return result
    return 0


def image_size(text: str) -> Tuple[int, int]:
    """argparse type of the tools' size options: "N" (square) or "HxW", sides of at least 32 px."""
    try:
        parts = [int(v) for v in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 32:
        raise argparse.ArgumentTypeError(f"expected N or HxW (e.g. 256 or 800x1216) with sides >= 32; got {text!r}")
    return parts[0], parts[1]
