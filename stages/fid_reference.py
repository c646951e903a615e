"""Stage `fid_reference`: Inception statistics of the test set's ground truth, computed once.

Also scores held-out real images (the first validation images, as many as the test set has) against
them: the FID that a sample of different real images gets at this test set's size, the yardstick
every other FID in the report is read against (at a few hundred images FID is far from zero even
for real images).

Output: data/fid/reference/stats.npz (test_key: the test images' content key, features, mu, sigma, heldout_fid,
heldout_kid and, where the held-out images are as many as the test images, heldout_kid_se), keyed by DVC on
the prepared test and validation sets.
"""
from __future__ import annotations

import numpy as np

from model.fid import FrechetReference, gaussian_stats, inception_features
from model.kid import KID_SCALE, kid_with_error
from pipeline.config import cli, run
from pipeline.files import atomic_dir, check_writable, content_key
from pipeline.inception import load_inception
from pipeline.lineage import Lineage
from pipeline.paths import FID_REFERENCE as OUT, PREPARED, TEST
from pipeline.runtime import pick_device

GT = TEST / "gt.npy"
VAL = PREPARED / "val.npy"


def main(argv: list[str] | None = None) -> None:
    cfg, _ = cli(__doc__, argv=argv)
    check_writable(OUT)
    lineage = Lineage(cfg)
    if GT.exists():
        gt, val = np.load(lineage.read(GT, "prepare")), np.load(lineage.read(VAL, "prepare"))
        device = pick_device(cfg["device"])
        net, batch = load_inception(device), cfg["evaluate"]["batch_size"]
        feats = inception_features(net, gt, batch, device, "fid reference")
        mu, sigma = gaussian_stats(feats)
        stats = {"available": True, "test_key": content_key(gt), "features": feats.astype(np.float32), "mu": mu,
                 "sigma": sigma}
        heldout = val[:len(gt)]
        if len(heldout) > 1:  # one image has no covariance
            real = inception_features(net, heldout, batch, device, "held-out real images")
            stats["heldout_fid"] = FrechetReference(mu, sigma).distance(real)
            # the jackknife pairs held-out image i with test image i: no error where they are fewer
            stats["heldout_kid"], se = kid_with_error(real, feats)
            if se is not None:
                stats["heldout_kid_se"] = se
            print(f"fid_reference: {len(heldout)} held-out real images score FID {stats['heldout_fid']:.2f}, "
                  f"KID x 10^3 {stats['heldout_kid'] * KID_SCALE:.2f}")
    else:
        print("fid_reference: the test set has no ground truth (lab layout without data.test_gt): FID disabled")
        stats = {"available": False}
    with atomic_dir(OUT) as out:
        with open(out / "stats.npz", "wb") as f:
            np.savez(f, **stats)
        lineage.write(out, OUT, "fid_reference")
    print(f"fid_reference: wrote {OUT / 'stats.npz'}")


if __name__ == "__main__":
    run(main)
