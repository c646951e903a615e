"""The names of the methods `model/` implements, each list beside the module that dispatches on it.

Torch-free, so that the parameter schema offers exactly these choices without importing torch into every
stage's process.
"""
from __future__ import annotations

import re

SCHEDULES = ("cosine", "linear", "square", "cubic", "sqrt", "log", "exp")  # model.mask_schedule, and pow<k>:
POWER_SCHEDULE = re.compile(r"pow(\d+(?:\.\d+)?)")                       # γ = 1 − r^k, k > 0
RESAMPLES = ("conv", "patch")        # model.vqgan: VQGANConfig.resample
POS_INITS = ("normal", "sincos")     # model.transformer: TransformerConfig.pos_init
TOK_INITS = ("normal", "codebook")   # model.mvtm: new_transformer, given a codebook or not
CONFIDENCES = ("lab", "maskgit")     # model.iterative_decode: what the Gumbel noise is added to
BLENDS = ("paste", "poisson")        # model.blend: blender
PREFILLS = ("grey", "telea", "ns")   # model.baselines: grey as given, or OpenCV's inpainting first
ORDERS = ("confidence", "halton")    # model.iterative_decode: which masked tokens a step commits
MASK_KINDS = ("brush", "box", "outpaint", "mix")  # model.masking.generated_masks: a generated test set's holes


def is_schedule(name) -> bool:
    """Whether `name` is a mask schedule: one of SCHEDULES, or pow<k> with k > 0 (so that γ(0) = 1)."""
    if not isinstance(name, str):
        return False
    power = POWER_SCHEDULE.fullmatch(name)
    return name in SCHEDULES or power is not None and float(power.group(1)) > 0
