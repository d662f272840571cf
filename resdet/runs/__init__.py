"""The runs: what the command-line tools do, one module each, above the model rooms.

train_det.py (tools/train_det.py), train_cls.py (tools/train_cls.py), evaluate.py (tools/eval.py),
analyze.py (tools/analyze.py), export.py (tools/export.py), reproduce.py (tools/reproduce.py), cli.py (how
every tool ends). The benchmarks (tools/benchmark.py) have a room of their own above this one:
resdet/benchmarks/.
A run may import any room below it (models, evaluation, predictor, engine, data, backbones, config);
nothing below imports a run.
"""
