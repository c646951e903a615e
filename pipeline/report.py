"""The evaluation's human-facing output: comparison tables, FID plots, metrics and a report README."""
from __future__ import annotations

from pathlib import Path

import matplotlib
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pipeline.files import atomic_dir, atomic_file, save_json  # noqa: E402

COLUMNS = ("name", "schedule", "T", "sweet_spot", "fid_raw", "fid_composite", "kid_raw", "kid_raw_se",
           "kid_composite", "kid_composite_se", "kid_vs_best", "kid_vs_best_se", "hole_psnr", "decode_seconds",
           "images_per_s")


def table(rows: list[dict], columns=COLUMNS) -> pd.DataFrame:
    """The rows as a DataFrame of `columns`, each value as it is (an integer stays one; absent: missing)."""
    return pd.DataFrame(rows, columns=list(columns), dtype=object)


def absent(v) -> bool:
    """None, or the missing value a DataFrame holds for a key a row lacks."""
    return v is None or pd.isna(v)


def fmt(v, sign: bool = False) -> str:
    if absent(v):
        return "—"
    return f"{v:{'+' if sign else ''}.2f}" if isinstance(v, float) else str(v)


def with_error(value, se, sign: bool = False) -> str:
    return fmt(value, sign) + ("" if absent(value) or absent(se) else f" ± {se:.2f}")


def markdown_table(rows: list[dict], primary: str) -> str:
    """The comparison, with KID (x 10^3, ± its error) of the primary output only, to stay readable."""
    kid = "kid_" + primary.split("_")[1]
    t = table(rows)
    shown = t[["name", "schedule", "T", "sweet_spot", "fid_raw", "fid_composite"]].map(fmt)
    shown[f"{kid} ×10³"] = [with_error(v, se) for v, se in zip(t[kid], t[kid + "_se"])]
    shown["kid vs best ×10³"] = [with_error(v, se, sign=True) for v, se in zip(t["kid_vs_best"], t["kid_vs_best_se"])]
    shown = shown.join(t[["hole_psnr", "decode_seconds", "images_per_s"]].map(fmt))
    align = ["left", "left"] + ["right"] * (shown.shape[1] - 2)  # the numbers right-aligned
    return shown.to_markdown(index=False, disable_numparse=True, colalign=align) + "\n"


def level_with_best(rows: list[dict], best: dict) -> list[str]:
    """The configurations that KID does not tell apart from the best one: less than two standard errors
    (paired, over the test images) above it."""
    return [r["name"] for r in rows if r.get("kid_vs_best") is not None and r is not best
            and r["kid_vs_best"] < 2 * r["kid_vs_best_se"]]


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    with atomic_file(path) as tmp:
        frame.to_csv(tmp, index=False, na_rep="")


# Baselines: colours after the configurations' C0-C5, each with its own dash pattern.
BASELINE_STYLES = (("C7", ":"), ("C9", "--"), ("C6", "-."), ("C8", (0, (5, 1, 1, 1, 1, 1))), ("k", (0, (1, 2))),
                   ("C5", (0, (8, 2))))


def has_kid_vs_best(rows: list[dict]) -> bool:
    """Whether the plots can draw the KID panel: every configuration has its difference from the best."""
    return all(r.get("kid_vs_best") is not None for r in rows)


def fid_figure(rows: list[dict], x_key: str, group_keys: tuple, baselines: list[dict], primary: str, title: str):
    """FID against `x_key`: a panel for each output (the primary first), a line for each group of
    configurations, a horizontal line for each baseline, and one legend beside the panels (labels in
    the plot overlapped where baselines score alike, as the two OpenCV methods do). Where every row
    carries `kid_vs_best`, a third panel: each configuration's KID minus the best one's, with bars of
    two paired standard errors, so a bar that crosses zero is a configuration not told apart from the best."""
    outputs = (primary, "fid_raw" if primary == "fid_composite" else "fid_composite")
    by_key = {}
    for r in rows:
        by_key.setdefault(tuple(r[k] for k in group_keys), []).append(r)
    groups = [(key, sorted(members, key=lambda r: r[x_key]))
              for key, members in sorted(by_key.items(), key=lambda kv: str(kv[0]))]
    with_kid = has_kid_vs_best(rows)
    fig, axes = plt.subplots(1, 3 if with_kid else 2, figsize=(15 if with_kid else 10, 4), dpi=110, sharex=True,
                             layout="constrained")
    for ax, output in zip(axes, outputs):
        for i, (key, members) in enumerate(groups):
            label = ", ".join(f"{k}={v}" if k != "schedule" else str(v) for k, v in zip(group_keys, key))
            ax.plot([r[x_key] for r in members], [r[output] for r in members], marker="o", color=f"C{i}", label=label)
        for j, b in enumerate(baselines):
            if b[output] is not None:
                colour, dashes = BASELINE_STYLES[j % len(BASELINE_STYLES)]
                ax.axhline(b[output], color=colour, lw=1.2, ls=dashes, label=b["name"])
        ax.set_ylabel("FID")
        ax.set_title(output.split("_")[1] + (" (primary output)" if output == primary else ""), fontsize=10)
    if with_kid:
        ax = axes[2]
        for i, (_, members) in enumerate(groups):
            shift = 0.06 * (i - (len(groups) - 1) / 2)  # side by side, so that bars at one x stay readable
            ax.errorbar([r[x_key] + shift for r in members], [r["kid_vs_best"] for r in members],
                        yerr=[2 * r["kid_vs_best_se"] for r in members], marker="o", color=f"C{i}", capsize=3)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_ylabel("KID x 10³ minus the best's")
        ax.set_title(f"KID against the best, {primary.split('_')[1]} (bars: 2 standard errors)", fontsize=10)
    for ax in axes:
        ax.set_xticks(sorted({r[x_key] for r in rows}))
        ax.set_xlabel(x_key)
    fig.suptitle(title)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right center", fontsize=8)
    return fig


def plot_fid(rows, x_key, group_keys, baselines, primary, title, path: Path) -> None:
    fig = fid_figure(rows, x_key, group_keys, baselines, primary, title)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def best_config(rows: list[dict], primary: str) -> dict:
    return min((r for r in rows if r.get("schedule")), key=lambda r: r[primary])


def shown_config(rows: list[dict], primary: str, fid_available: bool) -> dict:
    """The configuration the report's samples show: the best by the primary FID; without FID the headline
    (or the first configuration)."""
    if fid_available:
        return best_config(rows, primary)
    configs = [r for r in rows if r.get("schedule")]
    return next((r for r in configs if r["name"] == "headline"), configs[0])


def write_all(reports: Path, rows: list[dict], primary: str, fid_available: bool, seconds: float,
              samples: str | None, blend: str) -> None:
    """`samples`: the configuration shown in reports/samples.png (written by the caller), if any;
    `blend`: how the composites put the decoded holes into the input (`inpaint.blend`)."""
    configs = [r for r in rows if r.get("schedule")]
    sweep = [r for r in configs if r["name"] != "headline"]
    others = [r for r in rows if not r.get("schedule")]
    headline = next((r for r in configs if r["name"] == "headline"), None)
    best = best_config(rows, primary) if fid_available else None

    write_csv(table(rows), reports / "comparison.csv")
    with atomic_file(reports / "comparison.md") as tmp:
        tmp.write_text(markdown_table(rows, primary))
    with atomic_dir(reports / "plots") as plots:
        points = table(sweep, COLUMNS + ("steps_run",))
        write_csv(points[points.sweet_spot == 0].sort_values(["schedule", "T"])[list(COLUMNS)], plots / "fid_vs_T.csv")
        write_csv(points.sort_values(["schedule", "T", "steps_run"]), plots / "fid_vs_sweet_spot.csv")
    if fid_available:
        plot_fid([r for r in sweep if r["sweet_spot"] == 0], "T", ("schedule",), others, primary,
                 "FID against T (full decoding)", reports / "fid_vs_T.png")
        plot_fid(sweep, "steps_run", ("schedule", "T"), others, primary,
                 "FID against the sweet spot (steps actually run)", reports / "fid_vs_sweet_spot.png")

    def pick(r):
        return None if r is None else {k: r.get(k) for k in ("name", "schedule", "T", "sweet_spot", "fid_raw",
                                                             "fid_composite", "kid_raw", "kid_composite", "hole_psnr")}
    metrics = {"fid": (headline or {}).get(primary), "headline": pick(headline), "best": pick(best),
               # each baseline as the primary output scores it (the floor's composite is not its raw decode)
               "baselines": {r["name"]: r[primary] for r in others},
               "fid_available": fid_available}
    save_json(metrics, reports / "metrics.json")
    with atomic_file(reports / "README.md") as tmp:
        tmp.write_text(readme(rows, headline, best, primary, fid_available, seconds, samples, blend))


def readme(rows, headline, best, primary, fid_available, seconds, samples, blend) -> str:
    how = {"paste": "pastes the decoded holes into the input as they are",
           "poisson": "Poisson-blends the decoded holes into the input (their gradients, the input's colours at "
                      "their border: `inpaint.blend`)"}[blend]
    kinds = {r["kind"] for r in rows}  # only the rows this report has are explained
    floor = ("The stage-1 reconstruction row decodes the true tokens of the test images: what a perfect stage 2 "
             "would give. " if "floor" in kinds else "")
    heldout = ("The held-out real images row scores validation images, as many as the test set has (all of them "
               "if fewer): real images that are not the test images, so the FID that sampling alone leaves at this "
               "test size (paired outputs such as the composite can go below it). " if "reference" in kinds else "")
    out = ["# MaskGIT inpainting report", "",
           "Generated by the `evaluate` stage. FID uses the lab's protocol (TF-Inception pool3, 299x299 bilinear, "
           "[-1, 1]) against the test set's ground truth; lower is better. `fid_composite` scores the composite, "
           f"which {how}; `fid_raw` scores the VQGAN decode as is; `hole_psnr` is the composite's, over the hole "
           f"pixels only. {floor}{heldout}The primary output is **{primary.split('_')[1]}**.", "",
           "KID (x 10³; Bińkowski et al. 2018) compares the same Inception features without FID's bias at small "
           "test sets: two samples of one distribution score 0 on average. Its ± is a standard error over the test "
           "images (a jackknife: how much the score would move with another test set of this size); near 0 it can go "
           "negative. `kid vs best` is a configuration's KID minus the best configuration's, with the error of that "
           "difference on the same test images, which is far smaller than either KID's own: it says whether the "
           "best's lead holds for these models. The errors cover the test images' sampling, not the training's: "
           "the same recipe trained again with another seed can move every score by more.",
           ""]
    if not fid_available:
        out += ["**FID is disabled**: the test set has no ground truth (give the lab's `test_gt.csv` as "
                "`data.test_gt`).", ""]
    if best:
        what = (f"one forward pass (every hole token filled from the first prediction, so the same decode at "
                f"every schedule; in the table as `{best['name']}`)" if best["steps_run"] == 1
                else f"`{best['schedule']}`, T={best['T']}, sweet spot={best['sweet_spot']} (0 = all T steps)")
        out += [f"**Best configuration**: {what}: FID {fmt(best[primary])} ({primary}), raw {fmt(best['fid_raw'])}.",
                ""]
        level = level_with_best(rows, best)
        if best.get("kid_vs_best") is not None:
            out += [("Its lead holds by KID: every other configuration is at least two standard errors above it."
                     if not level else "KID does not tell it apart (less than two standard errors above it) from: "
                     + ", ".join(f"`{name}`" for name in level) + "."), ""]
    if headline:
        out += [f"**Headline** (`schedule`={headline['schedule']}, `T`={headline['T']}, "
                f"`sweet_spot`={headline['sweet_spot']}): FID {fmt(headline[primary])}.", ""]
    out += ["## Comparison", "", markdown_table(rows, primary)]
    if samples:
        out += ["## Samples", "",
                f"The first test images, one a column. Rows: the masked input, OpenCV Telea, `{samples}`'s raw "
                "decode and its composite, and the ground truth (when the test set has one).", "",
                f"![samples of {samples}](samples.png)", ""]
    if fid_available:
        out += ["## Plots", ""]
        if has_kid_vs_best([r for r in rows if r.get("schedule")]):
            out += ["The third panel is `kid vs best`: a bar that crosses zero (two standard errors either side) is a "
                    "configuration KID does not tell apart from the best.", ""]
        out += ["![FID against T](fid_vs_T.png)", "",
                "![FID against the sweet spot](fid_vs_sweet_spot.png)", ""]
    out += ["## The models", "",
            "Stage 1 (the VQGAN): reconstructions of fixed validation images in "
            "[vqgan/plots/images/recon.png](vqgan/plots/images/recon.png), PSNR and codebook usage in "
            "[vqgan/metrics.json](vqgan/metrics.json), curves in [vqgan/plots/metrics/](vqgan/plots/metrics/). "
            "Stage 2 (the transformer): best validation loss and accuracy in [train/metrics.json](train/metrics.json), "
            "curves in [train/plots/metrics/](train/plots/metrics/) (logged by dvclive; `dvc plots show` draws "
            "them).", ""]
    out += ["## Iterative decoding", "",
            "Top row: the masked input, then the latent (16x16 token) mask before the first step and after "
            "every step (black = still masked). Bottom row: the ground truth, then the image decoded from the "
            "predicted tokens at every step.", ""]
    animation = next((pic for r in rows if r["name"] == samples for pic in r.get("pictures", [])
                      if pic.endswith(".gif")), None)
    if animation:
        out += [f"**{samples}** `{Path(animation).stem}`, as it decodes (the input, the latent mask, the image "
                f"predicted at each step, then the composite):  \n![{samples} {Path(animation).stem} "
                f"animated]({animation})\n"]
    for r in rows:
        for pic in r.get("pictures", []):
            if pic.endswith(".png"):
                out.append(f"**{r['name']}** `{Path(pic).stem}`  \n![{r['name']} {Path(pic).stem}]({pic})\n")
    out += ["", f"Evaluation took {seconds:.0f} s."]
    return "\n".join(out) + "\n"
