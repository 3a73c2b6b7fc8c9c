import collections

import numpy as np
import pytest

from data_pipelines import loader
from tests.data_pipelines.conftest import COINRUN_CLIP_FRAMES


def _loader(data, **kwargs):
    name, data_dir = data
    kwargs = {"batch_size": 4, "process_index": 0, "process_count": 1} | kwargs
    return loader.make_loader(name, data_dir=data_dir, **kwargs)


def _take(iterator, n):
    return [next(iterator) for _ in range(n)]


def test_batches_are_frames_only(coinrun_data):
    batches = _take(iter(_loader(coinrun_data)), 3)
    for batch in batches:
        assert type(batch) is np.ndarray  # not a dict: no actions, levels or episodes
        assert batch.dtype == np.uint8
        assert batch.shape == (4, COINRUN_CLIP_FRAMES, 64, 64, 3)


def test_clip_frames_cuts_and_rejects_too_long(coinrun_data):
    batch = next(iter(_loader(coinrun_data, clip_frames=2)))
    assert batch.shape == (4, 2, 64, 64, 3)
    with pytest.raises(ValueError, match="coinrun_test"):
        _loader(coinrun_data, clip_frames=COINRUN_CLIP_FRAMES + 1)
    clips = loader.read_clips(
        *coinrun_data[:1], "train", data_dir=coinrun_data[1], limit=2, clip_frames=2
    )
    assert clips["frames"].shape[1] == 2 and clips["actions"].shape[1] == 1


def test_global_batch_must_divide_over_processes(coinrun_data):
    with pytest.raises(ValueError, match="divisible"):
        _loader(coinrun_data, batch_size=5, process_count=2)
    assert next(iter(_loader(coinrun_data, batch_size=8, process_count=2))).shape[0] == 4


def _validation_windows(coinrun_data, **kwargs) -> tuple[np.ndarray, list[np.ndarray]]:
    """The stored 4-frame validation clips and the loader's 2-frame clips in stored order."""
    name, data_dir = coinrun_data
    stored = loader.read_clips(name, "validation", data_dir=data_dir)["frames"]
    kwargs = dict(split="validation", batch_size=1, shuffle=False, num_epochs=1) | kwargs
    windows = [batch[0] for batch in _loader(coinrun_data, clip_frames=2, **kwargs)]
    assert len(windows) == len(stored)
    return stored, windows


def test_training_windows_start_at_random_offsets(coinrun_data):
    stored, windows = _validation_windows(coinrun_data)
    # Per clip, the offsets whose window equals the loader's (several where frames repeat).
    starts = [
        {start for start in range(3) if np.array_equal(clip[start : start + 2], window)}
        for clip, window in zip(stored, windows, strict=True)
    ]
    assert all(starts), "every window is consecutive stored frames"
    assert len(set().union(*starts)) == 3, "every offset 0..2 occurs"
    _, first = _validation_windows(coinrun_data, random_window=False)
    np.testing.assert_array_equal(np.stack(first), stored[:, :2])


@pytest.mark.parametrize("clip_frames", [None, 2])
def test_seeded_shuffle_is_deterministic(coinrun_data, clip_frames):
    kwargs = dict(clip_frames=clip_frames)
    first = _take(iter(_loader(coinrun_data, seed=3, **kwargs)), 2)
    again = _take(iter(_loader(coinrun_data, seed=3, **kwargs)), 2)
    other = _take(iter(_loader(coinrun_data, seed=4, **kwargs)), 2)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(first, other, strict=True))


@pytest.mark.parametrize("clip_frames", [None, 2])
def test_resume_continues_the_data_order_exactly(coinrun_data, clip_frames):
    iterator = iter(_loader(coinrun_data, seed=7, clip_frames=clip_frames))
    _take(iterator, 3)
    state = iterator.get_state()
    expected = _take(iterator, 4)
    resumed = iter(_loader(coinrun_data, seed=7, clip_frames=clip_frames))
    resumed.set_state(state)
    for a, b in zip(expected, _take(resumed, 4), strict=True):
        np.testing.assert_array_equal(a, b)


def test_epochs_and_repeat(coinrun_data):
    name, data_dir = coinrun_data
    n = loader.dataset_info(name, data_dir)["splits"]["validation"]
    one_epoch = list(_loader(coinrun_data, split="validation", num_epochs=1, batch_size=1))
    assert len(one_epoch) == n
    forever = iter(_loader(coinrun_data, split="validation", batch_size=1))
    assert len(_take(forever, n + 3)) == n + 3


def test_processes_read_disjoint_shards(coinrun_data):
    """Two simulated hosts together read each stored clip at most once."""
    name, data_dir = coinrun_data
    everything = loader.read_clips(name, "validation", data_dir=data_dir)["frames"]
    stored = collections.Counter(clip.tobytes() for clip in everything)
    read = collections.Counter()
    for index in range(2):
        shard = _loader(
            coinrun_data,
            split="validation",
            batch_size=2,
            process_index=index,
            process_count=2,
            num_epochs=1,
            shuffle=True,
        )
        read.update(clip.tobytes() for batch in shard for clip in batch)
    assert sum(read.values()) == 2 * (len(everything) // 2)
    assert all(read[key] <= stored[key] for key in read)  # disjoint, duplicates accounted for


def test_missing_dataset_names_path_and_command(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        loader.make_loader("nothing_here", batch_size=1, data_dir=tmp_path)
    assert str(tmp_path / "nothing_here") in str(error.value)
    assert "python -m data_pipelines.coinrun --name nothing_here" in str(error.value)


def test_data_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("GENIE_DATA_DIR", raising=False)
    assert loader.data_dir().name == "data"
    monkeypatch.setenv("GENIE_DATA_DIR", str(tmp_path / "env"))
    assert loader.data_dir() == tmp_path / "env"
    assert loader.data_dir(str(tmp_path / "flag")) == tmp_path / "flag"


def test_orbax_checkpoint_restores_the_data_order(coinrun_data, tmp_path):
    import grain
    import orbax.checkpoint as ocp

    iterator = iter(_loader(coinrun_data, seed=1, clip_frames=2))
    _take(iterator, 2)
    with ocp.CheckpointManager(tmp_path / "checkpoints") as manager:
        data = grain.checkpoint.CheckpointSave(iterator)
        manager.save(2, args=ocp.args.Composite(data=data))
        manager.wait_until_finished()
        expected = _take(iterator, 3)
        resumed = iter(_loader(coinrun_data, seed=1, clip_frames=2))
        manager.restore(
            2, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(resumed))
        )
    for a, b in zip(expected, _take(resumed, 3), strict=True):
        np.testing.assert_array_equal(a, b)
