"""Structure-aware mutations for the readers of structured files (JSON, YAML, torch checkpoints).

Byte-level mutation of a JSON file mostly makes invalid JSON, which the readers reject in their first
line; the interesting inputs are valid files with wrong values in the right places. `mutate_tree`
decodes nothing itself: it edits a Python value (a parsed JSON document, a checkpoint dict) in place
of choices drawn from a `Choices` object, so the same mutations run under two engines:
- atheris' custom mutator (RandomChoices over a seed libFuzzer gives; coverage decides what is kept);
- hypothesis (HypothesisChoices over `st.data()`: values from strategies that favour boundaries, and
  hypothesis shrinks a failing sequence of edits).
"""
from __future__ import annotations

import copy
import math
import random
import sys
from typing import Any, List, Sequence, Tuple

# Values that have broken parsers before: boundaries of C integer types, non-finite floats, wrong types.
SPECIAL_NUMBERS = [0, -1, 1, 2, 3, 255, 256, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1, 2 ** 32, 2 ** 53 + 1, 2 ** 63 - 1,
                   2 ** 63, 2 ** 64, -2 ** 31, -2 ** 63, 10 ** 30, 4294967295.0, 1e308, -1e308, 1e-320, 0.5, -0.0,
                   math.inf, -math.inf, math.nan, True, False]
SPECIAL_STRINGS = ["", "a", "\x00", "../../etc/passwd", "/dev/zero", "\ud800".encode("utf-8", "surrogatepass").decode(
    "utf-8", "replace"), "0", "1e5", "nan", "[]", "{}", "\u202e", "x" * 300]


class Choices:
    def integer(self, lo: int, hi: int) -> int:
        raise NotImplementedError

    def choice(self, seq: Sequence[Any]) -> Any:
        return seq[self.integer(0, len(seq) - 1)]

    def value(self, depth: int = 0) -> Any:
        """A JSON-like value: special numbers and strings, small containers."""
        kind = self.integer(0, 9 if depth < 2 else 5)
        if kind <= 2:
            return self.choice(SPECIAL_NUMBERS)
        if kind == 3:
            return self.integer(-1000, 100000)
        if kind == 4:
            return self.choice(SPECIAL_STRINGS)
        if kind == 5:
            return None
        if kind <= 7:
            return [self.value(depth + 1) for _ in range(self.integer(0, 4))]
        return {self.choice(["id", "bbox", "segmentation", "counts", "size", "image_id", "category_id", "iscrowd",
                             "area", "height", "width", "file_name", "name", "_BASE_", "model", "state_dict",
                             "meta", "format", "kind"]): self.value(depth + 1) for _ in range(self.integer(0, 3))}


class RandomChoices(Choices):
    def __init__(self, seed: int):
        self.rng = random.Random(seed)

    def integer(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)


class HypothesisChoices(Choices):
    """Draws through hypothesis (`data` is st.data()'s object), so that failing edits shrink."""

    def __init__(self, data):
        from hypothesis import strategies as st

        self.data, self.st = data, st

    def integer(self, lo: int, hi: int) -> int:
        return self.data.draw(self.st.integers(lo, hi))

    def value(self, depth: int = 0) -> Any:
        st = self.st
        leaves = st.one_of(st.sampled_from(SPECIAL_NUMBERS), st.integers(), st.floats(allow_nan=True),
                           st.sampled_from(SPECIAL_STRINGS), st.text(max_size=8), st.none(), st.booleans())
        return self.data.draw(st.recursive(leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
            st.sampled_from(["id", "bbox", "segmentation", "counts", "size", "image_id", "category_id", "iscrowd",
                             "area", "height", "width", "file_name", "name", "_BASE_", "model", "meta"]), inner,
            max_size=3), max_leaves=6))


def _paths(tree: Any, limit: int = 4000) -> List[Tuple[Any, Any]]:
    """(container, key) for every value inside `tree` (lists by index, dicts by key), breadth first."""
    out: List[Tuple[Any, Any]] = []
    queue = [tree]
    while queue and len(out) < limit:
        node = queue.pop(0)
        if isinstance(node, dict):
            items = list(node.items())
        elif isinstance(node, list):
            items = list(enumerate(node))
        else:
            continue
        for k, v in items:
            out.append((node, k))
            queue.append(v)
    return out


def mutate_tree(tree: Any, choices: Choices, edits: int = 0, leaf: Any = None) -> Any:
    """`tree` (a deep copy) with 1-4 edits: replace a value, delete an entry, duplicate a list item (so
    ids repeat), copy a value to another place, swap two values, grow a number, or nest a value deeper.
    `leaf(choices)`, if given, makes replacement values of the tree's own kind (e.g. tensors)."""
    tree = copy.deepcopy(tree)
    for _ in range(edits or choices.integer(1, 4)):
        paths = _paths(tree)
        if not paths:
            return choices.value()
        node, key = choices.choice(paths)
        op = choices.integer(0, 8)
        if op <= 2:
            node[key] = leaf(choices) if leaf is not None and choices.integer(0, 2) == 0 else choices.value()
        elif op == 3:
            del node[key]
        elif op == 4 and isinstance(node, list):
            node.insert(key, copy.deepcopy(node[key]))
        elif op == 5:
            other, other_key = choices.choice(paths)
            try:
                node[key] = copy.deepcopy(other[other_key])
            except (KeyError, IndexError):
                pass
        elif op == 6:
            other, other_key = choices.choice(paths)
            try:
                node[key], other[other_key] = other[other_key], node[key]
            except (KeyError, IndexError):
                pass
        elif op == 7:
            v = node[key]
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                node[key] = choices.choice([v * 1000, -v, v + 1, v - 1, v * 2 ** 20, v / 3])
            else:
                node[key] = [v]
        else:
            node[key] = choices.choice([[node[key]], {"counts": node[key]}, str(node[key])[:50]])
    return tree


def mutate_text(text: str, choices: Choices) -> str:
    """A few line-level edits of a text file (YAML): drop, duplicate or swap lines, change indentation."""
    lines = text.split("\n")
    for _ in range(choices.integer(1, 3)):
        if not lines:
            lines = [""]
        i = choices.integer(0, len(lines) - 1)
        op = choices.integer(0, 4)
        if op == 0:
            del lines[i]
        elif op == 1:
            lines.insert(i, lines[i])
        elif op == 2:
            j = choices.integer(0, len(lines) - 1)
            lines[i], lines[j] = lines[j], lines[i]
        elif op == 3:
            lines[i] = "  " + lines[i]
        else:
            lines[i] = lines[i].lstrip()
    return "\n".join(lines)


def int_seed(data: bytes) -> int:
    return int.from_bytes(data[:8].ljust(8, b"\0"), "little") ^ len(data) ^ (sys.hash_info.width << 7)
