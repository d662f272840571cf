"""Evaluation that explains itself: error types, the COCO analyze curves, a one-to-one confusion matrix,
per-class thresholds, the worst and best images, as analysis.json, PNG figures and index.html."""
