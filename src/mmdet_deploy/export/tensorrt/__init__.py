"""TensorRT engines: build (:mod:`.builder`), version differences (:mod:`.compat`), sidecars (:mod:`.sidecar`).

Importing this package never imports ``tensorrt``, ``onnx`` or CUDA; they load when a build starts.
"""

from mmdet_deploy.export.tensorrt.builder import BuildOptions, BuildResult, build_engine
from mmdet_deploy.export.tensorrt.sidecar import EngineSidecar, check_compatible, read_sidecar, sidecar_path

__all__ = [
    "BuildOptions",
    "BuildResult",
    "EngineSidecar",
    "build_engine",
    "check_compatible",
    "read_sidecar",
    "sidecar_path",
]
