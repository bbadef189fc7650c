"""The lean runtime: media discovery, frame sampling, face crops, batched inference, results.

Importing this package never imports torch, tensorrt or onnx (a test proves it).
"""
