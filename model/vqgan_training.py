"""How stage 1 learns: a plain-autoencoder warm-up, then reconstruction + codebook losses, a delayed
PatchGAN with the adaptive generator weight and feature matching, a codebook kept alive by
(re)initialising entries from encoder outputs, and an optional last phase that trains the decoder alone
on final tokens (`freeze_tokenizer`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from model.vqgan import VQGAN, Discriminator


def adaptive_weight(rec_loss, g_loss, last_layer: torch.Tensor, scale: float) -> torch.Tensor:
    """λ = scale · ‖∇rec‖ / ‖∇gan‖ at the decoder's last layer (Esser et al.), so the GAN term
    never overwhelms reconstruction."""
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    return (rec_grad.norm() / (g_grad.norm() + 1e-4)).clamp(0.0, 1e4).detach() * scale


def hinge_d_loss(real_logits, fake_logits):
    return 0.5 * (F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean())


def generator_forward(model: VQGAN, x: torch.Tensor, quantize: torch.Tensor):
    """The generator's training forward: images → (decoded, token indices (B, H·W), codebook loss).

    `quantize` is a 0-dim tensor, 1 or 0. At 1 this is the model's own forward. At 0 the decoder gets
    the encoder's output itself and the codebook loss is 0: a plain autoencoder, the warm-up that lets
    the codebook start on what the encoder has learned to emit. A tensor, not a bool, so one compiled
    graph serves both phases."""
    z_e = model.encoder_output(x)
    z_q, indices, q_loss = model.codebook(z_e)
    z = quantize * z_q + (1 - quantize) * z_e  # exactly z_q at 1, z_e at 0; the gradient reaches z_e either way
    return model.decode(z), indices.view(x.shape[0], -1), quantize * q_loss


@torch.no_grad()
def encoder_vectors(model: VQGAN, x: torch.Tensor) -> torch.Tensor:
    with torch.compiler.set_stance("force_eager"):  # blocks compiled in place would recompile for no_grad
        z = model.encoder_output(x)
    return z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]).float()


def random_rows(vectors: torch.Tensor, n: int) -> torch.Tensor:
    """n rows of `vectors` drawn at random, with replacement."""
    return vectors[torch.randint(0, len(vectors), (n,), device=vectors.device)]


@torch.no_grad()
def init_codebook(model: VQGAN, vectors: torch.Tensor) -> None:
    """Start the codebook on random encoder outputs, not on a tiny uniform cloud."""
    model.codebook.embedding.weight.copy_(random_rows(vectors, model.codebook.embedding.num_embeddings))


@torch.no_grad()
def restart_dead_codes(model: VQGAN, usage: torch.Tensor, vectors: torch.Tensor) -> int:
    """Move every entry unused since the last restart onto a random recent encoder output."""
    dead = (usage == 0).nonzero().flatten()
    if len(dead):
        weight = model.codebook.embedding.weight
        weight[dead] = random_rows(vectors, len(dead)).to(weight.dtype)
    usage.zero_()
    return len(dead)


def freeze_tokenizer(model: VQGAN) -> None:
    """Stop the encoder side (encoder, quant_conv, codebook) learning: an image's tokens are final from
    here on and only the decoder trains, so a late GAN phase can sharpen the decoding without moving the
    codes under it."""
    for part in (model.encoder, model.quant_conv, model.codebook):
        part.requires_grad_(False)


def code_entropy(indices: torch.Tensor, k: int) -> float:
    """Entropy (nats) of how often each of the k codes occurs: the loss of a token model that ignores
    the context (its unigram entropy); exp of it is the codebook's perplexity."""
    counts = torch.bincount(indices.flatten().long().cpu(), minlength=k).double()
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log()).sum())


def codebook_stats(indices: torch.Tensor, k: int) -> dict:
    used = int((torch.bincount(indices.flatten().long(), minlength=k) > 0).sum())
    return {"codebook_used": used, "codebook_size": k, "perplexity": round(math.exp(code_entropy(indices, k)), 2)}


def psnr(x_uint8: torch.Tensor, y_uint8: torch.Tensor) -> float:
    mse = ((x_uint8.double() - y_uint8.double()) ** 2).mean()
    return float(10 * torch.log10(255.0**2 / mse.clamp_min(1e-10)))


@dataclass(frozen=True)
class Stage1Losses:
    """What stage 1's generator minimises, and when each part switches on."""
    l1_weight: float = 1.0        # L1 reconstruction loss
    l2_weight: float = 1.0        # L2 reconstruction loss
    disc_weight: float = 0.1      # scale of the adaptive generator weight
    feature_weight: float = 1.0   # discriminator feature matching
    disc_start: int = 0           # the step at which the discriminator switches on
    quantize_start: int = 0       # steps as a plain autoencoder before the codebook starts


class Stage1Step:
    """One optimisation step of stage 1 (generator and, once switched on, discriminator).

    The codebook is bypassed before step `losses.quantize_start`. Returns the losses as detached tensors:
    reading them (a host sync on a GPU) is left to the caller, which does it only when it logs."""

    def __init__(self, model: VQGAN, disc: Discriminator, opt_g, opt_d, losses: Stage1Losses):
        self.model, self.disc, self.opt_g, self.opt_d, self.p = model, disc, opt_g, opt_d, losses
        # The quantize flag (0, 1) kept on the device: making it each step would sync a GPU.
        device = model.last_layer.weight.device
        self.gates = (torch.zeros((), device=device), torch.ones((), device=device))

    def __call__(self, x: torch.Tensor, step: int, autocast) -> dict:
        p, model, disc = self.p, self.model, self.disc
        gan_on = step >= p.disc_start
        quantize = self.gates[int(step >= p.quantize_start)]
        with autocast():
            decoded, indices, q_loss = generator_forward(model, x, quantize)
            rec = p.l1_weight * (decoded - x).abs().mean() + p.l2_weight * ((decoded - x) ** 2).mean()
            loss = rec + q_loss
            logs = {"rec_loss": rec.detach(), "q_loss": q_loss.detach()}
            if gan_on:
                fake_logits, fake_feats = disc(decoded, return_features=True)
                g_loss = -fake_logits.mean()
                with torch.no_grad():
                    _, real_feats = disc(x, return_features=True)
                fm = sum((f - r).abs().mean() for f, r in zip(fake_feats, real_feats)) / len(fake_feats)
        if gan_on:
            lam = adaptive_weight(rec, g_loss.float(), model.last_layer.weight, p.disc_weight)
            loss = loss + lam * g_loss + p.feature_weight * fm
            logs.update(g_loss=g_loss.detach(), fm_loss=fm.detach(), adaptive_weight=lam)
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_g.step()
        if gan_on:
            with autocast():
                d_loss = hinge_d_loss(disc(x), disc(decoded.detach()))
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()
            logs["d_loss"] = d_loss.detach()
        logs["loss"] = loss.detach()
        return logs, indices
