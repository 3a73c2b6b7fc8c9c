"""Pictures people look at: PNGs, GIFs, frame grids and simple charts drawn with Pillow, and
the per-code motion figure drawn with matplotlib (Agg canvas, no pyplot state).

Images are ``(H, W, 3)`` uint8 arrays (float images in [0, 1] are accepted and rounded to
uint8). Every chart function draws the chart, saves it when given a path, and returns the image
as an ``(H, W, 3)`` uint8 array so callers can also log it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

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
_WHITE = (255, 255, 255)
_BLACK = (0, 0, 0)
_GRID = (225, 225, 225)
_AXIS = (60, 60, 60)

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


def to_uint8(image, name: str = "image") -> np.ndarray:
    """uint8 images pass through; float images in [0, 1] -> uint8 floor(clip(x, 0, 1) * 255 + 0.5),
    i.e. rounded half up, the same as `genie.models.tokenizer.unit_to_uint8` does inside jit."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    if "float" in image.dtype.name:  # numpy floats and ml_dtypes' bfloat16
        unit = np.clip(image.astype(np.float32), 0.0, 1.0)
        return np.floor(unit * np.float32(255.0) + np.float32(0.5)).astype(np.uint8)
    raise ValueError(f"{name} must be uint8 (0..255) or float in [0, 1], got {image.dtype}")


def _check_rgb(image: np.ndarray, name: str, leading: str = "") -> None:
    """``leading`` names the axes before (H, W, 3), e.g. "T" for frames."""
    if image.ndim != 3 + len(leading) or image.shape[-1] != 3:
        expected = "(" + "".join(f"{axis}, " for axis in leading) + "H, W, 3)"
        raise ValueError(f"{name} must be {expected} RGB, got shape {image.shape}")


def upscale(image, scale: int) -> np.ndarray:
    """Nearest-neighbour upscaling of the two axes before the channel axis: (..., H, W, 3) ->
    (..., H*scale, W*scale, 3). Keeps pixel art crisp."""
    if scale < 1 or int(scale) != scale:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    image = np.asarray(image)
    if scale == 1:
        return image
    return np.repeat(np.repeat(image, scale, axis=-3), scale, axis=-2)


def _ensure_parent(path: str | os.PathLike) -> None:
    parent = os.path.dirname(os.fspath(path))
    if parent:
        os.makedirs(parent, exist_ok=True)


def save_png(path: str | os.PathLike, image) -> np.ndarray:
    """Save an (H, W, 3) image as PNG (parent folders are created); returns it as uint8."""
    image = to_uint8(image)
    _check_rgb(image, "image")
    _ensure_parent(path)
    Image.fromarray(image, "RGB").save(path, format="PNG")
    return image


def save_gif(path: str | os.PathLike, frames, fps: float = 10.0, scale: int = 1, loop: int = 0):
    """Save (T, H, W, 3) frames as an animated GIF playing at ``fps``, looping forever by default
    (``loop=0``), each frame upscaled ``scale`` times with nearest neighbour.

    GIF stores delays in 1/100 s and at most 256 colours per frame (Pillow picks a palette per
    frame). Pillow merges consecutive identical frames into one longer frame, so a reader may
    count fewer frames than T while the playback time is unchanged.
    """
    frames = to_uint8(frames, "frames")
    _check_rgb(frames, "frames", leading="T")
    if len(frames) == 0:
        raise ValueError("save_gif needs at least one frame")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    frames = upscale(frames, scale)
    images = [Image.fromarray(frame, "RGB") for frame in frames]
    _ensure_parent(path)
    images[0].save(
        path,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=max(10, round(1000.0 / fps)),
        loop=loop,
    )


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
    _check_rgb(image, "image")
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
# Charts


def _nice_step(span: float, target_ticks: int) -> float:
    raw = span / max(target_ticks, 1)
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for multiple in (1.0, 2.0, 5.0, 10.0):
        if raw <= multiple * magnitude:
            return multiple * magnitude
    return 10.0 * magnitude


def _nice_ticks(low: float, high: float, target_ticks: int = 6, integer: bool = False):
    """Round-number ticks covering [low, high] -> (axis_low, axis_high, ticks)."""
    if high <= low:
        pad = abs(low) * 0.1 or 1.0
        low, high = low - pad, high + pad
    step = _nice_step(high - low, target_ticks)
    if integer:
        step = max(1.0, round(step))
    axis_low, axis_high = math.floor(low / step) * step, math.ceil(high / step) * step
    count = round((axis_high - axis_low) / step)
    return axis_low, axis_high, [axis_low + i * step for i in range(count + 1)]


def _tick_label(value: float, ticks: Sequence[float]) -> str:
    """Fewest decimals that write every tick of this step exactly (0.2 -> "0.2", 5 -> "5")."""
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else 1.0
    decimals = next(
        (d for d in range(7) if math.isclose(step * 10**d, round(step * 10**d), rel_tol=1e-6)), 6
    )
    return f"{value:.{decimals}f}"


def _vertical_text(text: str, font: Font, fill=_BLACK) -> Image.Image:
    width, height = _text_size(text, font)
    canvas = Image.new("RGBA", (width + 4, height + 6), (255, 255, 255, 0))
    ImageDraw.Draw(canvas).text((2, 0), text, font=font, fill=fill)
    return canvas.rotate(90, expand=True)


def _finish(canvas: Image.Image, path: str | os.PathLike | None) -> np.ndarray:
    image = np.asarray(canvas.convert("RGB"))
    if path is not None:
        save_png(path, image)
    return image


def line_plot(
    path: str | os.PathLike | None,
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    title: str,
    xlabel: str,
    ylabel: str,
    size: tuple[int, int] = (720, 450),
) -> np.ndarray:
    """Line chart of ``{name: (x, y)}`` series with axes, numbered ticks, grid and a legend,
    e.g. PSNR vs horizon for the model and the repeat-last-frame baseline.

    Non-finite points (an infinite PSNR) are left out and break the line there. Saved as PNG at
    ``path`` unless it is None; returns the (H, W, 3) uint8 image.
    """
    if not series:
        raise ValueError("line_plot needs at least one series")
    cleaned = {}
    for name, (x, y) in series.items():
        x, y = np.asarray(x, np.float64).reshape(-1), np.asarray(y, np.float64).reshape(-1)
        if x.shape != y.shape:
            raise ValueError(f"series {name!r} has {x.size} x values but {y.size} y values")
        cleaned[name] = (x, y)
    xs = np.concatenate([x[np.isfinite(x) & np.isfinite(y)] for x, y in cleaned.values()])
    ys = np.concatenate([y[np.isfinite(x) & np.isfinite(y)] for x, y in cleaned.values()])
    if xs.size == 0:
        xs, ys = np.zeros(1), np.zeros(1)

    width, height = size
    title_font, label_font, tick_font = _font(18), _font(14), _font(12)
    integer_x = bool(np.all(xs == np.round(xs)))
    x_low, x_high, x_ticks = _nice_ticks(xs.min(), xs.max(), 8, integer=integer_x)
    if integer_x:  # integer steps (horizons) start and end on the data, not on a padded tick
        x_low, x_high = xs.min(), max(xs.max(), xs.min() + 1)
        x_ticks = [t for t in x_ticks if x_low <= t <= x_high]
    y_low, y_high, y_ticks = _nice_ticks(ys.min(), ys.max(), 6)
    y_tick_labels = [_tick_label(t, y_ticks) for t in y_ticks]

    legend_width = max(_text_size(name, label_font)[0] for name in cleaned) + 40
    left = 30 + max(_text_size(t, tick_font)[0] for t in y_tick_labels) + 12
    right = width - legend_width - 20
    top, bottom = 50, height - 60
    if right - left < 100:
        raise ValueError(f"size {size} is too small for the legend; widen the plot")

    inset = 8  # keep markers on the axis limits clear of the frame

    def to_pixel(x: float, y: float) -> tuple[float, float]:
        px = left + inset + (x - x_low) / (x_high - x_low) * (right - left - 2 * inset)
        py = bottom - inset - (y - y_low) / (y_high - y_low) * (bottom - top - 2 * inset)
        return px, py

    canvas = Image.new("RGB", size, _WHITE)
    draw = ImageDraw.Draw(canvas)
    _draw_text(draw, ((left + right) / 2, 14), title, title_font, anchor="ma")
    for tick, text in zip(y_ticks, y_tick_labels, strict=True):
        _, py = to_pixel(x_low, tick)
        draw.line([(left, py), (right, py)], fill=_GRID)
        draw.line([(left - 5, py), (left, py)], fill=_AXIS)
        _draw_text(draw, (left - 8, py), text, tick_font, anchor="rm")
    for tick in x_ticks:
        px, _ = to_pixel(tick, y_low)
        draw.line([(px, top), (px, bottom)], fill=_GRID)
        draw.line([(px, bottom), (px, bottom + 5)], fill=_AXIS)
        _draw_text(draw, (px, bottom + 8), _tick_label(tick, x_ticks), tick_font, anchor="ma")
    draw.rectangle([left, top, right, bottom], outline=_AXIS)
    _draw_text(draw, ((left + right) / 2, height - 24), xlabel, label_font, anchor="ma")
    ylabel_image = _vertical_text(ylabel, label_font)
    canvas.paste(ylabel_image, (6, int((top + bottom - ylabel_image.height) / 2)), ylabel_image)

    for index, (name, (x, y)) in enumerate(cleaned.items()):
        color = PALETTE[index % len(PALETTE)]
        finite = np.isfinite(x) & np.isfinite(y)
        segment: list[tuple[float, float]] = []
        for xi, yi, ok in zip(x, y, finite, strict=True):
            if ok:
                segment.append(to_pixel(xi, yi))
                continue
            if len(segment) > 1:
                draw.line(segment, fill=color, width=2, joint="curve")
            segment = []
        if len(segment) > 1:
            draw.line(segment, fill=color, width=2, joint="curve")
        for px, py in (to_pixel(xi, yi) for xi, yi in zip(x[finite], y[finite], strict=True)):
            draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=color)
        legend_y = top + 8 + index * 22
        draw.line([(right + 14, legend_y + 7), (right + 34, legend_y + 7)], fill=color, width=3)
        _draw_text(draw, (right + 40, legend_y + 7), name, label_font, anchor="lm")
    return _finish(canvas, path)


def _cell_text(value: float, integral: bool) -> str:
    if integral:
        return f"{int(value)}"
    return f"{value:.2f}"


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
    matrix of latent codes (rows) against true actions (columns). Shading is linear from white
    at the matrix minimum (or 0) to dark blue at its maximum. Returns the (H, W, 3) uint8 image.
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
    texts = [[_cell_text(v, integral) for v in row] for row in values]

    title_font, label_font, cell_font = _font(18), _font(14), _font(13)
    cell_width = max(
        [44]
        + [_text_size(str(label), label_font)[0] + 12 for label in col_labels]
        + [_text_size(t, cell_font)[0] + 12 for row in texts for t in row]
    )
    cell_height = 30
    row_label_width = max(_text_size(str(label), label_font)[0] for label in row_labels) + 12
    left = 20 + (24 if ylabel else 0) + row_label_width
    top = 44 + (22 if xlabel else 0) + 22
    width = max(left + cols * cell_width + 20, _text_size(title, title_font)[0] + 40)
    height = top + rows * cell_height + 20

    canvas = Image.new("RGB", (width, height), _WHITE)
    draw = ImageDraw.Draw(canvas)
    _draw_text(draw, (width / 2, 12), title, title_font, anchor="ma")
    if xlabel:
        _draw_text(draw, (left + cols * cell_width / 2, 40), xlabel, label_font, anchor="ma")
    if ylabel:
        ylabel_image = _vertical_text(ylabel, label_font)
        y = int(top + rows * cell_height / 2 - ylabel_image.height / 2)
        canvas.paste(ylabel_image, (8, y), ylabel_image)

    low = min(0.0, float(np.nanmin(values))) if values.size else 0.0
    high = float(np.nanmax(values)) if values.size else 1.0
    span = high - low if high > low else 1.0
    dark = np.array([8, 48, 107], np.float64)  # ColorBrewer Blues, darkest
    for c, label in enumerate(col_labels):
        x = left + (c + 0.5) * cell_width
        _draw_text(draw, (x, top - 6), str(label), label_font, anchor="md")
    for r, label in enumerate(row_labels):
        y = top + (r + 0.5) * cell_height
        _draw_text(draw, (left - 8, y), str(label), label_font, anchor="rm")
        for c in range(cols):
            intensity = 0.0 if np.isnan(values[r, c]) else (values[r, c] - low) / span
            fill = tuple(np.round(255 + intensity * (dark - 255)).astype(int))
            x0, y0 = left + c * cell_width, top + r * cell_height
            draw.rectangle([x0, y0, x0 + cell_width, y0 + cell_height], fill=fill, outline=_GRID)
            text_color = _WHITE if intensity > 0.5 else _BLACK
            center = (x0 + cell_width / 2, y0 + cell_height / 2)
            _draw_text(draw, center, texts[r][c], cell_font, text_color, anchor="mm")
    return _finish(canvas, path)


def bar_chart(
    path: str | os.PathLike | None,
    values: Sequence[float],
    labels: Sequence[str] | None,
    title: str,
    xlabel: str = "",
    ylabel: str = "",
) -> np.ndarray:
    """Vertical bars, e.g. the usage count of each latent code. ``labels`` None numbers the bars
    0..N-1. With few bars each shows its value; with many, labels are thinned so they do not
    overlap and the chart widens up to 1400 px. Returns the (H, W, 3) uint8 image."""
    values = np.asarray(values, np.float64).reshape(-1)
    count = values.size
    if count == 0:
        raise ValueError("bar_chart needs at least one value")
    labels = [str(i) for i in range(count)] if labels is None else [str(x) for x in labels]
    if len(labels) != count:
        raise ValueError(f"{len(labels)} labels for {count} values")

    title_font, label_font, tick_font = _font(18), _font(14), _font(12)
    y_low, y_high, y_ticks = _nice_ticks(min(0.0, values.min()), max(values.max(), 0.0), 6)
    y_tick_labels = [_tick_label(t, y_ticks) for t in y_ticks]
    left = 30 + max(_text_size(t, tick_font)[0] for t in y_tick_labels) + 12
    slot = max(1.0, min(60.0, 900.0 / count))
    plot_width = int(max(400, min(1400 - left - 20, slot * count)))
    slot = plot_width / count
    width = left + plot_width + 20
    height = 450
    top, bottom = 50, height - 70

    def to_y(value: float) -> float:
        return bottom - (value - y_low) / (y_high - y_low) * (bottom - top)

    canvas = Image.new("RGB", (width, height), _WHITE)
    draw = ImageDraw.Draw(canvas)
    _draw_text(draw, (width / 2, 14), title, title_font, anchor="ma")
    for tick, text in zip(y_ticks, y_tick_labels, strict=True):
        y = to_y(tick)
        draw.line([(left, y), (left + plot_width, y)], fill=_GRID)
        draw.line([(left - 5, y), (left, y)], fill=_AXIS)
        _draw_text(draw, (left - 8, y), text, tick_font, anchor="rm")

    label_width = max(_text_size(label, tick_font)[0] for label in labels) + 6
    label_every = max(1, math.ceil(label_width / slot))
    show_values = count <= 32
    integral = bool(np.all(values == np.round(values)))
    zero = to_y(0.0)
    for i, value in enumerate(values):
        x0 = left + i * slot + (0.15 * slot if slot >= 4 else 0)
        x1 = left + (i + 1) * slot - (0.15 * slot if slot >= 4 else 0)
        y = to_y(value)
        draw.rectangle([x0, min(y, zero), max(x0, x1 - 1), max(y, zero)], fill=PALETTE[0])
        center = left + (i + 0.5) * slot
        if i % label_every == 0:
            draw.line([(center, bottom), (center, bottom + 4)], fill=_AXIS)
            _draw_text(draw, (center, bottom + 7), labels[i], tick_font, anchor="ma")
        if show_values:
            text = _cell_text(value, integral) if integral else f"{value:.3g}"
            _draw_text(draw, (center, min(y, zero) - 3), text, tick_font, anchor="md")
    draw.rectangle([left, top, left + plot_width, bottom], outline=_AXIS)
    _draw_text(draw, (left + plot_width / 2, height - 28), xlabel, label_font, anchor="ma")
    if ylabel:
        ylabel_image = _vertical_text(ylabel, label_font)
        canvas.paste(ylabel_image, (6, int((top + bottom - ylabel_image.height) / 2)), ylabel_image)
    return _finish(canvas, path)


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
    from matplotlib.backends.backend_agg import FigureCanvasAgg
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
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    picture = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    if path is not None:
        save_png(path, picture)
    return picture
