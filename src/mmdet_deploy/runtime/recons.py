"""Where the model's ``recons`` input comes from.

MM-Det compares each frame with its reconstruction by a VQ-VAE (model-spec section 9). The seed pipeline,
and therefore this runtime by default, feeds the original frames again (:class:`IdentityReconstruction`).
A reconstruction model plugs in here: it receives every full-resolution decoded frame *before* any crop,
and the same crop / resize is then applied to the original and to its reconstruction. A source may also
change the original (the official pipeline stores it as a JPEG before either image is read) and may compute
only the region a crop keeps (:meth:`ReconstructionSource.region_pair`), as the VQ-VAE source does with the
crop-with-margin method (:mod:`mmdet_deploy.runtime.recons_vqvae`).

``VQVAEReconstructor`` (the exported VQ-VAE, no torch) is importable from here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from mmdet_deploy.runtime import frame_sampling
from mmdet_deploy.runtime.vqvae import VQVAEReconstructor
from mmdet_deploy.runtime.vqvae_contract import RECONS_MODES
from mmdet_deploy.runtime.vqvae_geometry import center_span, pad_crop


class ReconstructionSource(ABC):
    """Maps one RGB uint8 frame (H, W, 3) to its reconstruction, same shape and dtype.

    Implementations must be safe to call from several worker threads at once.
    """

    #: Short name recorded in logs.
    name: str = ""
    #: The ``recons`` mode of :data:`~mmdet_deploy.runtime.vqvae_contract.RECONS_MODES` this source provides.
    mode: str = "original"

    @property
    def is_identity(self) -> bool:
        """True when ``reconstruct`` returns its input unchanged (lets callers share one array)."""
        return False

    @abstractmethod
    def reconstruct(self, frame: np.ndarray) -> np.ndarray: ...

    def full_pair(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(original, reconstruction) of the whole frame, both (H, W, 3) uint8; the original is the frame
        unless the source models a storage step (a JPEG round trip) that the reference applies to it."""
        return frame, self.reconstruct(frame)

    def region_pair(
        self, frame: np.ndarray, rows: tuple[int, int], cols: tuple[int, int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(original, reconstruction) cut to frame rows ``rows[0]:rows[1]`` and columns ``cols[0]:cols[1]``.

        Equal to cutting :meth:`full_pair`'s images (that is the default); a source may compute only what the
        region depends on. When the two are the same array, the same object is returned twice.
        """
        original, recon = self.full_pair(frame)
        cut = (slice(*rows), slice(*cols))
        region = original[cut]
        return region, region if recon is original else recon[cut]

    def center_pair(self, frame: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
        """torchvision ``CenterCrop(size)`` (zero padding where a side is shorter) of both images of the pair."""
        rows, cols = center_span(frame.shape[0], size), center_span(frame.shape[1], size)
        original, recon = self.region_pair(frame, (rows.start, rows.stop), (cols.start, cols.stop))
        out = pad_crop(original[None], rows, cols)[0]
        return out, out if recon is original else pad_crop(recon[None], rows, cols)[0]

    def box_pair(self, frame: np.ndarray, box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Both images cut to an ``(x0, y0, x1, y1)`` box inside the frame (the faces preset's crop)."""
        x0, y0, x1, y1 = box
        return self.region_pair(frame, (y0, y1), (x0, x1))

    def describe(self) -> dict[str, Any]:
        """What ``run.json`` records about the ``recons`` input."""
        return {"mode": self.mode, "source": self.name}


class IdentityReconstruction(ReconstructionSource):
    """The seed's choice: the reconstruction of a frame is the frame itself."""

    name = "identity"
    mode = "original"

    @property
    def is_identity(self) -> bool:
        return True

    def reconstruct(self, frame: np.ndarray) -> np.ndarray:
        return frame

    def center_pair(self, frame: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
        out = frame_sampling.center_crop(frame, size)
        return out, out


__all__ = ["RECONS_MODES", "IdentityReconstruction", "ReconstructionSource", "VQVAEReconstructor"]
