#!/usr/bin/env python
r"""Draw what the model is trained on: a config's training images after its augmentation (resize or
large-scale jitter, crop and padding, flip), with their boxes and masks, in one picture per batch.

    python tools/show_augmentation.py configs/new_baselines/mask_rcnn_r50_fpn_100ep_lsj.yaml \\
        --batches 2 --batch-size 8 --output output/augmentation [KEY VALUE ...]

Look at it before a long run: boxes on their objects, masks inside their boxes, padding where an image was
smaller than the crop. Writes <output>/batch_<k>.png and prints each path.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("--batches", type=int, default=2, help="pictures to draw")
    p.add_argument("--batch-size", type=int, default=8, help="images per picture")
    p.add_argument("--output", default="output/augmentation")
    p.add_argument("--seed", type=int, default=0, help="augmentation and image-order seed")
    # KEY VALUE overrides anywhere after the config (the flags may come after them too)
    args, opts = p.parse_known_args(argv)
    bad = [o for o in opts[::2] if o.startswith("--")]
    if bad or len(opts) % 2:
        p.error(f"unknown option(s) {bad}" if bad else f"config overrides come as KEY VALUE pairs; got {opts}")
    if args.batches < 1 or args.batch_size < 1:
        raise SystemExit(f"--batches and --batch-size must be >= 1; got {args.batches}, {args.batch_size}")

    import numpy as np

    from resdet.config import load_config
    from resdet.data.catalog import register_from_config
    from resdet.data.loader import load_train_records
    from resdet.data.transforms import DetectionMapper
    from resdet.utils.visualize import draw_instances, make_grid_image, save_image

    cfg = load_config(args.config, opts)
    register_from_config(cfg)
    records, meta = load_train_records(cfg.DATASETS.TRAIN, cfg.DATASETS.FILTER_EMPTY_ANNOTATIONS, "none",
                                       instances_without_mask="ignore" if cfg.MODEL.MASK_ON else "keep")
    mapper = DetectionMapper(**DetectionMapper.from_config(cfg, is_train=True))
    mapper.augmentation.set_random_seed(args.seed)
    order = np.random.default_rng(args.seed).permutation(len(records))
    paths = []
    for k in range(args.batches):
        drawn = []
        for i in range(args.batch_size):
            image, target = mapper(records[int(order[(k * args.batch_size + i) % len(records)])])
            drawn.append(draw_instances(image, target, meta.thing_classes))
        paths.append(save_image(make_grid_image(drawn, nrow=4), os.path.join(args.output, f"batch_{k}.png")))
        print(paths[-1])
    return paths


if __name__ == "__main__":
    from resdet.runs.cli import run_tool

    sys.exit(run_tool(main))
