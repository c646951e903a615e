"""Where the pipeline's files live, relative to the project root, where every stage runs. dvc.yaml
declares the same paths as the stages' deps and outs."""
from pathlib import Path

PARAMS = Path("params.yaml")
DOWNLOADS = Path("data/downloads")        # downloaded sources, cached by URL
PREPARED = Path("data/prepared")          # train.npy, val.npy and test/ (stage `prepare`)
TEST = PREPARED / "test"                  # masked.npy, mask64.npy, gt.npy, the lab's PNGs
TOKENS = Path("data/tokens")              # the token cache (stage `tokens`)
FID_REFERENCE = Path("data/fid/reference")  # stats.npz: the test set's Inception statistics (stage `fid_reference`)
FID_CACHE = Path("data/fid/cache")        # Inception features of scored image sets, by content
MODELS = Path("models")                   # the trained pair, as `Inpainter.load` takes it
VQGAN = MODELS / "vqgan"                  # vqgan.pt, architecture.json (stage `vqgan`)
TRANSFORMER = MODELS / "transformer"      # transformer.pt, architecture.json (stage `train`)
RESULTS = Path("results/inpaint")         # a folder per decoded configuration (stage `inpaint`)
LEAVE_ONE_OUT = Path("results/leave_one_out.npz")  # every scored set's leave-one-out KIDs (stage `evaluate`)
REPORTS = Path("reports")
VQGAN_REPORTS = REPORTS / "vqgan"
TRAIN_REPORTS = REPORTS / "train"
CHECKPOINTS = Path("checkpoints")         # resumable training state, removed when a stage finishes
