"""Exported files as untrusted input (issue 21): an ExportedProgram archive whose pickles hold more than
tensors is refused before torch.export.load (which has no safe mode) could run it; metadata that is not
what tools/export.py writes is an ExportedFileError naming the file."""
import io
import json
import os
import pickle
import zipfile

import pytest
import torch

from resdet.export.runtime import ExportedFileError, check_pt2_pickles, load_exported, read_metadata


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(x.flatten(1)[:, :3]) + torch.tensor([1.0, 2.0])


class _RunsCode:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


META = {"kind": "classifier", "format": "exported-program", "device": "cpu", "class_names": ["a", "b"]}


@pytest.fixture
def archive(tmp_path):
    path = str(tmp_path / "tiny.pt2")
    torch.manual_seed(0)
    ep = torch.export.export(_Tiny(), (torch.zeros(1, 3, 2, 2),))
    torch.export.save(ep, path, extra_files={"resdet.json": json.dumps(META)})
    return path


def _replace_member(path, suffix, data):
    with zipfile.ZipFile(path) as z:
        members = [(i.filename, z.read(i.filename)) for i in z.infolist()]
    with zipfile.ZipFile(path, "w") as z:
        for name, body in members:
            z.writestr(name, data if name.endswith(suffix) else body)


def test_a_pt2_written_by_torch_export_loads(archive):
    check_pt2_pickles(archive)
    model = load_exported(archive)
    assert read_metadata(archive)["kind"] == "classifier"
    x = torch.arange(12.0).reshape(1, 3, 2, 2)
    torch.manual_seed(0)
    assert torch.allclose(model(x), _Tiny()(x))


def test_a_pt2_whose_sample_inputs_run_code_is_refused_before_torch_export_load(archive, tmp_path):
    marker = tmp_path / "ran"
    _replace_member(archive, "sample_inputs/model.pt", pickle.dumps(_RunsCode(f"touch {marker}")))
    try:  # what torch.export.load does by itself with such a file: the command runs, then it fails
        torch.export.load(archive)
    except Exception:
        pass
    assert marker.exists()
    marker.unlink()
    with pytest.raises(ExportedFileError, match=r"its member '.*sample_inputs/model.pt' holds more than tensors"):
        load_exported(archive)
    assert not marker.exists()


def test_a_pt2_with_pickled_weights_that_run_code_or_custom_objects_is_refused(archive, tmp_path):
    with zipfile.ZipFile(archive) as z:
        config_name = next(n for n in z.namelist() if n.endswith("_weights_config.json"))
        config = json.loads(z.read(config_name))
    fqn = next(iter(config["config"]))
    config["config"][fqn]["use_pickle"] = True
    weight = config["config"][fqn]["path_name"]
    _replace_member(archive, config_name, json.dumps(config).encode())
    _replace_member(archive, f"data/weights/{weight}", pickle.dumps(_RunsCode(f"touch {tmp_path / 'ran'}")))
    with pytest.raises(ExportedFileError, match=rf"data/weights/{weight}' holds more than tensors"):
        check_pt2_pickles(archive)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("m/data/constants/custom_obj_0", b"\x80\x02N.")
    other = tmp_path / "custom.pt2"
    other.write_bytes(buf.getvalue())
    with pytest.raises(ExportedFileError, match="custom or opaque object"):
        check_pt2_pickles(str(other))
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize("sidecar, expected", [
    (b"\xff\xfe not text", "Cannot read the resdet metadata of"),
    (b"[1, 2]", "is a list, expected a JSON object"),
    (b'{"kind": "detector"}', "has no 'format' string"),
    (b"[" * 100000, "Cannot read the resdet metadata of"),
])
def test_metadata_that_tools_export_did_not_write_is_named(tmp_path, sidecar, expected):
    model = tmp_path / "model.bin"
    model.write_bytes(b"not an archive")
    (tmp_path / "model.bin.json").write_bytes(sidecar)
    with pytest.raises(ExportedFileError, match=expected) as e:
        read_metadata(str(model))
    assert str(tmp_path) in str(e.value)
    onnx_file = tmp_path / "broken.onnx"
    onnx_file.write_bytes(b"\x08\x07\x12\xff\xff\xff")
    with pytest.raises(ExportedFileError, match="broken.onnx"):
        read_metadata(str(onnx_file))
