"""Tiny datasets built once per session into pytest temporary folders."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

COINRUN_EPISODES = 10  # levels 0..9: level 8 is validation, level 9 is test
COINRUN_CLIP_FRAMES = 4
VIDEO_SIZE = 16
VIDEO_CLIP_FRAMES = 4
# How `video_data` is built from `video_source_dir` (the Beam build test repeats it).
VIDEO_BUILD = dict(
    fps=10,
    size=VIDEO_SIZE,
    clip_frames=VIDEO_CLIP_FRAMES,
    stride=2,
    validation_fraction=0.3,
    test_fraction=0.3,
)


def moving_square(
    frames: int, size: int = 32, background: int = 0, step: int = 1, start: int = 0
) -> np.ndarray:
    """(frames, size, size, 3) uint8: an 8x8 square sliding right, wrapping around."""
    video = np.full((frames, size, size, 3), background, np.uint8)
    for t in range(frames):
        x = (start + t * step) % (size - 8)
        video[t, 12:20, x : x + 8] = (255 - background, 128, 64)
    return video


def write_video(path: pathlib.Path, frames: np.ndarray, fps: int = 20, codec: str = "mpeg4"):
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = {"qscale": "2"} if codec == "mpeg4" else {}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="session")
def coinrun_data(tmp_path_factory) -> tuple[str, pathlib.Path]:
    """(name, data_dir) of a CoinRun dataset of 10 episodes of 4-frame clips."""
    from data_pipelines.coinrun import build_coinrun

    data_dir = tmp_path_factory.mktemp("coinrun_data")
    build_coinrun(
        "coinrun_test",
        COINRUN_EPISODES,
        clip_frames=COINRUN_CLIP_FRAMES,
        seed=0,
        data_dir=data_dir,
        workers=1,
        verbose=False,
    )
    return "coinrun_test", data_dir


@pytest.fixture(scope="session")
def video_source_dir(tmp_path_factory) -> pathlib.Path:
    """A folder tree of small videos, one corrupt and one truncated, and a PNG sequence."""
    from PIL import Image

    root = tmp_path_factory.mktemp("videos")
    write_video(root / "moving.mp4", moving_square(40))
    (root / "nested").mkdir()
    write_video(root / "nested" / "moving_fast.avi", moving_square(40, step=2, start=5))
    write_video(root / "static.mp4", np.full((40, 32, 32, 3), 90, np.uint8))
    # A hard cut from a dark scene to a bright one half way through.
    cut = np.concatenate([moving_square(20), moving_square(20, background=255)])
    write_video(root / "cut.mp4", cut)
    (root / "corrupt.mp4").write_bytes(b"this is not a video" * 100)
    whole = (root / "moving.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(whole[: len(whole) // 3])
    images = root / "frames"
    images.mkdir()
    for t, frame in enumerate(moving_square(20, start=3)):
        Image.fromarray(frame).save(images / f"frame_{t}.png")  # frame_10 sorts after frame_9
    return root


@pytest.fixture(scope="session")
def video_data(tmp_path_factory, video_source_dir) -> tuple[str, pathlib.Path, pathlib.Path]:
    """(name, data_dir, dataset folder) built from `video_source_dir`."""
    from data_pipelines.video_folder import build_video_folder

    data_dir = tmp_path_factory.mktemp("video_data")
    path = build_video_folder(
        video_source_dir,
        "videos_test",
        **VIDEO_BUILD,
        data_dir=data_dir,
        workers=1,
        verbose=False,
    )
    return "videos_test", data_dir, path
