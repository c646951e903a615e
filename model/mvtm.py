"""Masked visual token modelling: the training objective of stage 2."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from model.masking import mvtm_mask


def mvtm_loss(model, tokens: torch.Tensor, mask_token: int, schedule: str = "cosine", generator=None,
              label_smoothing: float = 0.0, mask: torch.Tensor | None = None):
    """Mask ceil(γ(r)·N) random tokens per sample, predict them; cross-entropy on masked tokens only.

    Returns (loss, masked-token accuracy, number of masked tokens), all tensors. The loss is a masked
    mean over every position rather than a gather of the masked ones, so no shape depends on the
    mask and the GPU never waits for the host.
    """
    if mask is None:
        mask = mvtm_mask(tokens.shape[0], tokens.shape[1], schedule, generator, tokens.device)
    inputs = torch.where(mask, mask_token, tokens)
    logits = model(inputs).float()
    per_token = F.cross_entropy(logits.transpose(1, 2), tokens, label_smoothing=label_smoothing, reduction="none")
    weight = mask.float()
    count = weight.sum()
    loss = (per_token * weight).sum() / count
    accuracy = ((logits.argmax(-1) == tokens).float() * weight).sum() / count
    return loss, accuracy, count
