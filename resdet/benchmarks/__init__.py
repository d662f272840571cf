"""The benchmarks behind `tools/benchmark.py`: ours against a reference (torchvision's models, the standard
input pipeline, the eager model) on the same inputs in the same run, with the ratio.

One module per part: main.py (the command line; dispatches to the others), detection.py (detectors vs
torchvision), counts.py (synchronisations: host reads, blocking copies, NMS calls; aten ops per step),
nms.py (grouped NMS's branches on a model's own boxes), cifar.py (the CIFAR step: eager vs compiled /
CUDA graph), loader_imagenet.py and loader_coco.py (training input pipelines), exported.py (an exported
file vs its eager model), suite.py (`--suite gpu`: the acceptance run's driver) with suite_parts.py (its
parts, each run in a process of its own), and the inputs they share: photos.py (real photographs, never noise), coco_data.py (a COCO-style folder of them).

The room sits above the runs (it times their steps: runs.train_cls's loss, runs.cli's size parser);
nothing in resdet imports it but tools/benchmark.py.
"""
