"""Stage 1: the lab's VQGAN (encoder, codebook, decoder) and its PatchGAN discriminator.

With `VQGANConfig`'s defaults, key- and math-compatible with the lab's `VQGAN.pt`: same module tree
(`encoder.model.N…`, `quant_conv`, `codebook.embedding`, `post_quant_conv`, `decoder.model.N…`), same
computation. The widths, the blocks per level, where the resolution changes and where attention sits are
knobs of the config, so a model that learns in minutes on a CPU is the same code.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from model.choices import RESAMPLES

# Per-channel normalisation of the lab's train/val loader; VQGAN.pt expects images normalised so.
MEAN = (0.4816, 0.4324, 0.3845)
STD = (0.2602, 0.2518, 0.2537)


@dataclass
class VQGANConfig:
    image_channels: int = 3
    enc_channels: list = field(default_factory=lambda: [128, 128, 128, 256, 256, 512])
    dec_channels: list = field(default_factory=lambda: [128, 128, 256, 256, 512])
    latent_dim: int = 256
    img_resolution: int = 64
    latent_resolution: int = 16
    num_codebook_vectors: int = 1024
    beta: float = 0.25
    norm_groups: int = 32   # GroupNorm groups (the lab: 32); narrow models need fewer, see GroupNorm
    enc_blocks: int = 2     # residual blocks per encoder channel transition (the lab: 2)
    dec_blocks: int = 3     # residual blocks per decoder channel group (the lab: 3)
    latent_attention: bool = True  # decoder attention after every block at the latent resolution (the lab's);
                                   # False: attention only in the bottleneck
    resample: str = "conv"  # conv: strided and upsampling convs between channel groups (the lab's) | patch:
                            # the image folded into patches at the start and unfolded at the end, every block
                            # at the latent resolution

    @property
    def n_down(self) -> int:
        return int(math.log2(self.img_resolution // self.latent_resolution))

    @property
    def patch(self) -> int:
        return self.img_resolution // self.latent_resolution

    def __post_init__(self):
        assert self.resample in RESAMPLES and self.enc_blocks >= 1 and self.dec_blocks >= 1, self
        if self.resample == "conv":  # the resolution halves every other transition, counted from the bottleneck
            need = 2 * self.n_down - 1
            for name, chs, have in (("enc_channels", self.enc_channels, len(self.enc_channels) - 1),
                                    ("dec_channels", self.dec_channels, len(self.dec_channels))):
                if have < need:
                    raise ValueError(f"{name}: {list(chs)} gives {have} channel groups; {self.n_down} resolution "
                                     f"changes (one every other group) need at least {need}")


def normalize(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) → float (B, 3, H, W) normalised with the lab's constants."""
    x = images_uint8.permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """float (B, 3, H, W) normalised → uint8 (B, H, W, 3)."""
    mean = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=x.device).view(1, 3, 1, 1)
    x = (x.float() * std + mean).clamp(0, 1)
    return (x * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1)


class GroupNorm(nn.Module):
    """The lab's norm. With one channel per group it acts as instance norm and wipes out each image's
    colour offsets, so a narrow model (a CPU profile) should keep several channels per group."""

    def __init__(self, channels: int, groups: int = 32):
        super().__init__()
        self.gn = nn.GroupNorm(num_groups=groups, num_channels=channels, eps=1e-6, affine=True)

    def forward(self, x):
        return self.gn(x)


class Swish(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(x)


class ResidualBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, groups: int = 32):
        super().__init__()
        self.block = nn.Sequential(
            GroupNorm(in_channels, groups), Swish(), nn.Conv2d(in_channels, out_channels, 3, 1, 1),
            GroupNorm(out_channels, groups), Swish(), nn.Conv2d(out_channels, out_channels, 3, 1, 1),
        )
        self.channel_up = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None
        # Zero-init the residual branch's last conv: each block starts as (nearly) the identity,
        # which speeds up early training of this deep stack. Keys and maths are unchanged.
        nn.init.zeros_(self.block[5].weight)
        nn.init.zeros_(self.block[5].bias)

    def forward(self, x):
        skip = x if self.channel_up is None else self.channel_up(x)
        return self.block(x) + skip


class NonLocalBlock(nn.Module):
    """Single-head spatial self-attention over the h·w positions, with a residual connection."""

    def __init__(self, channels: int, groups: int = 32):
        super().__init__()
        self.norm = GroupNorm(channels, groups)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj_out.weight)  # starts as the identity, like the residual blocks
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x):
        h = self.norm(x)
        b, c, hh, ww = h.shape
        q = self.q(h).reshape(b, c, hh * ww).transpose(1, 2)      # (b, n, c)
        k = self.k(h).reshape(b, c, hh * ww)                      # (b, c, n)
        v = self.v(h).reshape(b, c, hh * ww)                      # (b, c, n)
        attn = torch.softmax(torch.bmm(q, k) * c**-0.5, dim=2)    # (b, n_query, n_key)
        out = torch.bmm(v, attn.transpose(1, 2)).reshape(b, c, hh, ww)
        return x + self.proj_out(out)


class DownSampleBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 2, 0)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class UpSampleBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Encoder(nn.Module):
    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        ch = cfg.enc_channels
        n_trans = len(ch) - 1
        # conv: the resolution halves after the last transition and every other one before it (the lab: the
        # 3rd and 5th of five); patch: the image comes in as patches, at the latent resolution already.
        down_after = {n_trans - 1 - 2 * i for i in range(cfg.n_down)} if cfg.resample == "conv" else set()
        g = cfg.norm_groups
        if cfg.resample == "patch":
            layers = [nn.PixelUnshuffle(cfg.patch), nn.Conv2d(cfg.image_channels * cfg.patch**2, ch[0], 3, 1, 1)]
        else:
            layers = [nn.Conv2d(cfg.image_channels, ch[0], 3, 1, 1)]
        for i in range(n_trans):
            layers.append(ResidualBlock(ch[i], ch[i + 1], g))
            layers += [ResidualBlock(ch[i + 1], ch[i + 1], g) for _ in range(cfg.enc_blocks - 1)]
            if i in down_after:
                layers.append(DownSampleBlock(ch[i + 1]))
        top = ch[-1]
        layers += [ResidualBlock(top, top, g), NonLocalBlock(top, g), ResidualBlock(top, top, g),
                   GroupNorm(top, g), Swish(), nn.Conv2d(top, cfg.latent_dim, 3, 1, 1)]
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)


class Decoder(nn.Module):
    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        ch = list(reversed(cfg.dec_channels))
        # conv: the resolution doubles after the 1st group and every other one after it (the lab: the 1st
        # and 3rd of five); patch: the last conv emits each latent position's patch, unfolded at the end.
        up_after = {2 * i for i in range(cfg.n_down)} if cfg.resample == "conv" else set()
        c, g = ch[0], cfg.norm_groups
        layers = [nn.Conv2d(cfg.latent_dim, c, 3, 1, 1), ResidualBlock(c, c, g), NonLocalBlock(c, g),
                  ResidualBlock(c, c, g)]
        resolution = cfg.latent_resolution
        for i, out in enumerate(ch):
            for _ in range(cfg.dec_blocks):
                layers.append(ResidualBlock(c, out, g))
                c = out
                if cfg.latent_attention and resolution == cfg.latent_resolution:
                    layers.append(NonLocalBlock(c, g))
            if i in up_after:
                layers.append(UpSampleBlock(c))
                resolution *= 2
        if cfg.resample == "patch":
            layers += [GroupNorm(c, g), nn.Conv2d(c, cfg.image_channels * cfg.patch**2, 3, 1, 1)]
            self.unfold = nn.PixelShuffle(cfg.patch)
        else:
            layers += [GroupNorm(c, g), nn.Conv2d(c, cfg.image_channels, 3, 1, 1)]
            self.unfold = nn.Identity()
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.unfold(self.model(x))


def nearest_entry(vectors: torch.Tensor, entries: torch.Tensor) -> torch.Tensor:
    """For each of `vectors` (N, D), the index of its nearest row of `entries` (K, D) by squared L2."""
    vectors, entries = vectors.float(), entries.float()
    # ‖v‖² is the same for every entry of a row, so the argmin needs only ‖e‖² − 2 v·e: one fused addmm.
    return torch.addmm((entries**2).sum(1), vectors, entries.t(), alpha=-2).argmin(dim=1)


class Codebook(nn.Module):
    """Vector quantiser: nearest entry by squared L2, straight-through gradients, VQ losses."""

    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        self.beta = cfg.beta
        self.embedding = nn.Embedding(cfg.num_codebook_vectors, cfg.latent_dim)
        self.embedding.weight.data.uniform_(-1.0 / cfg.num_codebook_vectors, 1.0 / cfg.num_codebook_vectors)

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, C, H, W) → indices (B·H·W,) in row-major order per image."""
        return nearest_entry(z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]), self.embedding.weight)

    def lookup(self, indices: torch.Tensor, shape) -> torch.Tensor:
        """indices → z_q (B, C, H, W) for shape (B, H, W)."""
        b, h, w = shape
        return F.embedding(indices, self.embedding.weight).view(b, h, w, -1).permute(0, 3, 1, 2).contiguous()

    def forward(self, z: torch.Tensor):
        """z: encoder outputs (B, C, H, W) → (z_q, indices, codebook loss)."""
        indices = self.nearest(z)
        z_q = self.lookup(indices, (z.shape[0], z.shape[2], z.shape[3])).to(z.dtype)
        loss = torch.mean((z_q.detach() - z) ** 2) + self.beta * torch.mean((z_q - z.detach()) ** 2)
        z_q = z + (z_q - z).detach()
        return z_q, indices, loss


class VQGAN(nn.Module):
    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.quant_conv = nn.Conv2d(cfg.latent_dim, cfg.latent_dim, 1)
        self.codebook = Codebook(cfg)
        self.post_quant_conv = nn.Conv2d(cfg.latent_dim, cfg.latent_dim, 1)
        self.decoder = Decoder(cfg)

    def encoder_output(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images → z_e (B, D, h, w), the encoder's output before quantisation."""
        return self.quant_conv(self.encoder(x))

    def encode(self, x: torch.Tensor):
        """Normalised images → (z_q, token indices (B, H·W), codebook loss)."""
        z_q, indices, q_loss = self.codebook(self.encoder_output(x))
        return z_q, indices.view(x.shape[0], -1), q_loss

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        return self.decoder.unfold(self.last_layer(self.decode_features(z_q)))

    def decode_features(self, z_q: torch.Tensor) -> torch.Tensor:
        """The decoder up to its output conv (`last_layer`), which the adaptive GAN weight needs apart."""
        return self.decoder.model[:-1](self.post_quant_conv(z_q))

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Token indices (B, H·W) → normalised images."""
        r = self.cfg.latent_resolution
        return self.decode(self.codebook.lookup(indices.reshape(-1), (indices.shape[0], r, r)))

    def forward(self, x: torch.Tensor):
        z_q, indices, q_loss = self.encode(x)
        return self.decode(z_q), indices, q_loss

    @property
    def last_layer(self) -> nn.Conv2d:
        """The decoder's output conv, where the adaptive GAN weight compares gradients."""
        return self.decoder.model[-1]


class Discriminator(nn.Module):
    """The lab's PatchGAN: 4x4 convs, BatchNorm, LeakyReLU 0.2, 3 layers, 64 filters at the first."""

    def __init__(self, image_channels: int = 3, num_filters: int = 64, n_layers: int = 3):
        super().__init__()
        layers = [nn.Conv2d(image_channels, num_filters, 4, 2, 1), nn.LeakyReLU(0.2)]
        mult = 1
        for i in range(1, n_layers + 1):
            prev, mult = mult, min(2**i, 8)
            stride = 2 if i < n_layers else 1
            layers += [nn.Conv2d(num_filters * prev, num_filters * mult, 4, stride, 1, bias=False),
                       nn.BatchNorm2d(num_filters * mult), nn.LeakyReLU(0.2, True)]
        layers.append(nn.Conv2d(num_filters * mult, 1, 4, 1, 1))
        self.model = nn.Sequential(*layers)

    def forward(self, x, return_features: bool = False):
        feats = []
        for layer in self.model:
            x = layer(x)
            if isinstance(layer, nn.LeakyReLU):
                feats.append(x)
        return (x, feats) if return_features else x
