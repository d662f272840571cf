"""The runs: what the command-line tools do, one module each, above the model rooms.

train_det.py (tools/train_det.py), train_cls.py (tools/train_cls.py), evaluate.py (tools/eval.py),
benchmark.py (tools/benchmark.py, with one module per kind of measurement: benchmark_det.py, ...).
A run may import any room below it (models, evaluation, predictor, engine, data, backbones, config);
nothing below imports a run.
"""
