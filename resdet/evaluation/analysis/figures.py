"""The report's PNG figures, drawn with matplotlib's object API on Agg canvases (pyplot's global state
is never touched, so the analysis can run inside training or a notebook).

Sizes and fonts are chosen for a laptop screen at 100% zoom: text at least 9 pt at 110 dpi, legends
outside the data, every axis labelled, the numbers behind each bar or band written on it.
"""
from __future__ import annotations

import math
import os
from typing import Dict, Optional, Sequence

import numpy as np

from .error_types import ERROR_TYPES, SPECIAL_TYPES
from .pr_bands import BANDS, PRBands

__all__ = ["BAND_COLORS", "ERROR_COLORS", "save_error_types", "save_pr_bands", "save_pr_bands_per_category",
           "save_confusion", "save_thresholds"]

DPI = 110
# bands from the best (C75) to the ideal (FN): dark to light, the confusions warm, background red
BAND_COLORS = {"C75": "#1b4f72", "C50": "#2e86c1", "Loc": "#76d7c4", "Sim": "#f7dc6f", "Oth": "#f0a04b",
               "BG": "#cb4335", "FN": "#d5d8dc"}
# error types, shared with the gallery's drawings (RGB)
ERROR_COLORS = {"Cls": (230, 126, 34), "Loc": (241, 196, 15), "Both": (155, 89, 182), "Dupe": (52, 152, 219),
                "Bkg": (231, 76, 60), "Miss": (236, 64, 160), "FalsePos": (120, 120, 120),
                "FalseNeg": (120, 120, 120)}
AREA_TITLES = {"all": "all sizes", "small": "small (< 32²)", "medium": "medium (32²-96²)", "large": "large (> 96²)"}


def _figure(width: float, height: float, layout: Optional[str] = "constrained"):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=DPI, pil_kwargs={"compress_level": 1})  # zlib's fastest: PNG size barely matters here
    return path


def _rgb(c):
    return tuple(v / 255 for v in c)


def save_error_types(overall: Dict[str, float], iou_type: str, fg: float, path: str) -> str:
    """Bars of each error type's dAP (left) and the two special types (right)."""
    fig = _figure(9.5, 3.2)
    left, right = fig.subplots(1, 2, width_ratios=[3, 1.3])
    for ax, names, title in ((left, ERROR_TYPES, "Error types: AP gained if fixed"),
                             (right, SPECIAL_TYPES, "All false pos. / all misses")):
        values = [overall[n] for n in names]
        y = np.arange(len(names))[::-1]
        ax.barh(y, values, color=[_rgb(ERROR_COLORS[n]) for n in names], edgecolor="#333333", linewidth=0.6)
        ax.set_yticks(y, names, fontsize=10)
        top = max([v for v in values if not math.isnan(v)] + [1.0])
        ax.set_xlim(0, top * 1.25)
        for yy, v in zip(y, values):
            ax.text(v + top * 0.02, yy, "n/a" if math.isnan(v) else f"{v:.2f}", va="center", fontsize=9.5)
        ax.set_xlabel(f"dAP (AP{int(round(fg * 100))} points)", fontsize=10)
        ax.set_title(title, fontsize=11)
        ax.tick_params(axis="x", labelsize=9)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"{iou_type}: AP{int(round(fg * 100))} = {overall['AP']:.1f}", fontsize=12, fontweight="bold")
    return _save(fig, path)


def _bands_axes(ax, bands: PRBands, a: int, k: Optional[int], legend: bool, small: bool = False) -> None:
    from resdet.evaluation.analysis.matching import RECALL_THRESHOLDS as R

    below = np.zeros(len(R))
    handles = []
    for band in BANDS:
        c = bands.mean_curve(band, a, k)
        if c is None:
            continue
        h = ax.fill_between(R, below, np.maximum(c, below), color=BAND_COLORS[band], linewidth=0,
                            label=f"[{c.mean():.3f}] {band}")
        ax.plot(R, np.maximum(c, below), color="#333333", linewidth=0.5)
        handles.append(h)
        below = np.maximum(c, below)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.0)
    if small:
        ax.set_xticks([0, 0.5, 1], ["0", ".5", "1"], fontsize=7)
        ax.set_yticks([0, 0.5, 1], ["0", ".5", "1"], fontsize=7)
    else:
        ax.set_xlabel("recall", fontsize=10)
        ax.set_ylabel("precision", fontsize=10)
        ax.tick_params(labelsize=9)
    if legend and handles:
        ax.legend(handles=handles[::-1], loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=9, frameon=False)


def save_pr_bands(bands: PRBands, iou_type: str, path: str, sim_note: Optional[str] = None) -> str:
    """The overall analyze curves, one panel per area range, each with its legend of band APs."""
    fig = _figure(12, 6.4)
    axes = fig.subplots(2, 2)
    for a, ax in zip(range(len(bands.areas)), axes.ravel()):
        area = bands.areas[a]
        c = bands.mean_curve("C75", a)
        ax.set_title(f"{iou_type}, {AREA_TITLES.get(area, area)}", fontsize=11)
        if c is None:
            ax.text(0.5, 0.5, "no objects of this size", ha="center", va="center", fontsize=11,
                    transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        _bands_axes(ax, bands, a, None, legend=True)
    if sim_note:  # where it is seen first (and inside the figure, which a note below it would not be)
        fig.suptitle(sim_note, fontsize=11, color="#7b241c")
    return _save(fig, path)


def save_pr_bands_per_category(bands: PRBands, names: Sequence[str], iou_type: str, path: str, area: str = "all",
                               columns: int = 8) -> str:
    """Small multiples: one category per panel (area range `area`), titled with its C75 and C50 AP.

    All panels are drawn in one Axes, each band of every panel one polygon of one PolyCollection per band:
    80 matplotlib Axes (one per COCO category) take some 30 s to lay out and draw on a loaded core, this
    about one."""
    from matplotlib.collections import LineCollection, PolyCollection
    from matplotlib.patches import Patch

    from resdet.evaluation.analysis.matching import RECALL_THRESHOLDS as R

    a = list(bands.areas).index(area)
    K = len(names)
    cols = min(columns, max(K, 1))
    rows = max(1, int(math.ceil(K / cols)))
    gap_x, gap_y = 0.12, 0.42        # between panels, in panel units (room for two lines of title)
    width = max(8.0, 1.7 * cols + 0.4)  # room for the title and the legend with a few categories too
    fig = _figure(width, 1.75 * rows + 1.0, layout=None)
    top = 1.0 - 0.75 / (1.75 * rows + 1.0)     # 0.75 inch for the title
    ax = fig.add_axes((0.01, 0.45 / (1.75 * rows + 1.0), 0.98, top - 0.45 / (1.75 * rows + 1.0)))
    polys = {b: [] for b in BANDS}
    frames, texts = [], []
    for k in range(K):
        r, c = divmod(k, cols)
        x0, y0 = c * (1 + gap_x), (rows - 1 - r) * (1 + gap_y)
        frames.append([(x0, y0), (x0 + 1, y0), (x0 + 1, y0 + 1), (x0, y0 + 1), (x0, y0)])
        if bands.mean_curve("C75", a, k) is None:
            texts.append((x0 + 0.5, y0 + 1.04, f"{names[k]}\n(no objects)"))
            continue
        texts.append((x0 + 0.5, y0 + 1.04,
                      f"{names[k]}\nC75 {bands.ap('C75', a, k) / 100:.2f}  C50 {bands.ap('C50', a, k) / 100:.2f}"))
        below = np.zeros(len(R))
        for b in BANDS:
            curve = bands.mean_curve(b, a, k)
            if curve is None:
                continue
            top = np.maximum(curve, below)
            polys[b].append(np.concatenate([np.stack([R + x0, below + y0], 1),
                                            np.stack([R[::-1] + x0, top[::-1] + y0], 1)]))
            below = top
    for b in BANDS:
        if polys[b]:
            ax.add_collection(PolyCollection(polys[b], facecolors=BAND_COLORS[b], edgecolors="none"))
    ax.add_collection(LineCollection(frames, colors="#555555", linewidths=0.6))
    for x, y, t in texts:
        ax.text(x, y, t, ha="center", va="bottom", fontsize=8)
    span = max(cols * (1 + gap_x) - gap_x, (width - 0.4) / 1.7 * (1 + gap_x) - gap_x)  # few panels: keep their size
    ax.set_xlim(-0.02, span + 0.02)
    ax.set_ylim(-0.02, rows * (1 + gap_y) - 0.05)
    ax.set_axis_off()
    handles = [Patch(color=BAND_COLORS[b], label=b) for b in BANDS if bands.precision[b] is not None]
    fig.legend(handles=handles, loc="lower center", ncols=len(handles), fontsize=9, frameon=False)
    fig.suptitle(f"{iou_type} per category ({AREA_TITLES.get(area, area)})\neach panel: precision 0-1 (up) against "
                 f"recall 0-1 (right)", fontsize=10.5, y=1.0 - 0.08 / (1.75 * rows + 1.0), va="top")
    return _save(fig, path)


def confusion_subset(matrix: np.ndarray, max_classes: int = 25) -> np.ndarray:
    """The classes to draw: all when they fit, else the `max_classes` most confused with others (objects
    taken for another class plus detections of it taken for another class's objects), in label order."""
    K = matrix.shape[0] - 1
    if K <= max_classes:
        return np.arange(K)
    inner = matrix[:K, :K].copy()
    np.fill_diagonal(inner, 0)
    confused = inner.sum(axis=0) + inner.sum(axis=1)
    order = np.lexsort((np.arange(K), -confused))
    return np.sort(order[:max_classes])


def save_confusion(matrix: np.ndarray, names: Sequence[str], iou_type: str, iou: float, score_note: str,
                   path: str, max_classes: int = 25) -> str:
    """Rows: objects' classes (+ background), columns: detections' classes (+ background); colour: the
    share of the row, numbers: counts. Beyond `max_classes` classes only the most confused are drawn (the
    labels of 80 classes are unreadable at a laptop's width; the whole matrix is in analysis.json)."""
    K = len(names)
    keep = confusion_subset(matrix, max_classes)
    idx = np.r_[keep, K]
    shown = matrix[np.ix_(idx, idx)]
    labels = [names[k] for k in keep] + ["background"]
    n = len(labels)
    rows = matrix[idx].sum(axis=1, keepdims=True)  # shares of the whole row, drawn or not
    share = np.divide(shown, rows, out=np.zeros(shown.shape, float), where=rows > 0)
    side = max(5.5, 0.36 * n + 2.8)
    fig = _figure(side + 1.3, side)
    ax = fig.subplots()
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    font = 10 if n <= 12 else 9
    ax.set_xticks(range(n), labels, rotation=55, ha="right", rotation_mode="anchor", fontsize=font)
    ax.set_yticks(range(n), labels, fontsize=font)
    ax.set_xlabel("detected as", fontsize=10.5)
    ax.set_ylabel("object's class", fontsize=10.5)
    for i in range(n):
        for j in range(n):
            if shown[i, j]:
                ax.text(j, i, str(int(shown[i, j])), ha="center", va="center", fontsize=font - 1,
                        color="white" if share[i, j] > 0.55 else "black")
    title = f"{iou_type}: one-to-one confusion at IoU >= {iou:g},\n{score_note}"
    if len(keep) < K:
        title += f"\n(the {len(keep)} of {K} classes most confused with others; all in analysis.json)"
    ax.set_title(title, fontsize=10.5)
    cb = fig.colorbar(im, ax=ax, shrink=0.6)
    cb.set_label("share of the row (the object's class)", fontsize=9.5)
    return _save(fig, path)


def save_thresholds(grid: np.ndarray, curves: np.ndarray, best: np.ndarray, best_f1: np.ndarray,
                    names: Sequence[str], overall: Sequence[float], iou_type: str, path: str) -> str:
    """Left: each class's F1 against the score threshold, its best marked; right: all classes together
    (precision, recall, F1) with the best single threshold."""
    K = len(names)
    fig = _figure(12, 4.4)
    left, right = fig.subplots(1, 2)
    many = K > 10
    for k in range(K):
        if np.all(np.isnan(curves[k, 2])):
            continue
        kw = {"color": "#7f8c8d", "linewidth": 0.7, "alpha": 0.6} if many else {"linewidth": 1.6, "label": names[k]}
        line, = left.plot(grid, curves[k, 2], **kw)
        if not np.isnan(best[k]):
            left.plot([best[k]], [best_f1[k]], "o", color=line.get_color(), markersize=4 if many else 6)
    left.set_title("F1 of each class (dots: its best threshold)" if not many else
                   f"F1 of each of the {K} classes (dots: best thresholds)", fontsize=11)
    if not many and K:
        left.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)
    for name, row, color in (("precision", 0, "#2e86c1"), ("recall", 1, "#27ae60"), ("F1", 2, "#c0392b")):
        right.plot(grid, curves[K, row], label=name, color=color, linewidth=2)
    t, p, r, f = overall
    if not math.isnan(t):
        right.axvline(t, color="#555555", linestyle="--", linewidth=1)
        right.text(t, 0.03, f" best single threshold {t:g}\n F1 {f:.2f} (P {p:.2f}, R {r:.2f})", fontsize=9,
                   va="bottom")
    right.set_title("All classes together", fontsize=11)
    right.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)
    for ax in (left, right):
        ax.set_xlabel("score threshold (a detection counts if its score is at least this)", fontsize=9.5)
        ax.set_ylim(0, 1.02)
        ax.set_xlim(grid[0], grid[-1])
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=9)
    fig.suptitle(f"{iou_type}: precision, recall and F1 against the score threshold", fontsize=12,
                 fontweight="bold")
    return _save(fig, path)
