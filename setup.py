"""resdet: object detection and instance segmentation on the ResNet family."""
from setuptools import find_packages, setup

setup(
    name="resdet",
    version="0.1.0",
    description="ResNet backbones (He et al. 2015), Faster/Mask R-CNN with FPN, and their training tools",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["resdet", "resdet.*"]),
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "pycocotools>=2.0.6",
        # headless build only: albumentations pulls it, and a second cv2 package would overwrite it
        "opencv-python-headless>=4.8",
        "albumentations>=1.4",
        # libjpeg-turbo in one call, at reduced DCT scales too: the training inputs' JPEG reads
        # (resdet/data/jpeg.py; PIL is the fallback when it is missing)
        "simplejpeg>=1.6",
        "timm>=0.9",
        "fvcore>=0.1.5",
        "numpy",
        "pyyaml",
        "tqdm",
        "tensorboard",
        "matplotlib",
    ],
    extras_require={
        # faster-coco-eval: the optional TEST.COCO_EVAL_BACKEND; in dev so the test comparing it with
        # pycocotools runs
        "fast-eval": ["faster-coco-eval>=1.6"],
        # scikit-image: the photographs the loader benchmarks read (resdet/benchmarks/photos.py), never
        # imported at run time
        "bench": ["scikit-image>=0.21"],
        # tools/export.py: ONNX through torch.onnx.export(dynamo=True) (onnxscript), run by onnxruntime; the
        # ExportedProgram format needs only torch. In dev so the export tests run in CI.
        "export": ["onnx>=1.16", "onnxscript>=0.3", "onnxruntime>=1.18"],
        # tests/fuzz: coverage-guided fuzzing of every reader of user files (atheris: libFuzzer for Python;
        # wheels for Linux x86-64, elsewhere the harnesses fall back to hypothesis alone) and the
        # structure-aware strategies (hypothesis). In dev so the short fuzz run in the test suite covers
        # every harness.
        "fuzz": ["atheris>=2.3; platform_system == 'Linux' and platform_machine == 'x86_64'", "hypothesis>=6.100"],
        # pytest-xdist: the README's test command runs the suite on every core (-n auto --dist loadfile)
        "dev": ["pytest>=7", "pytest-xdist>=3.5", "faster-coco-eval>=1.6", "scikit-image>=0.21", "onnx>=1.16", "onnxscript>=0.3",
                "onnxruntime>=1.18", "atheris>=2.3; platform_system == 'Linux' and platform_machine == 'x86_64'",
                "hypothesis>=6.100"],
    },
)
