"""Pictures people look at: PNGs, GIFs, frame grids and captions drawn with Pillow; charts
(lines, heatmaps, bars, the per-code motion figure) drawn with matplotlib (Agg canvas, no
pyplot state).

Images are ``(H, W, 3)`` uint8 arrays (float images in [0, 1] are accepted and rounded to
uint8). Every chart function draws the chart, saves it when given a path, and returns the image
as an ``(H, W, 3)`` uint8 array so callers can also log it.
"""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Mapping, Sequence
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from genie.media import check_rgb, save_png, to_uint8, upscale

# Tableau 10, the matplotlib default cycle: distinct and readable on white.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)
LEGEND_WIDTH = 26  # characters per legend line of `line_plot`
_WHITE = (255, 255, 255)
_BLACK = (0, 0, 0)

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


@lru_cache(maxsize=16)
def _font(size: int) -> Font:
    # DejaVu Sans where the system has it (it covers Greek, e.g. "ΔtPSNR"); otherwise the font
    # bundled with Pillow, or its fixed bitmap font when Pillow was built without FreeType.
    try:
        return ImageFont.truetype("DejaVuSans.ttf", size)
    except OSError:
        pass
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def _text_size(text: str, font: Font) -> tuple[int, int]:
    left, top, right, bottom = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox(
        (0, 0), text, font=font
    )
    return right - left, bottom - top


def _draw_text(
    draw: ImageDraw.ImageDraw,
    xy: tuple[float, float],
    text: str,
    font: Font,
    fill=_BLACK,
    anchor: str = "la",
) -> None:
    draw.text(xy, text, font=font, fill=fill, anchor=anchor)


def image_grid(frames, pad: int = 2, scale: int = 1, pad_value: int = 255) -> np.ndarray:
    """(R, C, H, W, 3) frames -> one (pad + R*(H*scale + pad), pad + C*(W*scale + pad), 3) image.

    Frame (r, c) sits at row offset ``pad + r*(H*scale + pad)`` and column offset
    ``pad + c*(W*scale + pad)``: ``pad`` pixels of ``pad_value`` surround and separate frames.
    """
    frames = to_uint8(frames, "frames")
    if frames.ndim != 5 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (R, C, H, W, 3) RGB, got shape {frames.shape}")
    frames = upscale(frames, scale)
    rows, cols, height, width, _ = frames.shape
    grid = np.full(
        (pad + rows * (height + pad), pad + cols * (width + pad), 3), pad_value, np.uint8
    )
    for r in range(rows):
        for c in range(cols):
            top, left = pad + r * (height + pad), pad + c * (width + pad)
            grid[top : top + height, left : left + width] = frames[r, c]
    return grid


def video_grid(videos, pad: int = 2, scale: int = 1, pad_value: int = 255) -> np.ndarray:
    """(R, C, T, H, W, 3) videos -> (T, H_grid, W_grid, 3): `image_grid` of every time step, for
    a GIF of e.g. real clips above generated ones."""
    videos = to_uint8(videos, "videos")
    if videos.ndim != 6 or videos.shape[-1] != 3:
        raise ValueError(f"videos must be (R, C, T, H, W, 3) RGB, got shape {videos.shape}")
    return np.stack(
        [image_grid(videos[:, :, t], pad, scale, pad_value) for t in range(videos.shape[2])]
    )


def _wrap(text: str, font: Font, width: int) -> list[str]:
    lines = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if line and _text_size(candidate, font)[0] > width:
                lines.append(line)
                line = word
            else:
                line = candidate
        lines.append(line)
    return lines


def label_image(
    image,
    text: str,
    font_size: int | None = None,
    background=_WHITE,
    color=_BLACK,
) -> np.ndarray:
    """Add a caption strip above an (H, W, 3) image -> (H + strip, W, 3) uint8.

    The caption is centred and word-wrapped to the image width (``\\n`` starts a new line); the
    font shrinks down to 8 px before a long word is allowed to run off the edge.
    """
    image = to_uint8(image)
    check_rgb(image, "image")
    width = image.shape[1]
    size = font_size or int(np.clip(width // 7, 9, 16))
    while True:
        font = _font(size)
        lines = _wrap(text, font, width - 4)
        fits = max(_text_size(line, font)[0] for line in lines) <= width - 4
        if fits or size <= 8 or font_size is not None:
            break
        size -= 1
    line_height = _text_size("Ag", font)[1] + 3
    strip = Image.new("RGB", (width, line_height * len(lines) + 4), background)
    draw = ImageDraw.Draw(strip)
    for i, line in enumerate(lines):
        _draw_text(draw, (width / 2, 2 + i * line_height), line, font, color, anchor="ma")
    return np.concatenate([np.asarray(strip), image], axis=0)


# --------------------------------------------------------------------------------------------
# Charts: matplotlib's object API on an Agg canvas, so no global backend or pyplot state is
# touched and nothing needs a display.


def _figure(width: int, height: int):
    """A matplotlib Figure of exactly width x height pixels (100 dpi)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width / 100, height / 100), dpi=100)


def _render(figure, path: str | os.PathLike | None) -> np.ndarray:
    """Draws `figure`, saves it as PNG at `path` unless None, returns (H, W, 3) uint8."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    picture = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    if path is not None:
        save_png(path, picture)
    return picture


def _color(index: int) -> str:
    red, green, blue = PALETTE[index % len(PALETTE)]
    return f"#{red:02x}{green:02x}{blue:02x}"


def line_plot(
    path: str | os.PathLike | None,
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    title: str,
    xlabel: str,
    ylabel: str,
    size: tuple[int, int] = (720, 450),
) -> np.ndarray:
    """Line chart of ``{name: (x, y)}`` series with markers, grid and a legend to the right,
    e.g. PSNR vs horizon for the model and the repeat-last-frame baseline.

    Non-finite points (an infinite PSNR) are left out and break the line there. Integer x
    values (horizons) get integer ticks. Saved as PNG at ``path`` unless it is None; returns
    the (H, W, 3) uint8 image of ``size`` pixels.
    """
    from matplotlib.ticker import MaxNLocator

    if not series:
        raise ValueError("line_plot needs at least one series")
    cleaned = {}
    for name, (x, y) in series.items():
        x, y = np.asarray(x, np.float64).reshape(-1), np.asarray(y, np.float64).reshape(-1)
        if x.shape != y.shape:
            raise ValueError(f"series {name!r} has {x.size} x values but {y.size} y values")
        finite = np.isfinite(x) & np.isfinite(y)
        cleaned[name] = (np.where(finite, x, np.nan), np.where(finite, y, np.nan))
    width, height = size
    figure = _figure(width, height)
    axes = figure.add_axes((0.1, 0.14, 0.62, 0.76))
    for index, (name, (x, y)) in enumerate(cleaned.items()):
        # Long names wrap, so the legend stays inside the picture.
        label = "\n".join(textwrap.wrap(name, LEGEND_WIDTH)) or name
        axes.plot(x, y, "-o", color=_color(index), lw=2, ms=5, label=label)
    xs = np.concatenate([x[np.isfinite(x)] for x, _ in cleaned.values()])
    if xs.size and np.all(xs == np.round(xs)):
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(True, color="0.88")
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    return _render(figure, path)


def heatmap(
    path: str | os.PathLike | None,
    matrix,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    title: str,
    xlabel: str = "",
    ylabel: str = "",
) -> np.ndarray:
    """(R, C) matrix drawn as shaded cells with the number written in each, e.g. a confusion
    matrix of latent codes (rows) against true actions (columns). Shading runs from white at
    the matrix minimum (or 0) to matplotlib's darkest "Blues" at its maximum. Returns the
    (H, W, 3) uint8 image.
    """
    matrix = np.asarray(matrix)
    if matrix.ndim != 2:
        raise ValueError(f"matrix must be 2-D, got shape {matrix.shape}")
    rows, cols = matrix.shape
    if len(row_labels) != rows or len(col_labels) != cols:
        raise ValueError(
            f"{len(row_labels)} row and {len(col_labels)} column labels for a {rows}x{cols} matrix"
        )
    values = matrix.astype(np.float64)
    integral = bool(np.issubdtype(matrix.dtype, np.integer) or np.all(values == np.round(values)))
    low = min(0.0, float(np.nanmin(values))) if values.size else 0.0
    high = float(np.nanmax(values)) if values.size else 1.0
    high = high if high > low else low + 1.0
    label_chars = max(len(str(label)) for label in col_labels)
    width = int(max(360, 160 + cols * max(60, 8 * label_chars)))
    height = int(140 + rows * 34)
    figure = _figure(width, height)
    axes = figure.add_axes((110 / width, 50 / height, 1 - 130 / width, 1 - 120 / height))
    axes.imshow(values, cmap="Blues", vmin=low, vmax=high, aspect="auto", interpolation="nearest")
    axes.set_xticks(range(cols), [str(label) for label in col_labels])
    axes.set_yticks(range(rows), [str(label) for label in row_labels])
    axes.xaxis.tick_top()
    axes.xaxis.set_label_position("top")
    for r in range(rows):
        for c in range(cols):
            value = values[r, c]
            text = "" if np.isnan(value) else (f"{int(value)}" if integral else f"{value:.2f}")
            dark = not np.isnan(value) and (value - low) / (high - low) > 0.5
            axes.text(c, r, text, ha="center", va="center", color="white" if dark else "black")
    figure.suptitle(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    return _render(figure, path)


def bar_chart(
    path: str | os.PathLike | None,
    values: Sequence[float],
    labels: Sequence[str] | None,
    title: str,
    xlabel: str = "",
    ylabel: str = "",
) -> np.ndarray:
    """Vertical bars, e.g. the usage count of each latent code. ``labels`` None numbers the bars
    0..N-1. With few bars each shows its value; with many, matplotlib thins the labels and the
    chart widens up to 1400 px. Returns the (H, W, 3) uint8 image."""
    from matplotlib.ticker import MaxNLocator

    values = np.asarray(values, np.float64).reshape(-1)
    count = values.size
    if count == 0:
        raise ValueError("bar_chart needs at least one value")
    labels = [str(i) for i in range(count)] if labels is None else [str(x) for x in labels]
    if len(labels) != count:
        raise ValueError(f"{len(labels)} labels for {count} values")
    width = int(max(480, min(1400, 120 + count * 40)))
    figure = _figure(width, 450)
    axes = figure.add_axes((90 / width, 0.14, 1 - 120 / width, 0.76))
    positions = np.arange(count)
    bars = axes.bar(positions, values, width=0.7, color=_color(0), linewidth=0)
    if count <= 32:
        integral = bool(np.all(values == np.round(values)))
        texts = [f"{int(v)}" if integral else f"{v:.3g}" for v in values]
        axes.bar_label(bars, texts, padding=2, fontsize=9)
        axes.set_xticks(positions, labels)
    else:
        axes.xaxis.set_major_locator(MaxNLocator(nbins=16, integer=True))
        axes.set_xticks(
            [int(t) for t in axes.get_xticks() if 0 <= t < count],
            [labels[int(t)] for t in axes.get_xticks() if 0 <= t < count],
        )
    axes.set_xlim(-0.6, count - 0.4)
    axes.grid(True, axis="y", color="0.88")
    axes.set_axisbelow(True)
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    return _render(figure, path)


def code_motion_figure(
    path: str | os.PathLike | None,
    dx: Sequence[float],
    dy: Sequence[float],
    shares: Sequence[float],
    mean_difference,
    last_frames,
    title: str = "What each latent action does",
) -> np.ndarray:
    """One column per latent code k, read top to bottom:

    1. an arrow of the mean content shift (dx, dy) in pixels per step of the real transitions
       the LAM assigned to k (image axes: y grows downwards), with its length and k's share of
       the transitions;
    2. ``mean_difference[k]``, the mean signed change x_{t+1} - x_t of those transitions
       (H, W), on a diverging scale shared by all codes (red brighter, blue darker);
    3. the last frame of the rollouts holding k from each prompt, ``last_frames`` (P, K, H, W, 3).

    Codes never inferred (NaN motion) say so. Matplotlib's object API on an Agg canvas, so no
    global backend or pyplot state is touched. Returns the (H, W, 3) uint8 image.
    """
    from matplotlib.figure import Figure

    dx, dy = np.asarray(dx, np.float64), np.asarray(dy, np.float64)
    shares = np.asarray(shares, np.float64)
    mean_difference = np.asarray(mean_difference, np.float64)
    last_frames = to_uint8(last_frames, "last_frames")
    count = dx.size
    if not (dy.size == shares.size == len(mean_difference) == last_frames.shape[1] == count):
        raise ValueError(
            f"{dx.size} dx, {dy.size} dy, {shares.size} shares, {len(mean_difference)} "
            f"difference images and {last_frames.shape[1]} rollout columns: need one per code"
        )
    prompts = last_frames.shape[0]
    rows = 2 + prompts
    figure = Figure(figsize=(1.7 * count + 1.2, 1.75 * rows + 0.5), dpi=100, layout="constrained")
    figure.suptitle(title)
    axes = figure.subplots(rows, count, squeeze=False)
    finite = np.isfinite(dx) & np.isfinite(dy)
    reach = 1.2 * max(1.0, float(np.abs(np.concatenate([dx[finite], dy[finite]])).max(initial=0)))
    limit = float(np.nanmax(np.abs(mean_difference))) if np.isfinite(mean_difference).any() else 0
    limit = limit or 1e-6
    image = None
    for k in range(count):
        arrow = axes[0, k]
        arrow.set_xlim(-reach, reach)
        arrow.set_ylim(reach, -reach)  # image axes: +dy points down
        arrow.set_aspect("equal")
        arrow.axhline(0, color="0.85", lw=0.8)
        arrow.axvline(0, color="0.85", lw=0.8)
        arrow.set_title(f"code {k}\n{shares[k]:.1%} of transitions", fontsize=9)
        arrow.tick_params(labelsize=7)
        if finite[k]:
            arrow.annotate(
                "",
                xy=(dx[k], dy[k]),
                xytext=(0, 0),
                arrowprops={"arrowstyle": "-|>", "color": "C3", "lw": 2},
            )
            arrow.plot([0], [0], "o", color="C3", ms=3)
            arrow.set_xlabel(
                f"dx {dx[k]:+.2f}, dy {dy[k]:+.2f}\n|shift| {math.hypot(dx[k], dy[k]):.2f} px",
                fontsize=8,
            )
        else:
            arrow.text(0, 0, "never\ninferred", ha="center", va="center", fontsize=9)
        difference = axes[1, k]
        difference.set_xticks([])
        difference.set_yticks([])
        if np.isfinite(mean_difference[k]).all():
            image = difference.imshow(
                mean_difference[k], cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest"
            )
        for p in range(prompts):
            frame = axes[2 + p, k]
            frame.imshow(last_frames[p, k], interpolation="nearest")
            frame.set_xticks([])
            frame.set_yticks([])
    axes[0, 0].set_ylabel("mean shift (px/step)", fontsize=8)
    axes[1, 0].set_ylabel("mean x[t+1] - x[t]", fontsize=8)
    for p in range(prompts):
        axes[2 + p, 0].set_ylabel(f"rollout end,\nprompt {p}", fontsize=8)
    if image is not None:
        figure.colorbar(image, ax=list(axes[1]), shrink=0.8, label="change")
    return _render(figure, path)
