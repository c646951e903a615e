"""What a user gets without a model: the grey-hole input itself and classical OpenCV inpainting."""
from __future__ import annotations

import numpy as np


def opencv_inpaint(masked: np.ndarray, mask64: np.ndarray, method: str, radius: int = 3) -> np.ndarray:
    """Telea or Navier-Stokes inpainting of every image; mask64 uses 0 = hole."""
    import cv2  # imported here: only the evaluation and the tokens' prefill need OpenCV

    flag = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}[method]
    holes = (mask64 == 0).astype(np.uint8) * 255
    return np.stack([cv2.inpaint(img, hole, radius, flag) for img, hole in zip(masked, holes)])


def prefilled(masked: np.ndarray, mask64: np.ndarray, prefill: str) -> np.ndarray:
    """Masked images as the VQGAN encoder is to see them: grey, as given; telea or ns, the holes first
    filled by OpenCV. The encoder's receptive field spans the image (its attention at 16x16 too), so grey
    holes change the tokens of known patches as well; a fill leaves more of them the image's own, which on
    the CPU lowered the raw decode's FID but not the composite's, and both when only the decoder got them
    (`tokens.decode_prefill`; docs/studies.md)."""
    return masked if prefill == "grey" else opencv_inpaint(masked, mask64, prefill)


def hole_psnr(pred: np.ndarray, gt: np.ndarray, mask64: np.ndarray) -> float:
    """PSNR over the hole pixels only, all images pooled."""
    holes = mask64 == 0
    diff = pred[holes].astype(np.float64) - gt[holes].astype(np.float64)
    return float(10 * np.log10(255.0**2 / max(np.mean(diff**2), 1e-10)))
