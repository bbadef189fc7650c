"""Export stage (needs the ``export`` extra): checkpoint -> ONNX, precision variants, TensorRT engines."""

from __future__ import annotations

from mmdet_deploy.export.onnx_export import ExportOptions, ExportResult, artefact_paths, export_onnx
from mmdet_deploy.export.tracing import FEATURES, example_inputs
from mmdet_deploy.export.trt_op_report import TRT10_SUPPORTED_OPS, format_report, trt_compatibility

__all__ = [
    "FEATURES",
    "ExportOptions",
    "TRT10_SUPPORTED_OPS",
    "ExportResult",
    "artefact_paths",
    "example_inputs",
    "export_onnx",
    "format_report",
    "trt_compatibility",
]
