"""One torchrun worker of the multi-node test (tests/engine/test_multinode.py); not collected by pytest.

    torchrun --nnodes=2 --node_rank=N --nproc_per_node=K ... multinode_worker.py OUTPUT_DIR

Trains tests/engine/tiny_run.py's model through resdet.engine exactly as a real script does
(`default_setup` joins the process group from torchrun's environment), then checks the rank helpers
against what torchrun set and gathers every process's identity for the test to inspect.
"""
import json
import os
import sys

# Run as a script, this folder (tests/engine) is on sys.path, so the shared tiny run imports directly.
from tiny_run import make_cfg, run

from resdet.engine import distributed as d
from resdet.engine.checkpoint import atomic_write_text

# The settings the single-process reference in the test uses too: global batch 6 over 3 processes.
SOLVER = dict(IMS_PER_BATCH=6, MAX_ITER=6, STEPS=(4,), CHECKPOINT_PERIOD=3)


def main(output_dir: str) -> None:
    env = {k: int(os.environ[k]) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK")}
    try:
        run(make_cfg(output_dir, **SOLVER), dropout=0.0, distributed=True)
        me = {"rank": d.get_rank(), "local_rank": d.get_local_rank(), "world_size": d.get_world_size(),
              "is_main": d.is_main_process(), "env": env}
        # the helpers must report the GLOBAL rank where torchrun's RANK and LOCAL_RANK differ
        assert me["rank"] == env["RANK"] and me["local_rank"] == env["LOCAL_RANK"], me
        everyone = d.all_gather_object(me)
        if d.is_main_process():
            atomic_write_text(json.dumps(everyone), os.path.join(output_dir, "processes.json"))
        d.synchronize()
    finally:
        d.cleanup()


if __name__ == "__main__":
    main(sys.argv[1])
