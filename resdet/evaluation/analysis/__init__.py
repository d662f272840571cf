"""Evaluation that explains itself: TIDE's error types, COCO's analyze curves, a one-to-one confusion
matrix, per-class thresholds of best F1, the worst and best images, as analysis.json, PNG figures and
index.html (tools/analyze.py, tools/eval.py --analyze). resdet/DESIGN.md, "Evaluation analysis", has the
contracts; each module's docstring its definitions."""
from .analyze import ANALYSIS_FILE, analyze_results

__all__ = ["analyze_results", "ANALYSIS_FILE"]
