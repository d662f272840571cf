"""CLS.DATA.DECODE through the config: build_classification_data and a short training run."""
import os
import pickle

import pytest
import torch

from resdet.classification.data import build_classification_data
from resdet.config import load_config
from resdet.runs.train_cls import train_classifier

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


@pytest.fixture(scope="module")
def photo_tree(photos, tmp_path_factory):
    """<root>/{train,val}/<photo name>/<i>.jpg from the session's photographs (links, no copies)."""
    root = str(tmp_path_factory.mktemp("photo_tree"))
    for split in ("train", "val"):
        for path in photos.small_paths:
            cls = os.path.basename(os.path.dirname(path))
            os.makedirs(os.path.join(root, split, cls), exist_ok=True)
            os.symlink(path, os.path.join(root, split, cls, os.path.basename(path)))
    return root, len(os.listdir(os.path.join(root, "train")))


def _cfg(root, classes, out, **extra):
    opts = {"MODEL.DEVICE": "cpu", "SOLVER.AMP": "", "SOLVER.CHANNELS_LAST": False, "CLS.DATA.ROOT": root,
            "CLS.DATA.IN_MEMORY": False, "CLS.DATA.PER_PIXEL_MEAN": False, "CLS.DATA.TRAIN_SPLIT": "train",
            "CLS.DATA.TEST_SPLIT": "val", "CLS.INPUT.TRAIN_AUG": "rrc", "CLS.INPUT.CROP_SIZE": 224,
            "CLS.INPUT.TEST_SHORT_SIDE": 256, "CLS.INPUT.COLOR_AUG": "", "MODEL.CLASSIFIER.NUM_CLASSES": classes,
            "MODEL.PIXEL_MEAN": "(123.675, 116.28, 103.53)", "MODEL.PIXEL_STD": "(58.395, 57.12, 57.375)",
            "SOLVER.IMS_PER_BATCH": 4, "DATALOADER.NUM_WORKERS": 0, "CLS.TEST.TRAIN_SUBSET": 0, "OUTPUT_DIR": out}
    opts.update(extra)
    return load_config(os.path.join(REPO, "configs", "cifar10_resnet20.yaml"),
                       [str(x) for kv in opts.items() for x in kv])


def test_decode_cpu_and_gpu_give_the_same_training_batches(photo_tree, tmp_path):
    root, classes = photo_tree
    batches = {}
    for decode in ("cpu", "gpu", "pil"):
        cfg = _cfg(root, classes, str(tmp_path), **{"CLS.DATA.DECODE": decode, "SOLVER.CHANNELS_LAST": True})
        data = build_classification_data(cfg, torch.device("cpu"))
        torch.manual_seed(0)
        batches[decode] = next(iter(data.train_batches(0)))
    (cpu, ycpu), (gpu, ygpu), (pil, ypil) = batches["cpu"], batches["gpu"], batches["pil"]
    assert cpu.shape == gpu.shape == (4, 3, 224, 224) and cpu.dtype == gpu.dtype == torch.uint8
    assert cpu.is_contiguous(memory_format=torch.channels_last) and gpu.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(ycpu, ygpu) and torch.equal(ycpu, ypil)
    assert int((cpu.int() - gpu.int()).abs().max()) <= 1           # same boxes and flips, same filter
    # "pil": torchvision's v2 RandomResizedCrop + flip on PIL images: the same draws; PIL's resize rounds
    # its fixed-point weights a little differently from torch's uint8 kernel
    d = (cpu.int() - pil.int()).abs()
    assert int(d.max()) <= 2 and float(d.float().mean()) < 0.5, (int(d.max()), float(d.float().mean()))
    # with SOLVER.CHANNELS_LAST False the model gets NCHW batches
    data = build_classification_data(_cfg(root, classes, str(tmp_path)), torch.device("cpu"))
    torch.manual_seed(0)
    nchw, _ = next(iter(data.train_batches(0)))
    assert nchw.is_contiguous() and torch.equal(nchw, cpu)


def test_training_with_decode_cpu_and_picklable_datasets(photo_tree, tmp_path):
    from resdet.classification.data import _fast_train_dataset

    root, classes = photo_tree
    cfg = _cfg(root, classes, str(tmp_path), **{
        "CLS.DATA.DECODE": "cpu", "CLS.INPUT.CROP_SIZE": 32, "CLS.INPUT.TEST_SHORT_SIDE": 36,
        "CLS.INPUT.COLOR_AUG": "pca", "SOLVER.MAX_ITER": 2, "SOLVER.STEPS": "(1,)",
        "TEST.EVAL_PERIOD": 0, "SOLVER.CHECKPOINT_PERIOD": 0, "CLS.DATA.TEST_LIMIT": 4})
    results = train_classifier(cfg)
    assert results["test/num_samples"] == 4 and (tmp_path / "model_final.pth").is_file()
    # DataLoader workers started with "spawn" (macOS, Windows) receive the dataset pickled
    for decode in ("cpu", "gpu"):
        ds = pickle.loads(pickle.dumps(_fast_train_dataset(cfg, root, decode)))
        item, label = ds[0]
        assert label == 0 and (item.shape == (3, 32, 32) if decode == "cpu" else item.size == 32)


def test_decode_settings_are_checked(photo_tree, tmp_path):
    root, classes = photo_tree
    with pytest.raises(ValueError, match="CLS.DATA.DECODE must be"):
        build_classification_data(_cfg(root, classes, str(tmp_path), **{"CLS.DATA.DECODE": "nvjpeg"}), torch.device("cpu"))
    with pytest.raises(ValueError, match="supports CLS.INPUT.COLOR_AUG 'pca' or ''"):
        build_classification_data(_cfg(root, classes, str(tmp_path), **{"CLS.DATA.DECODE": "gpu",
                                                                         "CLS.INPUT.COLOR_AUG": "jitter"}),
                                  torch.device("cpu"))
