import json

import numpy as np
import pytest

from data_pipelines import loader
from data_pipelines.video_folder import build_video_folder
from data_pipelines.video_folder.sources import (
    ClipSettings,
    frame_differences,
    moving_shares,
    select_clips,
)
from tests.data_pipelines.conftest import (
    VIDEO_BUILD,
    VIDEO_CLIP_FRAMES,
    VIDEO_SIZE,
    moving_square,
)


def _report(video_data):
    return json.loads((video_data[2] / "build_report.json").read_text())


def test_clips_from_videos_and_image_folder(video_data):
    name, data_dir, _ = video_data
    info = loader.dataset_info(name, data_dir=data_dir)
    assert not info["has_actions"]
    assert info["image_size"] == (VIDEO_SIZE, VIDEO_SIZE)
    sources = set()
    for split in info["splits"]:
        clips = loader.read_clips(name, split, data_dir=data_dir)
        assert clips["frames"].dtype == np.uint8
        assert clips["frames"].shape[1:] == (VIDEO_CLIP_FRAMES, VIDEO_SIZE, VIDEO_SIZE, 3)
        sources |= {s.decode() for s in clips["source"]}
    assert {"moving.mp4", "nested/moving_fast.avi", "frames", "cut.mp4"} <= sources
    batch = next(
        iter(
            loader.make_loader(
                name,
                split=next(iter(info["splits"])),
                batch_size=1,
                data_dir=data_dir,
                process_index=0,
                process_count=1,
            )
        )
    )
    assert type(batch) is np.ndarray and batch.shape == (1, VIDEO_CLIP_FRAMES, 16, 16, 3)


def test_splits_are_disjoint_by_source(video_data):
    name, data_dir, _ = video_data
    info = loader.dataset_info(name, data_dir=data_dir)
    assert len(info["splits"]) >= 2
    seen = {}
    for split in info["splits"]:
        for source in set(loader.read_clips(name, split, data_dir=data_dir)["source"].tolist()):
            assert seen.setdefault(source, split) == split


def test_corrupt_and_truncated_files_are_reported_by_name(video_data):
    report = _report(video_data)
    assert set(report["failed"]) == {"corrupt.mp4", "truncated.mp4"}
    text = (video_data[2] / "build_report.txt").read_text()
    assert "corrupt.mp4" in text and "truncated.mp4" in text


def test_static_and_scene_cut_clips_are_dropped(video_data):
    by_source = {s["source"]: s for s in _report(video_data)["sources"]}
    assert by_source["static.mp4"]["clips"] == 0 and by_source["static.mp4"]["static_clips"] > 0
    assert by_source["cut.mp4"]["scene_cut_clips"] > 0 and by_source["cut.mp4"]["clips"] > 0
    assert (
        by_source["moving.mp4"]["static_clips"] == by_source["moving.mp4"]["scene_cut_clips"] == 0
    )


def test_select_clips_thresholds():
    settings = ClipSettings(clip_frames=4, stride=4)
    moving = moving_square(8, size=16, step=2)
    static = np.repeat(moving[:1], 8, axis=0)
    cut = moving.copy()
    cut[6:] = 255 - cut[6:]
    assert select_clips(np.concatenate([moving, static, cut]), settings) == ([0, 4, 16], 2, 1)


def test_a_game_where_only_a_ball_and_a_paddle_move_is_not_static():
    """Atari-like footage: mean frame difference far under 1 level, yet every clip is action."""
    frames = np.zeros((16, 64, 64, 3), np.uint8)
    for t in range(16):
        frames[t, 20 + t : 22 + t, 10 + 2 * t : 12 + 2 * t] = 236  # the ball, 2x2
        frames[t, 30 + t % 4 : 38 + t % 4, 60:62] = 200  # the paddle, 2x8
    assert frame_differences(frames).mean() < 1.0  # what the old mean test dropped
    settings = ClipSettings(clip_frames=8, stride=8)
    assert select_clips(frames, settings) == ([0, 8], 0, 0)
    # Compression-like noise of a few levels on a still picture is not motion.
    noise = np.random.default_rng(0).integers(-4, 5, size=frames.shape)
    still = np.clip(100 + noise, 0, 255).astype(np.uint8)
    assert select_clips(still, settings) == ([], 2, 0)
    # Step 0: the ball leaves 4 pixels and covers 4 new ones, the paddle 2 + 2.
    np.testing.assert_allclose(moving_shares(frames)[0], (4 + 4 + 2 + 2) / 64**2)


def test_empty_folder_is_an_error_naming_it(tmp_path):
    (tmp_path / "notes.txt").write_text("no videos here")
    with pytest.raises(ValueError, match=str(tmp_path)):
        build_video_folder(tmp_path, "empty", data_dir=tmp_path / "data", workers=1, verbose=False)


def test_folder_of_only_corrupt_video_is_an_error_naming_it(tmp_path):
    source = tmp_path / "bad"
    source.mkdir()
    (source / "broken.webm").write_bytes(b"\x00garbage" * 50)
    with pytest.raises(ValueError, match="no decodable video") as error:
        build_video_folder(source, "bad", data_dir=tmp_path / "data", workers=1, verbose=False)
    assert str(source) in str(error.value) and "broken.webm" in str(error.value)
    assert not (tmp_path / "data" / "bad").exists()


def test_a_dataset_rebuilt_in_process_is_read_afresh(video_source_dir, tmp_path):
    """The loader caches TFDS builders; an --overwrite rebuild must not be read as the old one."""
    settings = dict(
        fps=10, size=VIDEO_SIZE, clip_frames=VIDEO_CLIP_FRAMES, data_dir=tmp_path, workers=1
    )
    build_video_folder(video_source_dir, "rebuilt", stride=2, verbose=False, **settings)
    before = sum(loader.dataset_info("rebuilt", tmp_path)["splits"].values())
    build_video_folder(
        video_source_dir, "rebuilt", stride=4, overwrite=True, verbose=False, **settings
    )
    after = loader.dataset_info("rebuilt", tmp_path)["splits"]
    assert 0 < sum(after.values()) < before
    frames = sum(len(loader.read_clips("rebuilt", s, data_dir=tmp_path)["frames"]) for s in after)
    assert frames == sum(after.values())


def test_a_beam_directrunner_build_equals_the_in_process_build(
    video_data, video_source_dir, tmp_path, monkeypatch
):
    """The same folder built on Apache Beam (DirectRunner, both steps: decoding and TFDS's Beam
    writer): the same splits, clip for clip in the same order, and the same report."""
    beam = pytest.importorskip("apache_beam")
    from data_pipelines.loader import dataset_info, read_clips
    from data_pipelines.video_folder import builder, sources

    # Both steps really run on Beam: decoding through process_indexed, clips through a
    # transform handed to TFDS.
    calls = {"transforms": 0}
    process_indexed, generate = sources.process_indexed, builder.GenieVideoFolder._generate_examples
    decoded_log = tmp_path / "decoded.txt"  # Beam runs a pickled copy: count in a file

    def counting_process(task):
        with open(decoded_log, "a") as log:
            log.write(f"{task[3]}\n")
        return process_indexed(task)

    def checked_generate(self, results):
        examples = generate(self, results)
        calls["transforms"] += isinstance(examples, beam.PTransform)
        return examples

    monkeypatch.setattr(sources, "process_indexed", counting_process)
    monkeypatch.setattr(builder.GenieVideoFolder, "_generate_examples", checked_generate)

    name, data_dir, path = video_data
    beam_path = build_video_folder(
        video_source_dir,
        "videos_beam",
        **VIDEO_BUILD,
        data_dir=tmp_path,
        beam_options="--runner=DirectRunner",
        verbose=False,
    )
    in_process_info, beam_info = dataset_info(name, data_dir), dataset_info("videos_beam", tmp_path)
    decoded = sorted(int(line) for line in decoded_log.read_text().split())
    assert decoded == list(range(len(_report(video_data)["sources"])))
    assert calls["transforms"] == len(in_process_info["splits"])
    assert beam_info["splits"] == in_process_info["splits"]
    for split in in_process_info["splits"]:
        expected = read_clips(name, split, data_dir=data_dir)
        built = read_clips("videos_beam", split, data_dir=tmp_path)
        assert list(built["source"]) == list(expected["source"]), split
        np.testing.assert_array_equal(built["frames"], expected["frames"])
        np.testing.assert_array_equal(built["start_frame"], expected["start_frame"])
    report, beam_report = (
        json.loads((p / "build_report.json").read_text()) for p in (path, beam_path)
    )
    assert beam_report["failed"] == report["failed"] and report["failed"]  # corrupt files named
    assert beam_report["sources"] == report["sources"]
    assert beam_report["splits"] == report["splits"]
    assert (beam_path / "build_report.txt").read_text() == ((path / "build_report.txt").read_text())
