"""Where the model's ``recons`` input comes from.

MM-Det compares each frame with its reconstruction by a VQ-VAE (model-spec section 9). The seed pipeline,
and therefore this runtime by default, feeds the original frames again (:class:`IdentityReconstruction`).
A real reconstruction model plugs in here: it receives every full-resolution decoded frame *before* any
crop, and the same crop / resize is then applied to the original and to its reconstruction.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class ReconstructionSource(ABC):
    """Maps one RGB uint8 frame (H, W, 3) to its reconstruction, same shape and dtype.

    Implementations must be safe to call from several worker threads at once.
    """

    #: Short name recorded in logs.
    name: str = ""

    @property
    def is_identity(self) -> bool:
        """True when ``reconstruct`` returns its input unchanged (lets callers share one array)."""
        return False

    @abstractmethod
    def reconstruct(self, frame: np.ndarray) -> np.ndarray: ...


class IdentityReconstruction(ReconstructionSource):
    """The seed's choice: the reconstruction of a frame is the frame itself."""

    name = "identity"

    @property
    def is_identity(self) -> bool:
        return True

    def reconstruct(self, frame: np.ndarray) -> np.ndarray:
        return frame
