"""A local page to watch MaskGIT inpaint: choose a test image or upload any image, paint a hole or choose one,
pick the decoding, run, and step through every iteration beside OpenCV Telea's fill. It decodes through
`Inpainter` (pipeline/inpainter.py), as every other command does, and serves on 127.0.0.1 only.

    python -m commands.app [--port 7860] [--models models] [-S inpaint.order=halton]
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.baselines import opencv_inpaint
from model.choices import CONFIDENCES, ORDERS, SCHEDULES
from pipeline import holes
from pipeline.config import ConfigError, check_point, cli, run
from pipeline.files import save_gif
from pipeline.inpainter import Inpainter
from pipeline.paths import MODELS, TEST
from pipeline.pictures import decoding_frames

TEST_IMAGE, UPLOAD = "a test image", "an upload"
HOLES = ("box", "brush", "outpaint border", "the test image's own mask", "the whole image")
ZOOM = 4  # the 64x64 pictures are shown at 256x256, nearest neighbour


def zoom(image: np.ndarray, factor: int = ZOOM) -> np.ndarray:
    return image.repeat(factor, 0).repeat(factor, 1)


def whole_number(value, what: str) -> int:
    """A number field's value as an integer, or a sentence saying what was expected."""
    if value is None or float(value) != int(value):
        raise ConfigError(f"{what} is {value!r}; expected a whole number")
    return int(value)


@dataclass
class Shown:
    """What one run puts on the page: 64x64 pictures, the decoding's frames and their animation."""
    input: np.ndarray
    composite: np.ndarray
    raw: np.ndarray
    telea: np.ndarray
    frames: list[np.ndarray]
    animation: Path
    summary: str


class Page:
    """The page's work, apart from its widgets: the models, the workspace's test set (if any) and one run."""

    def __init__(self, model: Inpainter, test_images: np.ndarray | None, test_masks: np.ndarray | None, work: Path):
        self.model, self.test_images, self.test_masks, self.work = model, test_images, test_masks, work

    def image(self, source: str, serial, upload) -> tuple[np.ndarray, int, np.ndarray | None]:
        """The chosen image (64x64), its noise key (a test image's serial, as the pipeline decodes it) and its own
        lab mask where it has one."""
        if source == TEST_IMAGE:
            if self.test_images is None:
                raise ConfigError("This workspace has no test set (run `dvc repro` or the prepare stage); upload an "
                                  "image instead")
            s, count = whole_number(serial, "The serial"), len(self.test_images)
            if not 0 <= s < count:
                raise ConfigError(f"Serial {s} is out of range: the test set has {count} images (0 to {count - 1})")
            return self.test_images[s], s, self.test_masks[s] == 0
        if upload is None:
            raise ConfigError("Upload an image first, or choose a test image")
        try:
            image, _ = holes.read_image(Path(upload))
        except ConfigError as e:
            raise ConfigError(f"The upload could not be used: {str(e).split(': ', 1)[-1]}") from None
        return image, 0, None

    @staticmethod
    def painted(editor) -> np.ndarray:
        """The hole painted with the brush on the 256x256 canvas: any painted pixel of a 4x4 block."""
        layers = (editor or {}).get("layers") or []
        alpha = [layer[..., 3] > 0 for layer in layers if layer is not None and layer.ndim == 3 and layer.shape[2] == 4]
        if not alpha or not any(a.any() for a in alpha):
            raise ConfigError("The brush hole is empty: paint over the image where it is to be generated")
        painted = np.logical_or.reduce([holes.centre_square(a) for a in alpha])
        side = painted.shape[0] - painted.shape[0] % holes.SIZE
        block = side // holes.SIZE
        return painted[:side, :side].reshape(holes.SIZE, block, holes.SIZE, block).any(axis=(1, 3))

    def hole(self, kind: str, box, pixels, editor, own: np.ndarray | None) -> np.ndarray:
        if kind == "box":
            x, y, w, h = (whole_number(v, f"The box's {n}") for v, n in zip(box, "XYWH"))
            return holes.box(x, y, w, h, f"The box {x},{y},{w},{h}")
        if kind == "brush":
            return self.painted(editor)
        if kind == "outpaint border":
            n = whole_number(pixels, "The border")
            return holes.border(n, f"The border of {n} pixels")
        if kind == "the test image's own mask":
            if own is None:
                raise ConfigError("An upload has no mask of its own: choose a box, the brush or a border")
            return own
        return np.ones((holes.SIZE, holes.SIZE), bool)

    def run(self, source, serial, upload, kind, box, pixels, editor, schedule, T, sweet_spot, confidence,
            order) -> Shown:
        """Decode the chosen image and hole with the chosen settings; a ConfigError is a sentence for the page."""
        t0 = time.perf_counter()
        T, sweet_spot = whole_number(T, "T"), whole_number(sweet_spot, "The sweet spot")
        check_point(schedule, T, sweet_spot, where="")
        image, key, own = self.image(source, serial, upload)
        hole = self.hole(kind, box, pixels, editor, own)
        out = self.model.inpaint(image[None], hole[None], schedule, T, sweet_spot, keys=[key], confidence=confidence,
                                 order=order)
        frames = decoding_frames(out.masked[0], out.token_masks[:, 0], out.steps[:, 0], out.composite[0])
        animation = Path(tempfile.mkdtemp(dir=self.work)) / "decoding.gif"
        save_gif(frames, animation)
        telea = opencv_inpaint(out.masked, np.where(hole, 0, 255)[None].astype(np.uint8), "telea")[0]
        steps = len(frames) - 2
        summary = (f"Decoded in **{time.perf_counter() - t0:.2f} s**: {steps} iteration(s) of {T} ({schedule}, "
                   f"{order} order, {confidence} confidence), {int(out.token_masks[0, 0].sum())} of 256 tokens masked.")
        return Shown(out.masked[0], out.composite[0], out.raw[0], telea, frames, animation, summary)


def build(page: Page, cfg: dict):
    """The page's widgets and what they do."""
    import gradio as gr

    has_test = page.test_images is not None
    count = len(page.test_images) if has_test else 0
    with gr.Blocks(title="MaskGIT inpainting") as demo:
        gr.Markdown("## MaskGIT inpainting, step by step\nChoose an image and a hole, pick the decoding and run: the "
                    "latent mask and the predicted image at every iteration, the composite beside OpenCV Telea's fill.")
        frames = gr.State([])
        with gr.Row():
            with gr.Column(scale=1):
                source = gr.Radio([TEST_IMAGE, UPLOAD] if has_test else [UPLOAD], value=TEST_IMAGE if has_test
                                  else UPLOAD, label="Image", elem_id="source")
                serial = gr.Number(value=0, precision=0, label=f"Test serial (0 to {count - 1})" if has_test else
                                   "Test serial (no test set here)", elem_id="serial", interactive=has_test)
                upload = gr.Image(type="filepath", sources=["upload"], label="Upload (centre-cropped to 64x64)",
                                  elem_id="upload", height=140)
                kind = gr.Radio(list(HOLES), value="box", label="Hole", elem_id="hole")
                with gr.Row(visible=True) as box_row:
                    box = [gr.Number(value=v, precision=0, label=n, elem_id=f"box_{n.lower()}", min_width=60)
                           for v, n in zip((16, 16, 32, 32), "XYWH")]
                border = gr.Number(value=8, precision=0, label="Border (pixels)", elem_id="border", visible=False)
                editor = gr.ImageEditor(type="numpy", image_mode="RGBA", label="Brush: paint the hole",
                                        sources=(), transforms=(), layers=False, canvas_size=(256, 256),
                                        brush=gr.Brush(colors=["#ff2d55"], color_mode="fixed", default_size=16),
                                        elem_id="editor", height=330, visible=False)
                with gr.Row():
                    schedule = gr.Dropdown(list(SCHEDULES), value=cfg["schedule"], label="Mask schedule",
                                           elem_id="schedule")
                    T = gr.Number(value=cfg["T"], precision=0, label="T (iterations)", elem_id="T")
                    sweet_spot = gr.Number(value=cfg["sweet_spot"], precision=0, label="Sweet spot (0 = all T)",
                                           elem_id="sweet_spot")
                with gr.Row():
                    confidence = gr.Dropdown(list(CONFIDENCES), value=cfg["inpaint"]["confidence"],
                                             label="Confidence", elem_id="confidence")
                    order = gr.Dropdown(list(ORDERS), value=cfg["inpaint"]["order"], label="Decoding order",
                                        elem_id="order")
                go = gr.Button("Run", variant="primary", elem_id="run")
            with gr.Column(scale=1):
                message = gr.Markdown("", elem_id="message")
                summary = gr.Markdown("Press Run to decode.", elem_id="summary")
                step = gr.Slider(0, 1, value=0, step=1, label="Iteration: 0 is before the first step, the last "
                                 "the composite", elem_id="step")
                frame = gr.Image(label="Input | latent mask (black = still masked) | predicted image", elem_id="frame",
                                 format="png", buttons=["download"], interactive=False)
                animation = gr.Image(type="filepath", label="The same, animated", elem_id="animation",
                                     buttons=["download"], interactive=False)
                with gr.Row():
                    shown = [gr.Image(label=label, elem_id=elem, format="png", buttons=["download"],
                                      interactive=False, min_width=100)
                             for label, elem in (("Input", "input"), ("Composite", "composite"),
                                                 ("Raw decode", "raw"), ("OpenCV Telea", "telea"))]

        def show_hole_fields(kind):
            return (gr.update(visible=kind == "box"), gr.update(visible=kind == "outpaint border"),
                    gr.update(visible=kind == "brush"))

        def background(source, serial, upload):
            try:
                image, _, _ = page.image(source, serial, upload)
            except ConfigError:
                return gr.update()
            return {"background": zoom(image), "layers": [], "composite": zoom(image)}

        def on_run(*values):
            try:
                result = page.run(*values[:4], values[4:8], *values[8:])
            except ConfigError as e:
                return [f"**{e}**", *[gr.update()] * (len(shown) + 5)]
            last = len(result.frames) - 1
            return ["", *(zoom(im) for im in (result.input, result.composite, result.raw, result.telea)),
                    str(result.animation), result.frames, gr.update(maximum=last, value=last), result.frames[last],
                    result.summary]

        for trigger in (source.change, serial.change, upload.change):
            trigger(background, [source, serial, upload], editor)
        demo.load(background, [source, serial, upload], editor)
        kind.change(show_hole_fields, kind, [box_row, border, editor])
        go.click(on_run, [source, serial, upload, kind, *box, border, editor, schedule, T, sweet_spot, confidence,
                          order], [message, *shown, animation, frames, step, frame, summary])
        step.change(lambda i, f: f[int(i)] if f else gr.update(), [step, frames], frame)
    return demo


def load_test_set() -> tuple[np.ndarray | None, np.ndarray | None]:
    """The workspace's test images (the ground truth where there is one, else the masked inputs) and masks."""
    if not (TEST / "mask64.npy").exists():
        return None, None
    images = TEST / ("gt.npy" if (TEST / "gt.npy").exists() else "masked.npy")
    return np.load(images), np.load(TEST / "mask64.npy")


def main(argv: list[str] | None = None) -> None:
    def args(parser):
        parser.add_argument("--port", type=int, default=7860, help="port on 127.0.0.1 (default 7860)")
        parser.add_argument("--models", type=Path, default=MODELS,
                            help="folder of the trained vqgan/ and transformer/ (default: models)")

    cfg, a = cli(__doc__, args, argv)
    model = Inpainter.load(a.models, cfg=cfg)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    with tempfile.TemporaryDirectory(prefix="maskgit-page-") as work:
        demo = build(Page(model, *load_test_set(), Path(work)), cfg)
        print(f"app: serving on http://127.0.0.1:{a.port} (Ctrl-C stops it)")
        demo.launch(server_name="127.0.0.1", server_port=a.port, allowed_paths=[work], quiet=True,
                    theme=gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                                            font_mono=["ui-monospace", "monospace"]))


if __name__ == "__main__":
    run(main)
