"""INT8 that keeps its answers: calibration sets, Q/DQ quantisation, the accuracy gate, decision thresholds.

Modules (heavy libraries are imported inside functions, never here):

* :mod:`~mmdet_deploy.calibration.dataset`: calibration sets on disk (arrays + manifest + sha256, held-out split)
* :mod:`~mmdet_deploy.calibration.sampling`: sample a set from real media with the runtime's preprocessing
* :mod:`~mmdet_deploy.calibration.qdq`: which nodes get Q/DQ, and the float rule checked on the graph
* :mod:`~mmdet_deploy.calibration.quantize`: static INT8 Q/DQ with ONNX Runtime (or NVIDIA ModelOpt)
* :mod:`~mmdet_deploy.calibration.gate`: fp32 vs INT8 agreement, |d p(fake)|, cosine, JSON report
* :mod:`~mmdet_deploy.calibration.thresholds`: ROC/AUC in numpy, threshold for a target false-positive rate
* :mod:`~mmdet_deploy.calibration.scoring`: score a labelled folder with any backend, store the threshold
* :mod:`~mmdet_deploy.calibration.trt_calibrator`: TensorRT 10 entropy calibrator fed from a calibration set
"""
