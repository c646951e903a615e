"""MaskGIT iterative decoding for inpainting, vectorised over a batch whose holes differ.

Step t = 1 … T: predict every masked token, score each prediction by its confidence plus Gumbel noise
scaled by `choice_temperature`·(1 − t/T), and keep the n_i = ceil(γ(t/T)·N_i) least confident masked for
the next step, where N_i is image i's initial masked count. Known tokens never change. The confidence is
the predicted token's probability (`lab`, the lab template's) or its log-probability (`maskgit`, as
google-research/maskgit's `parallel_decode.py`). With `order="halton"` the same counts are committed in the
order of a 2-D Halton sequence instead (model.decoding_order), with no noise. Each image draws its noise from
its own generator, so its decoding does not depend on the batch it is decoded in.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from model.choices import CONFIDENCES, ORDERS
from model.decoding_order import halton_priority
from model.mask_schedule import mask_schedule


@dataclass
class DecodeResult:
    tokens: torch.Tensor        # (B, 256) final tokens: known ones kept, holes filled
    masks: torch.Tensor         # (steps + 1, B, 256) bool: still masked before step 1 … after the last
    predictions: torch.Tensor   # (steps, B, 256) the full predicted token map at every step


def masked_counts(n_initial: torch.Tensor, t: int, T: int, schedule: str) -> torch.Tensor:
    """n_i = ceil(γ(t/T)·N_i): how many tokens stay masked after step t."""
    gamma = mask_schedule(torch.tensor(t / T, dtype=torch.float64), schedule)
    return torch.ceil(gamma * n_initial.double() - 1e-9).long()


def image_generators(seed: int, serials, device) -> list[torch.Generator]:
    """One noise generator per image, seeded by the decode `seed` and the image's serial number (mixed by
    numpy's SeedSequence into the 32 bits the CPU generator keeps)."""
    return [torch.Generator(device=device).manual_seed(int(np.random.SeedSequence([seed, int(s)]).generate_state(1)[0]))
            for s in serials]


def gumbel_noise(generators: list, steps: int, n: int, device) -> torch.Tensor:
    """Gumbel(0, 1) noise (steps, B, n): image i's from `generators[i]`, drawn for all its steps at once."""
    u = torch.stack([torch.rand(steps, n, generator=g, device=device) for g in generators], dim=1)
    return -torch.log(-torch.log(u.clamp(1e-20, 1 - 1e-7)))


def confidence(probability: torch.Tensor, noise: torch.Tensor, scale: float, form: str = "lab") -> torch.Tensor:
    """The score that ranks the predictions: `lab` p + scale·g, `maskgit` log p + scale·g."""
    base = torch.log(probability.clamp_min(1e-30)) if form == "maskgit" else probability
    return base + scale * noise


@torch.no_grad()
def iterative_decode(predict, tokens: torch.Tensor, mask: torch.Tensor, *, T: int, schedule: str = "cosine",
                     sweet_spot: int = 0, mask_token: int, num_codes: int, choice_temperature: float = 4.5,
                     temperature: float = 0.0, confidence_form: str = "lab", order: str = "confidence",
                     generators: list[torch.Generator] | None = None) -> DecodeResult:
    """Inpaint the masked tokens.

    Args:
      predict: callable, tokens (B, N) with mask_token at masked positions → logits (B, N, V).
      tokens: (B, N) long, the encoded masked images (values at masked positions are ignored).
      mask: (B, N) bool, True where a token is to be generated.
      T: total iterations; γ is evaluated at t/T.
      schedule: mask schedule name (see mask_schedule).
      sweet_spot: stop after this many steps (0 = T) and fill what is still masked with the last prediction.
      mask_token, num_codes: the mask token id and the codebook size (predictions are codebook entries only).
      choice_temperature: scale of the Gumbel noise on the confidence, annealed by (1 − t/T).
      temperature: 0 picks the argmax token; > 0 samples at that temperature.
      confidence_form: `lab` (probability) or `maskgit` (log-probability) under the noise.
      order: `confidence` commits the highest scores; `halton` the masked positions a Halton sequence
        reaches first.
      generators: one per image (`image_generators`), so a configuration reproduces exactly whatever the
        batch; None draws from torch's global generator.
    """
    assert T >= 1 and 0 <= sweet_spot <= T and confidence_form in CONFIDENCES and order in ORDERS, \
        (T, sweet_spot, confidence_form, order)
    steps = sweet_spot or T
    generators = generators or [None] * len(tokens)  # None: torch's global generator
    noise = gumbel_noise(generators, steps, tokens.shape[1], tokens.device)
    still = mask.clone()
    n_initial = mask.sum(1)
    current = torch.where(still, mask_token, tokens)
    masks, predictions = [still.clone()], []
    halton = halton_priority(tokens.shape[1]).to(tokens.device).expand(len(tokens), -1) if order == "halton" else None
    for t in range(1, steps + 1):
        logits = predict(current)[..., :num_codes].float()
        probs = torch.softmax(logits, dim=-1)
        if temperature > 0:
            sampling = torch.softmax(logits / temperature, -1)
            chosen = torch.stack([torch.multinomial(sampling[i], 1, generator=g).squeeze(-1)
                                  for i, g in enumerate(generators)])
        else:
            chosen = logits.argmax(-1)
        predicted = torch.where(still, chosen, current)
        predictions.append(predicted.clone())

        probability = probs.gather(-1, chosen[..., None]).squeeze(-1)
        if halton is None:
            score = confidence(probability, noise[t - 1], choice_temperature * (1 - t / T), confidence_form)
        else:
            score = halton
        score = torch.where(still, score, math.inf)   # only masked tokens compete
        n_masked = still.sum(1)
        keep = torch.minimum(masked_counts(n_initial, t, T, schedule), (n_masked - 1).clamp_min(0))
        ranks = score.argsort(dim=1).argsort(dim=1)
        still = ranks < keep[:, None]
        current = torch.where(still, mask_token, predicted)
        masks.append(still.clone())
    final = torch.where(still, predictions[-1], current)
    return DecodeResult(final, torch.stack(masks), torch.stack(predictions))
