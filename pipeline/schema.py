"""Every parameter of params.yaml, declared once: its type, its range or choices and one line of meaning.

One pydantic model per params.yaml section. The rules that tie one parameter to another are the models'
validators. The method names come from `model.choices`, where the methods are, without importing torch.
A resolved configuration (profile filled in) is checked by `pipeline.config.check`, which every stage runs first.
"""
from __future__ import annotations

import functools
import itertools
import re
from pathlib import Path
from typing import Annotated, Literal, Union, get_args, get_origin

import annotated_types as at
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo

from model.choices import (BLENDS, CONFIDENCES, MASK_KINDS, ORDERS, POS_INITS, PREFILLS, RESAMPLES, SCHEDULES,
                           TOK_INITS, is_schedule)


class Says:
    """What a value of a type checked by a function must be, in words (for the error)."""

    def __init__(self, words: str):
        self.words = words


def checked(kind, test, words: str):
    """`kind` values that pass `test`, described as `words`."""
    def check(value):
        if not test(value):
            raise ValueError(words)
        return value
    return Annotated[kind, AfterValidator(check), Says(words)]


def one_of(*choices):
    """Exactly one of `choices`, by type too: pydantic's Literal takes 0 for False and 1 for True."""
    def same_type(value):
        if not any(type(value) is type(c) and value == c for c in choices):
            raise ValueError("not one of the choices")
        return value
    return Annotated[Literal[choices], BeforeValidator(same_type)]


Count = Annotated[int, Field(ge=1)]
Natural = Annotated[int, Field(ge=0)]
Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, lt=1)]
Flag = bool
Compile = one_of(False, "regional")
Schedule = checked(str, is_schedule, f"a mask schedule: one of {', '.join(SCHEDULES)}, pow<k> (e.g. pow3; "
                                     "k > 0, so that γ(0) = 1: every token masked before the first step)")
ExistingFile = checked(str, lambda v: Path(v).expanduser().is_file(), "the path of an existing file")
Sha256 = checked(str, lambda v: re.fullmatch(r"[0-9a-fA-F]{64}", v) is not None, "64 hexadecimal digits")
Device = checked(str, lambda v: re.fullmatch(r"auto|cpu|cuda(:\d+)?", v) is not None, "auto, cpu, cuda or cuda:N")
Text = checked(str, lambda v: v.strip() != "", "a non-empty text")
PRECISIONS = ("auto", "bf16", "fp32")  # pipeline.runtime.resolve_precision


def sweet_spot_rule(schedule: str, T: int, sweet_spot: int, where: str) -> None:
    if sweet_spot > T:
        raise ValueError(f"{where} {schedule}, T={T}, sweet spot={sweet_spot}: expected a sweet spot from 0 to "
                         f"T={T} (0 = run all T steps)")


class Section(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False, frozen=True)


class Point(Section):
    """One decoding configuration."""
    schedule: Schedule = Field(description="mask schedule γ of the decoding")
    T: Count = Field(description="decoding iterations")
    sweet_spot: Natural = Field(description="stop after this many iterations and fill the rest; 0 = run all T")

    @model_validator(mode="after")
    def _sweet_spot_within_T(self):
        sweet_spot_rule(self.schedule, self.T, self.sweet_spot, "the configuration")
        return self


class Sweep(Section):
    schedule: Annotated[list[Schedule], Field(min_length=1)] = Field(description="schedules of the sweep grid")
    T: Annotated[list[Count], Field(min_length=1)] = Field(description="decoding iterations of the sweep grid")
    sweet_spot: Annotated[list[Natural], Field(min_length=1)] = Field(description="sweet spots of the sweep grid")


class Sizes(Section):
    train: Count = Field(description="most training images")
    val: Count = Field(description="most validation images")
    test: Count = Field(description="most test images (at most a tenth of the images)")


class Data(Section):
    source: Text = Field(description="synthetic | path or URL of the lab zip or folder | any folder, zip, tar or "
                                     "URL of images")
    sha256: Sha256 | None = Field(description="expected sha256 of a downloaded or local archive")
    test_gt: ExistingFile | None = Field(description="lab layout only: the lab's test_gt.csv; without it no FID")
    seed: Natural = Field(description="seed of the split and the generated test masks")
    skip_bad: Flag = Field(description="skip undecodable image files instead of failing")
    dedup: Flag = Field(description="drop exact duplicate images (by decoded pixels)")
    synthetic_count: Annotated[int, Field(ge=3)] = Field(description="how many synthetic faces to generate")
    sizes: Sizes
    hole_min: Annotated[float, Field(ge=0, le=1)] = Field(description="smallest hole fraction of the test masks")
    hole_max: Annotated[float, Field(gt=0, le=1)] = Field(description="largest hole fraction of the test masks")
    masks: one_of(*MASK_KINDS) = Field(description="the test holes drawn for a source that is not the lab's: brush "
                                                   "strokes | one box | outpaint (a rectangle known, the rest a "
                                                   "hole) | a mix of the three")
    max_extract_gb: Positive = Field(description="an archive may extract at most this much ...")
    max_extract_ratio: Annotated[float, Field(ge=1)] = Field(description="... and at most this many times its own "
                                                                         "size (a zip bomb is refused)")

    @model_validator(mode="after")
    def _holes_ordered(self):
        if self.hole_min > self.hole_max:
            raise ValueError(f"data.hole_min is {self.hole_min!r}; expected a number from 0 to data.hole_max "
                             f"({self.hole_max})")
        return self


class Training(Section):
    """What both training stages take alike."""
    batch_size: Count = Field(description="training batch")
    lr: Positive = Field(description="peak learning rate")
    warmup_steps: Natural = Field(description="linear warm-up steps before the cosine decay")
    checkpoint_every: Count = Field(description="steps between resumable checkpoints, and one at half-way")
    checkpoint_minutes: Positive = Field(description="... and at least this often")
    seed: Natural = Field(description="seed of the initialisation, the batches and (stage 2) the masks")


class VQGAN(Training):
    checkpoint: ExistingFile | None = Field(description="the lab's VQGAN.pt, adopted frozen | null: train stage 1")
    enc_channels: Annotated[list[Count], Field(min_length=1)] = Field(description="encoder widths, group by group")
    dec_channels: Annotated[list[Count], Field(min_length=1)] = Field(description="decoder widths, group by group")
    latent_dim: Count = Field(description="width of a code vector")
    num_codebook_vectors: Annotated[int, Field(ge=2, le=32767)] = Field(
        description="codebook size (tokens are stored as int16)")
    norm_groups: Count = Field(description="GroupNorm groups (the lab's 32)")
    enc_blocks: Count = Field(description="residual blocks per encoder channel transition (the lab's 2)")
    dec_blocks: Count = Field(description="residual blocks per decoder channel group (the lab's 3)")
    latent_attention: Flag = Field(description="decoder attention after every block at 16x16 (the lab's) | only "
                                               "in the bottleneck")
    resample: one_of(*RESAMPLES) = Field(description="conv: strided and upsampling convs (the lab's) | patch: 4x4 "
                                                     "patches in and out, every block at 16x16")
    beta: NonNegative = Field(description="commitment loss weight")
    l1_weight: NonNegative = Field(description="weight of the L1 reconstruction loss")
    l2_weight: NonNegative = Field(description="weight of the L2 reconstruction loss")
    disc_start: Natural = Field(description="step at which the discriminator switches on (steps: never)")
    disc_weight: NonNegative = Field(description="scale of the adaptive generator weight")
    feature_weight: NonNegative = Field(description="discriminator feature-matching loss weight")
    quantize_start: Natural = Field(description="steps as a plain autoencoder before the codebook starts")
    steps: Count = Field(description="training steps")
    codebook_restart_every: Count = Field(description="steps between restarts of dead codebook entries")
    decoder_only_from: Natural | None = Field(description="from this step only the decoder trains | null: never")
    eval_every: Count = Field(description="steps between validation PSNR measurements")
    compile: Compile = Field(description="torch.compile each residual and attention block (regional) | false")

    @model_validator(mode="after")
    def _phases_ordered(self):
        if self.checkpoint:  # an adopted checkpoint has the lab's architecture and trains nothing
            return self
        if self.quantize_start > self.steps - 1:
            raise ValueError(f"vqgan.quantize_start is {self.quantize_start}; expected an integer from 0 to "
                             f"{self.steps - 1}")
        if self.decoder_only_from is not None and not self.quantize_start < self.decoder_only_from < self.steps:
            # the codebook must have started before it is frozen
            raise ValueError(f"vqgan.decoder_only_from is {self.decoder_only_from}; expected an integer from "
                             f"{self.quantize_start + 1} to {self.steps - 1}")
        odd = [c for c in self.enc_channels + self.dec_channels if c % self.norm_groups]
        if odd:
            raise ValueError(f"vqgan.norm_groups is {self.norm_groups}; expected a divisor of every channel count "
                             f"(not of {odd[0]})")
        return self


class Tokens(Section):
    batch_size: Count = Field(description="images encoded at once")
    prefill: one_of(*PREFILLS) = Field(description="the test images' holes as the encoder sees them: grey (as "
                                                   "given, the lab's) | OpenCV's telea or ns first")
    decode_prefill: one_of(None, *PREFILLS) = Field(description="the known tokens the final decode keeps, encoded "
                                                                "with this fill | null: those stage 2 saw")


class Train(Training):
    dim: Count = Field(description="transformer width")
    n_layers: Count = Field(description="transformer blocks")
    hidden_dim: Count = Field(description="width of the feed-forward layer")
    n_heads: Count = Field(description="attention heads")
    dropout: Fraction = Field(description="dropout rate")
    pos_init: one_of(*POS_INITS) = Field(description="learned positions start as a 2-D sine-cosine grid (sincos) "
                                                     "or random (normal: the lab's)")
    tok_init: one_of(*TOK_INITS) = Field(description="token embeddings start as stage 1's codebook (codebook) or "
                                                      "random (normal: the lab's)")
    epochs: Count = Field(description="passes over the training tokens")
    weight_decay: NonNegative = Field(description="AdamW weight decay of the weight matrices")
    grad_clip: Positive = Field(description="gradient norm clip")
    gamma: Schedule = Field(description="training mask-ratio schedule")
    label_smoothing: Fraction = Field(description="label smoothing of the masked-token loss")
    compile: Compile = Field(description="torch.compile each transformer block (regional) | false")

    @model_validator(mode="after")
    def _dim_splits(self):
        if self.dim % self.n_heads:
            raise ValueError(f"train.dim {self.dim} is not divisible by train.n_heads {self.n_heads}")
        if self.pos_init == "sincos" and self.dim % 4:  # sin and cos of rows and columns
            raise ValueError(f"train.dim is {self.dim}; expected a multiple of 4 with train.pos_init sincos")
        return self


class Inpaint(Section):
    choice_temperature: NonNegative = Field(description="Gumbel noise on the confidence, annealed by (1 - t/T)")
    confidence: one_of(*CONFIDENCES) = Field(description="what the noise is added to: the probability (lab) | "
                                                         "its log (maskgit, the paper's code)")
    temperature: NonNegative = Field(description="token temperature: 0 = argmax, > 0 samples")
    order: one_of(*ORDERS) = Field(description="which masked tokens each step commits: the most confident | those a "
                                               "2-D Halton sequence reaches first")
    composite: Flag = Field(description="the primary output pastes the known pixels back | the raw VQGAN decode")
    blend: one_of(*BLENDS) = Field(description="composite: Poisson-blend the decoded holes in | paste them")
    picture_serials: list[Natural] = Field(description="test images whose decoding is drawn at every iteration")
    batch_size: Count = Field(description="images decoded at once")
    seed: Natural = Field(description="seed of the decoding noise")


class Evaluate(Section):
    batch_size: Count = Field(description="Inception's batch for FID and KID (the features are the same at any)")


class Params(Section):
    """The resolved parameters: params.yaml, -S overrides and the profile's values filled in."""
    profile: Text = Field(description="quick: the whole pipeline on a 2-core CPU in minutes | lab: the lab's "
                                      "sizes on one GPU")
    device: Device = Field(description="auto (cuda when present) | cpu | cuda | cuda:N")
    precision: one_of(*PRECISIONS) = Field(description="auto: bf16 on CUDA and on CPUs with native bf16, fp32 "
                                                       "elsewhere | bf16 | fp32")
    schedule: Schedule = Field(description="the headline's mask schedule γ")
    T: Count = Field(description="the headline's decoding iterations")
    sweet_spot: Natural = Field(description="the headline stops after this many iterations; 0 = run all T")
    sweep: Sweep
    data: Data
    vqgan: VQGAN
    tokens: Tokens
    train: Train
    inpaint: Inpaint
    evaluate: Evaluate

    @model_validator(mode="after")
    def _points_within_T(self):
        cfg = self.model_dump()
        for schedule, T, sweet_spot, name in [headline_point(cfg)] + sweep_points(cfg):
            where = "the headline (schedule, T, sweet_spot)" if name == "headline" else "sweep point"
            sweet_spot_rule(schedule, T, sweet_spot, where)
        return self


def config_name(schedule: str, T: int, sweet_spot: int) -> str:
    """The folder name of a decoding configuration under results/inpaint/."""
    return f"{schedule}-T{T}-s{sweet_spot}"


def sweep_points(cfg: dict) -> list[tuple]:
    """(schedule, T, sweet_spot, folder name) of every point of the `sweep` grid."""
    return [(sc, T, sw, config_name(sc, T, sw))
            for sc, T, sw in itertools.product(cfg["sweep"]["schedule"], cfg["sweep"]["T"], cfg["sweep"]["sweet_spot"])]


def headline_point(cfg: dict) -> tuple:
    return cfg["schedule"], cfg["T"], cfg["sweet_spot"], "headline"


def get_dotted(tree: dict, key: str):
    for part in key.split("."):
        tree = tree[part]
    return tree


# ---------------------------------------------------------------- what a failed check says
@functools.cache
def declared(model: type[BaseModel] = Params, prefix: str = "") -> dict[str, object]:
    """{dotted key: pydantic FieldInfo} of every parameter (leaf) the schema declares."""
    out = {}
    for name, info in model.model_fields.items():
        kind = info.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            out.update(declared(kind, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = info
    return out


def _number_words(kind: str, metadata) -> str:
    low = next((m for m in metadata if isinstance(m, (at.Ge, at.Gt))), None)
    high = next((m for m in metadata if isinstance(m, (at.Le, at.Lt))), None)
    lo = None if low is None else getattr(low, "ge", getattr(low, "gt", None))
    hi = None if high is None else getattr(high, "le", getattr(high, "lt", None))
    if kind == "int":
        if hi is None:
            return "a positive integer" if lo == 1 else f"an integer of at least {lo}"
        return f"an integer from {lo} to {hi}"
    if hi is None:
        return f"a number {'above' if isinstance(low, at.Gt) else 'of at least'} {lo}"
    return (f"a number from {lo} to {hi}" + (f", below {hi}" if isinstance(high, at.Lt) else "")
            + (f", above {lo}" if isinstance(low, at.Gt) else ""))


def _choice(c) -> str:
    return "null" if c is None else str(c).lower() if isinstance(c, bool) else str(c)


def expected(kind, metadata=()) -> str:
    """A declared type and its constraints in words: "a positive integer", "one of conv, patch", …"""
    origin, args = get_origin(kind), get_args(kind)
    if origin is Annotated:
        inner = [c for m in kind.__metadata__ for c in (m.metadata if isinstance(m, FieldInfo) else [m])]
        return expected(args[0], (*metadata, *inner))
    says = next((m for m in metadata if isinstance(m, Says)), None)
    if says:
        return says.words
    if origin is Literal:
        return "one of " + ", ".join(_choice(c) for c in args)
    if origin is Union:  # X | None
        return f"null or {expected(next(a for a in args if a is not type(None)))}"
    if origin is list:
        short = any(isinstance(m, at.MinLen) and m.min_length for m in metadata)
        return f"a{' non-empty ' if short else ' '}list, each item {expected(args[0])}, e.g. [1, 2]"
    if kind is bool:
        return "one of true, false"
    return _number_words(kind.__name__, metadata)


def first_error(error: ValidationError, cfg: dict, model: type[BaseModel] = Params) -> str:
    """The first problem of a failed validation of `cfg`, in one line naming the dotted key and its value."""
    e = error.errors(include_url=False)[0]
    key = ".".join(str(part) for part in e["loc"] if isinstance(part, str))
    if e["type"] == "missing":
        return f"parameter {key!r} is missing"
    if e["type"] == "extra_forbidden":
        return f"{key!r} is not a parameter (a typo?)"
    fields = declared(model)
    if key not in fields:  # a rule between parameters: its message names them
        return str(e["ctx"]["error"]) if "error" in e.get("ctx", {}) else e["msg"]
    info = fields[key]
    return f"{key} is {get_dotted(cfg, key)!r}; expected {expected(info.annotation, info.metadata)}"
