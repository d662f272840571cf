"""The training engine shared by classification and detection: loop, hooks, checkpoints, schedules, DDP.

See resdet/DESIGN.md ("Engine") and `resdet/engine/build.py` for how a training script uses it.
"""
from .build import TrainingState, build_trainer, build_training_state, default_setup, per_process_batch, prepare_model
from .checkpoint import Checkpointer, CheckpointError, atomic_save, atomic_write_text, load_checkpoint
from .distributed import (
    all_gather_object,
    broadcast_buffers,
    broadcast_object,
    gather_object,
    cleanup,
    get_local_rank,
    get_rank,
    get_world_size,
    init_distributed,
    is_distributed,
    is_main_process,
    reduce_dict,
    synchronize,
    unwrap_model,
    wrap_model,
)
from .hooks import EvalHook, MetricsLogger, PeriodicCheckpointer, ProgressHook, flatten_results
from .logging import MetricWriter, ProgressBar, read_metrics, setup_logger
from .plots import PlotHook, plot_training_curves
from .schedules import (
    WarmupCosineLR,
    WarmupMultiStepLR,
    build_lr_scheduler,
    build_optimizer,
    get_param_groups,
    make_optimizer,
    scaled_lr,
)
from .static_step import STEP_MODES, StaticStepTrainer
from .trainer import HookBase, Trainer, default_loss_fn, move_to_device
