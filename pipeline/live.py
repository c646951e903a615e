"""Training curves the DVC way, through dvclive: a training stage logs its rows as they come, so `dvc exp
show`, the VS Code extension and DVC Studio follow a running experiment step by step; at the end the stage
writes them again, with its pictures and final metrics, from the rows its checkpoints kept, into a fresh
folder that replaces the live one. So a resumed run's logs are an uninterrupted run's, and a killed run's
half-written ones never outlive it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from dvclive import Live


def open_live(folder: Path, curves: dict[str, list[dict]]) -> Live:
    """A logger writing into `folder` (emptied of earlier logs), the `curves` so far replayed into it:
    {prefix: rows}, each row a dict with its "step" (`log_rows`)."""
    live = Live(str(folder), resume=False, report=None, save_dvc_exp=False, dvcyaml=None)
    log_rows(live, curves)
    return live


def log_rows(live: Live, curves: dict[str, list[dict]]) -> None:
    """Log every row of `curves` ({prefix: rows}) in step order, each value as the metric `prefix/name` (a
    tsv per metric under plots/metrics/), and refresh metrics.json."""
    rows = sorted(((row["step"], order, prefix, row) for order, (prefix, rows) in enumerate(curves.items())
                   for row in rows), key=lambda item: item[:2])
    for step, _, prefix, row in rows:
        live.step = step
        for name, value in row.items():
            if name != "step":
                live.log_metric(f"{prefix}/{name}", value)
    if rows:
        live.make_summary()


def write_logs(folder: Path, curves: dict[str, list[dict]], metrics: dict,
               images: dict[str, np.ndarray] | None = None) -> None:
    """The final logs of a stage into `folder`, a fresh one: the curves, the pictures (plots/images/<name>)
    and metrics.json, which holds the stage's final `metrics` beside each curve's last row."""
    live = open_live(folder, curves)
    for name, image in (images or {}).items():
        live.log_image(name, image)
    live.summary.update(metrics)
    live.make_summary()
