"""Masked visual token modelling: the training objective of stage 2."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from model.masking import mvtm_mask


def mvtm_loss(model, tokens: torch.Tensor, mask_token: int, schedule: str = "cosine", generator=None,
              label_smoothing: float = 0.0, mask: torch.Tensor | None = None):
    """Mask ceil(γ(r)·N) random tokens per sample, predict them; cross-entropy on masked tokens only.

    Returns (loss, masked-token accuracy, number of masked tokens).
    """
    if mask is None:
        mask = mvtm_mask(tokens.shape[0], tokens.shape[1], schedule, generator, tokens.device)
    inputs = torch.where(mask, mask_token, tokens)
    logits = model(inputs)
    picked, target = logits[mask].float(), tokens[mask]
    loss = F.cross_entropy(picked, target, label_smoothing=label_smoothing)
    accuracy = (picked.argmax(-1) == target).float().mean()
    return loss, accuracy, int(mask.sum())
