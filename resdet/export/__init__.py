"""Export and deployment: Faster / Mask R-CNN and classifiers as ONNX or torch.export files, and the
runtimes that run them (see resdet/DESIGN.md, "Export")."""
from .detection import ExportableRCNN
from .exporter import (FORMATS, ONNX_OPSET, ExportError, ExportSpec, build_metadata, classifier_spec,
                       detector_spec, export_aoti, export_onnx, export_program)
from .runtime import (ExportedClassifier, ExportedDetector, ExportedFileError, load_exported, paste_detections,
                      read_metadata)

__all__ = ["ExportableRCNN", "FORMATS", "ONNX_OPSET", "ExportError", "ExportSpec", "build_metadata",
           "classifier_spec", "detector_spec", "export_aoti", "export_onnx", "export_program",
           "ExportedClassifier", "ExportedDetector", "ExportedFileError", "load_exported", "paste_detections",
           "read_metadata"]
