"""The training GIF: the per-epoch sample grids of a run, one frame per epoch.

Training decodes the same fixed latents z every epoch (``pictures/samples/epoch_NNN.png``),
so the animation shows one set of samples sharpening as the decoder learns.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

from PIL import Image, ImageDraw

from vaekit.atomic import atomic_write_bytes
from vaekit.errors import RunError
from vaekit.train.checkpoint import PICTURES_DIR
from vaekit.viz.grid import label_font

SAMPLES_DIR = "samples"
GIF_FILE = "training.gif"
_FRAME = re.compile(r"^epoch_(\d+)\.png$")


def frame_paths(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(epoch, path) of each per-epoch sample grid of a run, in numeric epoch order."""
    folder = Path(run_dir) / PICTURES_DIR / SAMPLES_DIR
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _FRAME.match(path.name)
        if match and path.is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def _thin(frames: list[tuple[int, Path]], max_frames: int | None) -> list[tuple[int, Path]]:
    """At most ``max_frames`` evenly spread frames, always keeping the first and the last."""
    if max_frames is None or len(frames) <= max_frames:
        return frames
    if max_frames < 2:
        return frames[-1:]
    last = len(frames) - 1
    picks = sorted({round(i * last / (max_frames - 1)) for i in range(max_frames)})
    return [frames[i] for i in picks]


def captioned_frame(
    image: Image.Image, caption: str, strip: int, size: tuple[int, int]
) -> Image.Image:
    """``image`` below a white strip of height ``strip`` holding ``caption``, on a fixed canvas."""
    mode = "RGB" if image.mode not in ("L", "1") else "L"
    image = image.convert(mode)
    white = 255 if mode == "L" else (255, 255, 255)
    ink = 20 if mode == "L" else (20, 20, 20)
    canvas = Image.new(mode, (size[0], size[1] + strip), white)
    canvas.paste(image, (0, strip))
    font = label_font(max(11, min(20, int(strip * 0.62))))
    ImageDraw.Draw(canvas).text((8, strip // 2), caption, fill=ink, font=font, anchor="lm")
    return canvas


def training_gif(
    run_dir: str | Path,
    out_path: str | Path | None = None,
    *,
    duration_ms: int = 500,
    final_hold_ms: int = 2000,
    max_frames: int | None = None,
) -> Path:
    """Write an endlessly looping GIF of the run's per-epoch sample grids; returns its path.

    Each frame carries "epoch N / LAST" in a caption strip above the grid (never over the
    images); the last frame stays up for ``final_hold_ms``. ``max_frames`` thins long runs
    evenly. Default output: ``RUN/pictures/training.gif``.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: no such run directory")
    frames = _thin(frame_paths(run_dir), max_frames)
    if not frames:
        where = run_dir / PICTURES_DIR / SAMPLES_DIR
        raise RunError(
            f"{run_dir}: no per-epoch sample frames (expected {where}/epoch_NNN.png); "
            "train the run for at least one epoch first"
        )
    images = []
    for _, path in frames:
        try:
            with Image.open(path) as img:
                img.load()
                images.append(img.copy())
        except (OSError, SyntaxError, ValueError) as err:  # PIL's errors for damaged files
            raise RunError(f"{path}: cannot read this training frame ({err})") from None
    width = max(img.width for img in images)
    height = max(img.height for img in images)
    strip = max(22, min(40, height // 14))
    last = frames[-1][0]
    rendered = [
        captioned_frame(img, f"epoch {epoch} / {last}", strip, (width, height))
        for (epoch, _), img in zip(frames, images, strict=True)
    ]
    durations = [duration_ms] * len(rendered)
    durations[-1] = max(duration_ms, final_hold_ms)
    buf = io.BytesIO()
    rendered[0].save(
        buf,
        format="GIF",
        save_all=True,
        append_images=rendered[1:],
        duration=durations,
        loop=0,
        disposal=1,
    )
    out = Path(out_path) if out_path is not None else run_dir / PICTURES_DIR / GIF_FILE
    atomic_write_bytes(out, buf.getvalue())
    return out
