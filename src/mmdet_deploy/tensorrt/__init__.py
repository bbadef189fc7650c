"""Engine support shared by build and run: TensorRT version differences (:mod:`.compat`), engine sidecars
(:mod:`.sidecar`), CUDA device selection (:mod:`.gpu`) and CUDA memory, streams and graphs (:mod:`.cuda_memory`).

Both :mod:`mmdet_deploy.export.tensorrt` (builds engines) and :mod:`mmdet_deploy.runtime.backends.tensorrt`
(runs them) import from here, never from each other. Nothing here imports ``tensorrt`` or CUDA at import time.
"""
