"""Inference backends, one file each; see :mod:`mmdet_deploy.runtime.backends.base`."""

from mmdet_deploy.runtime.backends.base import BACKENDS, Backend, backend_class, create_backend, softmax_fake

__all__ = ["BACKENDS", "Backend", "backend_class", "create_backend", "softmax_fake"]
