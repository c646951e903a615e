"""Masked visual token modelling: the training objective of stage 2."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def mvtm_loss(model, tokens: torch.Tensor, mask: torch.Tensor, mask_token: int, label_smoothing: float = 0.0):
    """Replace the masked tokens (`mask`, bool like `tokens`; `model.masking.training_mask` draws MVTM's)
    with the mask token and predict them; cross-entropy on the masked tokens only.

    Returns (loss, masked-token accuracy, number of masked tokens), all tensors. The loss is a masked
    mean over every position rather than a gather of the masked ones, so no shape depends on the
    mask and the GPU never waits for the host.
    """
    inputs = torch.where(mask, mask_token, tokens)
    logits = model(inputs).float()
    per_token = F.cross_entropy(logits.transpose(1, 2), tokens, label_smoothing=label_smoothing, reduction="none")
    weight = mask.float()
    count = weight.sum()
    loss = (per_token * weight).sum() / count
    accuracy = ((logits.argmax(-1) == tokens).float() * weight).sum() / count
    return loss, accuracy, count
