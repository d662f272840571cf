"""One torchrun worker of the distributed-fault tests (tests/engine/test_faults.py); not collected by pytest.

    torchrun --nproc_per_node=2 fault_worker.py OUTPUT_DIR SCENARIO

Trains tests/engine/tiny_run.py's model through resdet.engine, as a real script does, with a fault
injected on rank 1:
  raise   it raises RuntimeError at iteration 2 (not caught: the job must end)
  kill    it SIGKILLs itself at the start of iteration 4, after the iteration-3 checkpoint
  resume  no fault: continue OUTPUT_DIR's run from its newest checkpoint to the end; then, in the same
          process group (one launch instead of two), a new run in OUTPUT_DIR/nan whose loss on rank 1 is
          NaN at iteration 2: every rank records the error it stopped with and runs the other two-process
          checks (results gathered to rank 0 only, DDP buffer broadcasting, the detection model's DDP
          settings); each rank writes OUTPUT_DIR/nan/report<rank>.json and exits 0
Before injecting a fault the rank writes fault_time.json in the run's folder, so the test can time how
long the job (or the ranks) take to stop after it.
"""
import json
import os
import signal
import sys
import time

import torch
from torch import nn
from torch.distributed.elastic.multiprocessing.errors import record

# Run as a script, this folder (tests/engine) is on sys.path, so the shared tiny run imports directly.
from tiny_run import loss_fn, make_cfg, run

from resdet.engine import distributed as d
from resdet.engine import HookBase, prepare_model
from resdet.engine.checkpoint import atomic_write_text

SOLVER = dict(IMS_PER_BATCH=8, MAX_ITER=6, STEPS=(4,), CHECKPOINT_PERIOD=3)  # the test's reference uses them too
FAULT_RANK = 1


class InjectFault(HookBase):
    def __init__(self, scenario, output_dir):
        self.scenario, self.output_dir = scenario, output_dir
        self.nan_now = False

    def before_step(self):
        it = self.trainer.iter
        if d.get_rank() != FAULT_RANK:
            return
        due = {"nan": 2, "raise": 2, "kill": 4}.get(self.scenario)
        if it != due:
            return
        atomic_write_text(json.dumps({"time": time.time(), "iteration": it}), os.path.join(self.output_dir, "fault_time.json"))
        if self.scenario == "nan":
            self.nan_now = True
        elif self.scenario == "raise":
            raise RuntimeError("injected failure")
        elif self.scenario == "kill":
            os.kill(os.getpid(), signal.SIGKILL)


class WithBuffer(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 1)
        self.register_buffer("stat", torch.zeros(1))

    def forward(self, x):
        return self.lin(x) + 0 * self.stat


def _buffer_after_forward(cfg, **kw):
    """Rank r sets its buffer to r after DDP's construction; what is it after one forward/backward?"""
    model = prepare_model(WithBuffer(), cfg, torch.device("cpu"), **kw)
    model.module.stat.fill_(float(d.get_rank()))
    model(torch.ones(3, 2)).sum().backward()
    return model, float(model.module.stat)


def _two_process_checks(output_dir):
    from resdet.config import load_config
    from resdet.data.coco import load_coco_json
    from resdet.data.shapes import generate_shapes_dataset
    from resdet.evaluation.coco import COCOEvaluator
    from resdet.runs.train_det import build_model
    from tests.evaluation.test_coco_evaluator import _gt_as_outputs

    rank = d.get_rank()
    out = {"gathered": d.gather_object({"rank": rank})}
    cfg = make_cfg(output_dir)
    model, out["buffer_without_broadcast"] = _buffer_after_forward(cfg, broadcast_buffers=False)
    d.broadcast_buffers(model)  # what detection does before evaluating
    out["buffer_after_broadcast_buffers"] = float(model.module.stat)
    model_default, out["buffer_with_broadcast"] = _buffer_after_forward(cfg)
    det_cfg = load_config(os.path.join(os.path.dirname(__file__), "..", "..", "configs", "quickstart_shapes.yaml"),
                          ["MODEL.DEVICE", "cpu"])
    det = build_model(det_cfg, torch.device("cpu"))
    out["detection_syncs_buffers"] = d.syncs_buffers_every_step(det)
    out["default_syncs_buffers"] = d.syncs_buffers_every_step(model_default)

    # COCO evaluation: each rank scores half the images (ground truth as detections); rank 0 alone
    # receives both halves and scores all of them (AP 100 only if nothing was lost); rank 1 gets nothing
    json_path, image_dir = generate_shapes_dataset(os.path.join(output_dir, f"shapes{rank}"), "val", 4, seed=1,
                                                   size_range=(64, 96))
    records, meta = load_coco_json(json_path, image_dir, filter_empty=False)
    ev = COCOEvaluator(json_path, ("bbox",), meta.contiguous_to_dataset_id)
    for r in records[rank::2]:
        ev.process([{"image_id": torch.tensor(r["image_id"])}], [_gt_as_outputs(r)])
    gathered = ev._gather()
    out["evaluator_gathered_images"] = None if gathered[1] is None else sorted(gathered[1])
    metrics = ev.evaluate()
    out["bbox_AP"] = metrics["bbox"]["AP"] if metrics else None
    return out


@record
def main(output_dir: str, scenario: str) -> None:
    cfg = make_cfg(output_dir, **SOLVER)
    try:
        if scenario in ("raise", "kill"):
            run(cfg, dropout=0.0, distributed=True, hooks=[InjectFault(scenario, output_dir)])
            return
        assert scenario == "resume", scenario
        run(cfg, resume=True, dropout=0.0, distributed=True)

        nan_dir = os.path.join(output_dir, "nan")
        inject = InjectFault("nan", nan_dir)

        def loss(model, batch):
            losses = loss_fn(model, batch)
            return {k: v * float("nan") for k, v in losses.items()} if inject.nan_now else losses

        report = {"rank": d.get_rank()}
        try:
            run(make_cfg(nan_dir, **SOLVER), dropout=0.0, distributed=True, hooks=[inject], loss=loss)
        except FloatingPointError as e:
            report.update(error=str(e), stopped_at=time.time())
        report.update(_two_process_checks(nan_dir))
        atomic_write_text(json.dumps(report), os.path.join(nan_dir, f"report{d.get_rank()}.json"))
        d.synchronize()
    finally:
        d.cleanup()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
