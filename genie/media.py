"""Reading and writing pictures and videos: PNG, GIF and MP4 files, prompt files, frame sizes.

Frames are uint8 ``(..., H, W, 3)`` RGB arrays (float frames in [0, 1] are accepted where noted
and rounded to uint8). Pillow reads and writes images and GIFs, PyAV decodes and encodes other
video. Everything that touches a picture file in genie goes through here; `genie.plots` draws
pictures and charts, `genie.world` turns prompts into model inputs.
"""

from __future__ import annotations

import base64
import collections
import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm"}
VIDEO_SUFFIXES = {".mp4", ".gif", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}


# ---------------------------------------------------------------------------------------------
# Arrays


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


def check_rgb(image: np.ndarray, name: str, leading: str = "") -> None:
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
    check_rgb(image, "image")
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
    check_rgb(frames, "frames", leading="T")
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


# ---------------------------------------------------------------------------------------------
# Video files


def save_mp4(path: str | os.PathLike, frames: np.ndarray, fps: float = 10.0, scale: int = 1):
    """uint8 (T, H, W, 3) -> H.264 MP4 (MPEG-4 part 2 where libx264 is missing) via PyAV."""
    import av

    frames = upscale(np.asarray(frames, np.uint8), scale)
    # yuv420p needs even sides: pad the right and bottom edge by one pixel where odd.
    _, height, width, _ = frames.shape
    frames = np.pad(frames, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode="edge")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=max(1, round(fps)))
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "18"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def save_episode(frames: np.ndarray, stem: str | os.PathLike, *, fps: float, scale: int):
    """Writes STEM.gif and STEM.mp4; returns both paths."""
    stem = Path(stem)
    gif, mp4 = stem.with_suffix(".gif"), stem.with_suffix(".mp4")
    save_gif(gif, frames, fps=fps, scale=scale)
    save_mp4(mp4, frames, fps=fps, scale=scale)
    return gif, mp4


def save_video(path: str | os.PathLike, frames: np.ndarray, *, fps: float, scale: int) -> None:
    """A GIF or MP4, by the suffix of `path`."""
    suffix = Path(path).suffix.lower()
    if suffix == ".gif":
        save_gif(path, frames, fps=fps, scale=scale)
    elif suffix == ".mp4":
        save_mp4(path, frames, fps=fps, scale=scale)
    else:
        raise ValueError(f"--out {path}: write a .gif or an .mp4")


def png_base64(image: np.ndarray) -> str:
    """(H, W, 3) uint8 -> the PNG file as base64 text (for a data: URL)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


# ---------------------------------------------------------------------------------------------
# Reading prompts


def read_image(path: Path) -> np.ndarray:
    """An image file -> uint8 (1, H, W, 3)."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))[None]


def read_video(path: Path, last: int) -> np.ndarray:
    """The last `last` frames of a video file (GIF through Pillow, others through PyAV) ->
    uint8 (t, H, W, 3), t <= last."""
    frames: collections.deque = collections.deque(maxlen=last)
    if path.suffix.lower() == ".gif":
        from PIL import ImageSequence

        with Image.open(path) as image:
            for frame in ImageSequence.Iterator(image):
                frames.append(np.asarray(frame.convert("RGB")))
    else:
        import av

        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                frames.append(frame.to_ndarray(format="rgb24"))
    if not frames:
        raise ValueError(f"video {path} holds no frames")
    return np.stack(frames)


def read_prompt_file(path: str | os.PathLike, last: int) -> np.ndarray:
    """An image or video file -> uint8 (t, H, W, 3): the image, or the video's last frames."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {path} does not exist")
    suffix = path.suffix.lower()
    readers = [read_image, lambda p: read_video(p, last)]
    if suffix in VIDEO_SUFFIXES:
        readers.reverse()
    for reader in readers:
        try:
            return reader(path)
        except Exception:  # noqa: BLE001 - any failure means "not this kind of file"
            continue
    raise ValueError(
        f"prompt {path} is neither an image (png, jpg, ...) nor a video (mp4, gif, ...) that "
        "Pillow or PyAV can read"
    )


def fit_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """uint8 (..., H, W, 3) -> (..., size, size, 3): centre-cropped to a square, then resized
    (bilinear), with a warning naming both sizes. Frames of the right size pass untouched."""
    height, width = frames.shape[-3:-1]
    if (height, width) == (size, size):
        return frames
    warnings.warn(
        f"prompt frames are {height}x{width} (HxW) but the world was trained on {size}x{size}: "
        f"centre-cropping to a square and resizing to {size}x{size}",
        stacklevel=3,
    )
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = frames[..., top : top + side, left : left + side, :]
    flat = square.reshape(-1, side, side, 3)
    resized = [
        np.asarray(Image.fromarray(f).resize((size, size), Image.Resampling.BILINEAR)) for f in flat
    ]
    return np.stack(resized).reshape(*frames.shape[:-3], size, size, 3)
