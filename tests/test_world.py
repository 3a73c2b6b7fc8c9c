"""genie.world: stepping, action alignment, fixed-shape compilation, prompts and bad inputs."""

from __future__ import annotations

import shutil

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from genie import inference
from genie.config import load_config
from genie.models.maskgit import rollout as maskgit_rollout
from genie.world import World
from tests.conftest import moving_square_clips
from tests.tiny_world import tiny_models

T = 4  # tiny_config's clip_frames: the world's context


@pytest.fixture(scope="module")
def tiny():
    return tiny_models()


@pytest.fixture(scope="module")
def clip():
    return moving_square_clips(1, frames=6)[0]  # (6, 16, 16, 3) uint8


def make_world(tiny, **kwargs):
    config, models = tiny
    return World(config, models, **kwargs)


def test_step_shapes_determinism_and_no_recompilation(tiny, clip):
    world = make_world(tiny, seed=3)
    first = world.reset(clip[:1])
    assert first.shape == (16, 16, 3) and first.dtype == np.uint8
    actions = [0, 1, 2, 3, 1, 2, 0]  # T + 3 steps: the context fills, then slides 4 times
    frames = [world.step(actions[0])]
    traced = inference.trace_counts["step"]
    frames += [world.step(a) for a in actions[1:]]
    assert inference.trace_counts["step"] == traced, "a later step recompiled"
    assert world.context_tokens[2] == T
    for frame in frames:
        assert frame.shape == (16, 16, 3) and frame.dtype == np.uint8
    episode = world.frames
    assert episode.shape == (1 + len(actions), 16, 16, 3)
    np.testing.assert_array_equal(episode[0], clip[0])

    # Same seed, prompt and actions: the same frames, in a new world or after a reset.
    again = make_world(tiny, seed=3)
    again.reset(clip[:1])
    np.testing.assert_array_equal(again.rollout(np.array([actions]))[0], np.stack(frames))
    world.reset(clip[:1])
    np.testing.assert_array_equal(world.rollout(actions)[0], np.stack(frames))
    assert inference.trace_counts["step"] == traced


def test_tokens_match_maskgit_rollout_through_the_sliding_window(tiny, clip):
    """World.step builds exactly the buffers of `maskgit.rollout`: with a 2-frame prompt (whose
    latent action the LAM infers) and T + 2 steps, the final context holds the same tokens."""
    _, models = tiny
    world = make_world(tiny, seed=5)
    world.reset(clip[:2])
    prompt_tokens, prompt_actions, _ = world.context_tokens  # the tokenizer's and LAM's
    actions = np.array([[1, 3, 0, 2, 2, 1]])
    world.rollout(actions)
    tokens, buffer_actions, count = world.context_tokens

    expected = maskgit_rollout(
        models["dynamics"],
        jnp.asarray(prompt_tokens[:, :2]),
        jnp.asarray(actions),
        world._key,
        steps=world.steps,
        temperature=world.temperature,
        prompt_actions=jnp.asarray(prompt_actions[:, :1]),
    )
    assert count == T
    np.testing.assert_array_equal(tokens, np.asarray(expected)[:, -T:])
    # actions[:, t] turns slot t into slot t+1: the last T-1 actions taken.
    np.testing.assert_array_equal(buffer_actions, actions[:, -(T - 1) :])


def test_action_of_step_k_changes_frame_k_plus_1_and_nothing_before(tiny, clip):
    runs = {}
    for last in (0, 3):
        world = make_world(tiny, seed=1)
        world.reset(clip[:2])
        world.rollout([2, 1, last])
        runs[last] = (world.frames, world.context_tokens[0])
    (frames_a, tokens_a), (frames_b, tokens_b) = runs[0], runs[3]
    np.testing.assert_array_equal(frames_a[:2], clip[:2])  # the prompt is untouched
    np.testing.assert_array_equal(frames_a[:4], frames_b[:4])  # frames before the action
    np.testing.assert_array_equal(tokens_a[:, :3], tokens_b[:, :3])
    assert not np.array_equal(tokens_a[:, 3], tokens_b[:, 3]), "the last action changed nothing"
    assert not np.array_equal(frames_a[4], frames_b[4])


def test_batched_world(tiny, clip):
    world = make_world(tiny, batch_size=2)
    first = world.reset(np.stack([clip[:2], clip[2:4]]))
    assert first.shape == (2, 16, 16, 3)
    assert world.step([0, 3]).shape == (2, 16, 16, 3)
    assert world.step(1).shape == (2, 16, 16, 3)  # one action for every element
    out = world.rollout(np.array([[0, 1, 2], [3, 2, 1]]))
    assert out.shape == (2, 3, 16, 16, 3) and out.dtype == np.uint8
    assert world.frames.shape == (2, 2 + 5, 16, 16, 3)
    with pytest.raises(ValueError, match="one per batch element"):
        world.step([0, 1, 2])


def test_bad_actions(tiny, clip):
    world = make_world(tiny)
    with pytest.raises(RuntimeError, match="reset"):
        world.step(0)
    world.reset(clip[:1])
    message = "action 4 is outside the codebook of 4 latent actions (0..3)"
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        world.step(4)
    with pytest.raises(ValueError, match="action -1 is outside"):
        world.step(-1)
    with pytest.raises(ValueError, match="action 9 is outside"):
        world.rollout([0, 9])
    assert world.frames.shape[0] == 1  # a failed rollout took no step


def test_prompt_files_and_resize_warning(tiny, clip, tmp_path):
    import av

    world = make_world(tiny)
    Image.fromarray(clip[0]).save(tmp_path / "start.png")
    world.reset(tmp_path / "start.png")
    np.testing.assert_array_equal(world.prompt[0], clip[:1])

    images = [Image.fromarray(frame) for frame in clip]
    images[0].save(tmp_path / "clip.gif", save_all=True, append_images=images[1:], duration=100)
    world.reset(str(tmp_path / "clip.gif"))
    assert world.prompt.shape == (1, T, 16, 16, 3)  # the last T of 6 frames
    assert abs(world.prompt[0].astype(int) - clip[-T:].astype(int)).max() <= 8  # GIF palette

    with av.open(str(tmp_path / "clip.mp4"), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
        for frame in clip:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    world.reset(tmp_path / "clip.mp4")
    assert world.prompt.shape == (1, T, 16, 16, 3)

    big = np.zeros((40, 48, 3), np.uint8)
    big[:, 4:44] = 200  # the centre 40x40 square, cropped out of 40x48
    with pytest.warns(UserWarning, match="40x48.*16x16"):
        world.reset(big)
    assert world.prompt.shape == (1, 1, 16, 16, 3)
    assert (world.prompt == 200).all()


def test_bad_prompts(tiny, tmp_path):
    world = make_world(tiny)
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    with pytest.raises(ValueError, match="notes.txt"):
        world.reset(notes)
    with pytest.raises(ValueError, match="broken.png"):
        (tmp_path / "broken.png").write_bytes(b"\x89PNG garbage")
        world.reset(tmp_path / "broken.png")
    with pytest.raises(FileNotFoundError, match="missing.png"):
        world.reset(tmp_path / "missing.png")
    with pytest.raises(TypeError, match="prompt"):
        world.reset([1, 2, 3])
    with pytest.raises(ValueError, match="uint8"):
        world.reset(np.zeros((16, 16, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        world.reset(np.zeros((16, 16), np.uint8))


def test_from_run_and_missing_stage(tiny_run, tmp_path, clip):
    run_dir = tiny_run
    world = World.from_run(run_dir, seed=2, steps=2, temperature=0.5)
    assert world.config.data.image_size == 16 and world.steps == 2 and world.temperature == 0.5
    assert world.num_actions == 4
    world.reset(clip[:1])
    assert world.step(3).shape == (16, 16, 3)

    partial = tmp_path / "partial"
    for stage in ("tokenizer", "lam"):
        shutil.copytree(run_dir / stage, partial / stage)
    with pytest.raises(FileNotFoundError, match="dynamics"):
        World.from_run(partial)


def test_from_run_loads_a_cotrained_run(cotrained_run, clip):
    """A run whose LAM and dynamics model were co-trained (stage lam_dynamics, no lam or
    dynamics folder) loads and steps like any other."""
    assert not (cotrained_run / "lam").exists() and not (cotrained_run / "dynamics").exists()
    world = World.from_run(cotrained_run, seed=1, steps=2)
    assert world.config == load_config(cotrained_run / "lam_dynamics")
    assert world.num_actions == 4
    world.reset(clip[:2])
    frames = world.rollout([0, 3, 1])
    assert frames.shape == (1, 3, 16, 16, 3) and frames.dtype == np.uint8


def test_an_engine_names_the_model_it_lacks(tiny):
    from genie.inference import Engine, WorldFunctions

    _, models = tiny
    engine = Engine({"lam": models["lam"]})
    with pytest.raises(ValueError, match="this engine has no tokenizer"):
        engine.tokenize(np.zeros((1, 2, 16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match="this engine has no tokenizer"):
        WorldFunctions.from_engine(engine)


def test_engine_from_run_overrides_greedy_digits(tiny_run):
    """`genie eval --greedy-digits` reaches the loaded dynamics model's head; without it the
    head follows the run's config."""
    from genie.inference import Engine

    engine, config = Engine.from_run(tiny_run)
    assert engine.models["dynamics"].head.greedy == config.dynamics.greedy_digits
    for greedy in ("mode", "mean"):
        engine, _ = Engine.from_run(tiny_run, greedy_digits=greedy)
        assert engine.models["dynamics"].head.greedy == greedy
