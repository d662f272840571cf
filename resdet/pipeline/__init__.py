"""Inference on folders, videos, cameras and streams at the model's speed (tools/predict.py): the input
sources, the threaded pipeline (decode workers, batched model calls, draw/write workers, bounded queues,
frames in order, per-stage times) and its outputs. Built on the predictor (one floor below)."""
