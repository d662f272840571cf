"""Run an ExportedProgram (.pt2) the way a consumer without resdet does: torch, torchvision and the file.

    python run_pt2_without_resdet.py MODEL.pt2 INPUTS.pt OUTPUTS.pt

INPUTS.pt is a list of (images, image_sizes) pairs; OUTPUTS.pt gets a list of output tuples and the
metadata read from the file's extra file. Any attempt to import resdet fails here (a meta-path finder
refuses it), so the test that launches this proves the file needs nothing of resdet.
"""
import importlib.abc
import json
import sys


class _NoResdet(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "resdet" or name.startswith("resdet."):
            raise ImportError(f"{name} is deliberately not importable in this process")
        return None


sys.meta_path.insert(0, _NoResdet())

import torch  # noqa: E402
import torchvision  # noqa: E402,F401  (registers torchvision::nms and torchvision::roi_align)


def main(model_path, inputs_path, outputs_path):
    try:
        import resdet  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("resdet is importable: the check would prove nothing")
    extra = {"resdet.json": ""}
    program = torch.export.load(model_path, extra_files=extra)
    module = program.module()
    outs = []
    with torch.no_grad():
        for images, sizes in torch.load(inputs_path):
            outs.append(tuple(o.clone() for o in module(images, sizes)))
    torch.save({"outputs": outs, "metadata": json.loads(extra["resdet.json"]),
                "modules": sorted(m for m in sys.modules if m.split(".")[0] == "resdet")}, outputs_path)


if __name__ == "__main__":
    main(*sys.argv[1:4])
