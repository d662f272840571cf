"""In-memory image-folder data decodes only the images a run uses (CLS.DATA.TRAIN_LIMIT / TEST_LIMIT /
HOLDOUT), and picks exactly the images that decoding everything and indexing would."""
import torch

import resdet.data.folders as folders
from resdet.classification.data import _fixed_subset, build_classification_data
from resdet.data.folders import ImageFolderDataset, decode_image_folder, split_holdout
from tests.classification.helpers import make_image_tree
from tests.runs.test_train_cls import cfg_for


def test_limits_decode_only_the_images_used_and_the_same_ones(tmp_path, monkeypatch):
    root = make_image_tree(tmp_path / "data", {"train": 16, "test": 6}, num_classes=3)
    cfg = cfg_for(root, str(tmp_path / "out"), **{"CLS.DATA.TRAIN_LIMIT": 10, "CLS.DATA.HOLDOUT": 6,
                                                  "CLS.DATA.TEST_LIMIT": 5, "CLS.TEST.TRAIN_SUBSET": 4})
    reads = []
    real = folders.read_image_rgb
    monkeypatch.setattr(folders, "read_image_rgb", lambda p: reads.append(p) or real(p))
    data = build_classification_data(cfg, torch.device("cpu"))
    assert len(set(reads)) == 10 + 6 + 5          # not 48 + 18
    assert data.num_train == 10 and set(data.eval_sets) == {"val", "test", "train"}

    full_x, full_y = decode_image_folder(ImageFolderDataset(root, "train"))
    test_x, test_y = decode_image_folder(ImageFolderDataset(root, "test"))
    keep, held = split_holdout(48, 6)
    keep = keep[_fixed_subset(len(keep), 10)]
    val = next(iter(data.eval_sets["val"]()))
    assert torch.equal(val[0], full_x[held].float()) and torch.equal(val[1], full_y[held])
    test = next(iter(data.eval_sets["test"]()))
    t = _fixed_subset(18, 5)
    assert torch.equal(test[0], test_x[t].float()) and torch.equal(test[1], test_y[t])
    train = next(iter(data.eval_sets["train"]()))
    sub = keep[_fixed_subset(10, 4)]
    assert torch.equal(train[0], full_x[sub].float()) and torch.equal(train[1], full_y[sub])
