"""A pipeline small enough for a 2-core CPU in seconds per stage: the real code paths at tiny sizes, as
`-S` overrides the tests run."""

TINY = [
    "precision=fp32",  # the same arithmetic on every CPU, with bf16 instructions or without
    "data.synthetic_count=240", "data.sizes.test=10",
    "vqgan.resample=conv", "vqgan.enc_blocks=2", "vqgan.dec_blocks=3", "vqgan.latent_attention=true",  # the lab's layout
    "vqgan.enc_channels=[8, 8, 8, 8, 16, 16]", "vqgan.dec_channels=[8, 8, 8, 16, 16]", "vqgan.latent_dim=16",
    "vqgan.num_codebook_vectors=32", "vqgan.norm_groups=4", "vqgan.steps=12", "vqgan.batch_size=8", "vqgan.lr=0.002",
    "vqgan.disc_start=8", "vqgan.quantize_start=3", "vqgan.codebook_restart_every=4", "vqgan.warmup_steps=2",
    "train.dim=32", "train.n_layers=1", "train.hidden_dim=64", "train.n_heads=4", "train.epochs=2",
    "train.batch_size=16", "train.warmup_steps=2",
    "inpaint.batch_size=8", "evaluate.batch_size=10",
]
