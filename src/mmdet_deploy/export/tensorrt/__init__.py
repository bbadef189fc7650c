"""TensorRT engine builds (:mod:`.builder`): ONNX -> ``model.engine`` + its sidecar.

Version differences, sidecars and GPU selection are shared with the runtime and live in the neutral
:mod:`mmdet_deploy.tensorrt` package. Importing this package never imports ``tensorrt``, ``onnx`` or CUDA;
they load when a build starts.
"""

from mmdet_deploy.export.tensorrt.builder import BuildOptions, BuildResult, build_engine

__all__ = ["BuildOptions", "BuildResult", "build_engine"]
