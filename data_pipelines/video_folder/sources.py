"""Finding, decoding and cutting unlabeled video into clips (no TFDS here: workers import this).

A source is a video file (mp4, webm, mkv, avi, gif, mov) or a folder of numbered images
(png, jpg), which plays at `image_fps`. Frames are resampled to the target fps (a frame is
repeated when the source is slower), resized so they cover HxW and center-cropped, then cut
into clips of T frames every `stride` frames. A clip is dropped as static when on average
fewer than `static_share` of its pixels move from one frame to the next (a pixel moves when a
channel changes by more than MOVING_LEVEL of 255: above compression noise), and as a scene cut
when any one step's mean absolute difference exceeds `scene_cut_threshold` (0..255 scale).
Static is a share of moving pixels, not a mean difference, because in many games only a ball
and a paddle move: in 64x64 Atari Pong or Breakout that is well under 1% of the pixels and a
mean difference under 1 level, yet every clip is action.
"""

from __future__ import annotations

import dataclasses
import hashlib
import pathlib
import re

import numpy as np

# A pixel moves between two frames when one of its channels changes by more than this (0..255).
MOVING_LEVEL = 12

VIDEO_SUFFIXES = {".mp4", ".webm", ".mkv", ".avi", ".gif", ".mov"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


@dataclasses.dataclass(frozen=True)
class ClipSettings:
    fps: float = 10.0
    height: int = 64
    width: int = 64
    clip_frames: int = 16
    stride: int = 8
    # A clip whose steps move on average fewer than this share of the pixels is static: 0.001
    # is 4 pixels of a 64x64 frame, less than a ball and a paddle.
    static_share: float = 0.001
    scene_cut_threshold: float = 40.0
    image_fps: float | None = None  # a numbered-image folder's frame rate; None: the target fps


@dataclasses.dataclass
class SourceResult:
    source: str  # path relative to the source folder
    frames_file: str | None = None  # staged (N, H, W, 3) uint8 .npy; None when it failed
    clip_starts: list[int] = dataclasses.field(default_factory=list)
    frames: int = 0
    static_clips: int = 0
    scene_cut_clips: int = 0
    error: str | None = None


def _natural_key(path: pathlib.Path):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def find_sources(root: pathlib.Path) -> list[pathlib.Path]:
    """Video files, and folders holding images, under `root`, sorted."""
    sources = []
    image_folders = set()
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        suffix = path.suffix.lower()
        if suffix in VIDEO_SUFFIXES:
            sources.append(path)
        elif suffix in IMAGE_SUFFIXES:
            image_folders.add(path.parent)
    return sorted(sources + list(image_folders))


def split_of_source(relative: str, validation_fraction: float, test_fraction: float) -> str:
    """A stable split from a hash of the source's relative path."""
    digest = hashlib.sha256(relative.encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + validation_fraction:
        return "validation"
    return "train"


def _resize_crop(image, height: int, width: int) -> np.ndarray:
    """PIL image -> uint8 (height, width, 3): scale to cover, then center-crop."""
    from PIL import Image

    image = image.convert("RGB")
    w, h = image.size
    scale = max(height / h, width / w)
    new_w, new_h = max(width, round(w * scale)), max(height, round(h * scale))
    image = image.resize((new_w, new_h), Image.BILINEAR, reducing_gap=2.0)
    left, top = (new_w - width) // 2, (new_h - height) // 2
    return np.asarray(image.crop((left, top, left + width, top + height)))


def _resample(timed_frames, fps: float):
    """Yields what a `fps` camera sees: for each tick k/fps, the last frame shown by then."""
    next_tick = last_time = None
    previous = None
    for time, frame in timed_frames:
        if next_tick is None:
            next_tick = time
        while previous is not None and time > next_tick + 1e-6:
            yield previous
            next_tick += 1 / fps
        previous, last_time = frame, time
    if previous is not None and next_tick <= last_time + 1e-6:
        yield previous


def decode_video(path: pathlib.Path, settings: ClipSettings) -> np.ndarray:
    import av

    def timed_frames():
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError("no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            rate = float(stream.average_rate or stream.guessed_rate or 25)
            for index, frame in enumerate(container.decode(stream)):
                time = frame.time if frame.time is not None else index / rate
                yield time, frame

    # Resize only frames that survive resampling.
    frames = [
        _resize_crop(frame.to_image(), settings.height, settings.width)
        for frame in _resample(timed_frames(), settings.fps)
    ]
    if not frames:
        raise ValueError("no frames could be decoded")
    return np.stack(frames)


def decode_images(folder: pathlib.Path, settings: ClipSettings) -> np.ndarray:
    from PIL import Image

    files = sorted(
        (p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=_natural_key
    )
    image_fps = settings.image_fps or settings.fps

    def timed_frames():
        for index, file in enumerate(files):
            with Image.open(file) as image:
                yield index / image_fps, _resize_crop(image, settings.height, settings.width)

    return np.stack(list(_resample(timed_frames(), settings.fps)))


def frame_differences(frames: np.ndarray) -> np.ndarray:
    """(N, H, W, C) -> (N-1,) mean absolute difference between consecutive frames."""
    return np.abs(np.diff(frames.astype(np.int16), axis=0)).mean(axis=(1, 2, 3))


def moving_shares(frames: np.ndarray) -> np.ndarray:
    """(N, H, W, C) -> (N-1,) share of the pixels that move between consecutive frames (a
    channel changing by more than MOVING_LEVEL)."""
    change = np.abs(np.diff(frames.astype(np.int16), axis=0)).max(axis=-1)
    return (change > MOVING_LEVEL).mean(axis=(1, 2))


def select_clips(frames: np.ndarray, settings: ClipSettings) -> tuple[list[int], int, int]:
    """Start frames of the kept clips, and the numbers dropped as static and as scene cuts."""
    t = settings.clip_frames
    diffs, shares = frame_differences(frames), moving_shares(frames)
    kept, static, cuts = [], 0, 0
    for start in range(0, len(frames) - t + 1, settings.stride):
        window = diffs[start : start + t - 1]
        if window.max() > settings.scene_cut_threshold:
            cuts += 1
        elif shares[start : start + t - 1].mean() < settings.static_share:
            static += 1
        else:
            kept.append(start)
    return kept, static, cuts


def process_source(
    path: pathlib.Path, root: pathlib.Path, stage: pathlib.Path, index: int, settings: ClipSettings
) -> SourceResult:
    """Worker task: decode one source, stage its frames as .npy; errors are returned, not raised."""
    result = SourceResult(source=str(path.relative_to(root)))
    try:
        frames = decode_images(path, settings) if path.is_dir() else decode_video(path, settings)
    except Exception as error:  # any unreadable input is reported by name, never fatal
        result.error = f"{type(error).__name__}: {error}".strip()
        return result
    result.frames = len(frames)
    result.clip_starts, result.static_clips, result.scene_cut_clips = select_clips(frames, settings)
    if result.clip_starts:
        result.frames_file = str(stage / f"{index:06d}.npy")
        np.save(result.frames_file, frames)
    return result


def process_source_star(task) -> SourceResult:
    return process_source(*task)


def process_indexed(task) -> tuple[int, SourceResult]:
    """`process_source` of a task, with the task's index (Beam returns results unordered)."""
    return task[3], process_source(*task)
