"""`genie.evaluate`: the numbers agree with `genie.metrics` on the same arrays, actions reach the
dynamics with the right alignment, and the files are written and readable."""

from __future__ import annotations

import dataclasses
import json
import math

import jax
import numpy as np
import pytest
from PIL import Image

from genie import evaluate, metrics
from genie.inference import Engine, WorldFunctions
from tests.conftest import moving_square_clips

NUM_ACTIONS = 3


def unit(frames: np.ndarray) -> np.ndarray:
    """uint8 -> float32 [0, 1] exactly as genie.metrics converts targets, so equal is equal."""
    return frames.astype(np.float32) / np.float32(255.0)


def oracle_world(clips: np.ndarray, inferred: np.ndarray, context: int) -> WorldFunctions:
    """A perfect tokenizer, a LAM inferring `inferred` (M, T-1), and a dynamics model that
    returns the real future when given exactly the inferred actions (prompt actions included)
    and repeats the last prompt frame otherwise."""
    by_prompt = {
        clip[:context].tobytes(): (clip, actions)
        for clip, actions in zip(clips, inferred, strict=True)
    }

    def lookup(frames):
        """-> [(real clip, inferred actions)] of each row, found by its prompt."""
        return [by_prompt[f[:context].tobytes()] for f in frames]

    def reconstruct(frames):
        return np.zeros(frames.shape[:2] + (4,), np.int32), unit(frames)

    def infer_actions(frames):
        return np.stack([actions for _, actions in lookup(frames)])

    def generate(prompt, prompt_actions, actions, key):
        steps = actions.shape[1]
        out = []
        for p, pa, a, (clip, true) in zip(
            prompt, prompt_actions, actions, lookup(prompt), strict=True
        ):
            obeyed = np.array_equal(pa, true[: context - 1]) and np.array_equal(
                a, true[context - 1 : context - 1 + steps]
            )
            future = clip[context : context + steps] if obeyed else np.repeat(p[-1:], steps, 0)
            out.append(unit(future))
        return np.stack(out)

    return WorldFunctions(
        num_codes=4,
        num_actions=NUM_ACTIONS,
        reconstruct=reconstruct,
        infer_actions=infer_actions,
        generate=generate,
    )


@pytest.fixture
def setting():
    clips = moving_square_clips(5, frames=6, seed=1)
    inferred = np.random.default_rng(7).integers(0, NUM_ACTIONS, (5, 5)).astype(np.int32)
    return clips, inferred


def test_defaults_fit_the_clip():
    assert evaluate.default_context_horizon(16, None, None) == (8, 8)
    assert evaluate.default_context_horizon(4, None, None) == (2, 2)
    assert evaluate.default_context_horizon(16, 4, None) == (4, 12)
    with pytest.raises(ValueError, match="must fit in clips of 16"):
        evaluate.default_context_horizon(16, 8, 9)


def test_oracle_rollout_is_perfect_and_matches_metrics(setting):
    clips, inferred = setting
    context, horizon = 2, 4
    world = oracle_world(clips, inferred, context)
    # batch 2 over 5 clips: the last batch is padded, and must not leak into the numbers
    result = evaluate.evaluate(
        world, clips, context=context, horizon=horizon, seed=3, batch_size=2, progress=False
    )
    report = result.report
    rollout = report["rollout"]

    assert report["reconstruction"]["psnr"] == np.inf
    assert report["reconstruction"]["ssim"] == pytest.approx(1.0)
    assert rollout["psnr"]["inferred_actions"] == [np.inf] * horizon
    np.testing.assert_allclose(rollout["ssim"]["inferred_actions"], 1.0, atol=1e-6)
    np.testing.assert_allclose(
        rollout["psnr"]["repeat_last_frame"],
        metrics.repeat_last_frame_baseline(clips, context, horizon),
    )

    # Random actions: the oracle obeys only when the random draw happens to equal the inferred
    # actions; rebuild its predictions by hand and compare with genie.metrics. Every code is
    # used here, so the used-code and all-code draws coincide.
    assert report["delta_psnr"]["used_codes"] == list(range(NUM_ACTIONS))
    random = evaluate.random_actions(3, len(clips), horizon, NUM_ACTIONS)
    targets = clips[:, context : context + horizon]
    lucky = np.all(random == inferred[:, context - 1 : context - 1 + horizon], axis=1)
    expected = unit(
        np.where(lucky[:, None, None, None, None], targets, clips[:, context - 1 :][:, :1])
    )
    expected_psnr = metrics.psnr_by_horizon(targets, expected)
    for name in ("random_used_codes", "random_all_codes"):
        np.testing.assert_allclose(rollout["psnr"][name], expected_psnr)
        delta = report["delta_psnr"][name]
        np.testing.assert_array_equal(
            delta["by_step"], metrics.delta_psnr(targets, unit(targets), expected)
        )
        assert delta["t4"] == delta["by_step"][3]
    counts = np.bincount(inferred.ravel(), minlength=NUM_ACTIONS)
    assert report["codebook"]["lam"]["counts"] == counts.tolist()
    assert report["delta_psnr"]["lam_usage"]["shares"] == (counts / counts.sum()).tolist()


def test_world_that_ignores_actions_scores_zero_delta(setting):
    clips, inferred = setting
    world = oracle_world(clips, inferred, 2)
    ignoring = dataclasses.replace(
        world, generate=lambda p, pa, a, key: np.repeat(p[:, -1:], a.shape[1], 1)
    )
    report = evaluate.evaluate(ignoring, clips, context=2, horizon=3, progress=False).report
    delta = report["delta_psnr"]
    for name in ("random_used_codes", "random_all_codes"):
        assert delta[name]["by_step"] == [0.0, 0.0, 0.0] and delta[name]["t4"] is None
    assert "not measured" in delta["note"]
    assert (
        report["rollout"]["psnr"]["inferred_actions"]
        == report["rollout"]["psnr"]["repeat_last_frame"]
    )


def test_random_actions_draw_only_from_the_given_codes():
    drawn = evaluate.random_actions(5, 50, 4, [1, 4])
    assert drawn.shape == (50, 4) and drawn.dtype == np.int32
    assert np.unique(drawn).tolist() == [1, 4]
    # Same seed and code set, same draws, whichever model is evaluated.
    np.testing.assert_array_equal(drawn, evaluate.random_actions(5, 50, 4, np.array([1, 4])))
    # An int K is the set 0..K-1, drawn identically.
    np.testing.assert_array_equal(
        evaluate.random_actions(5, 50, 4, 6), evaluate.random_actions(5, 50, 4, range(6))
    )
    with pytest.raises(ValueError, match="at least one latent action"):
        evaluate.random_actions(0, 2, 2, [])


# The dead-code world below: every frame is one grey level, set by the action alone. Codes 0 and
# 1 (the ones its LAM uses) draw the same frame, so it obeys nothing among them; codes 2 and 3
# draw other levels, as a dynamics model does for codes it never saw in training.
GREY_OF_CODE = np.array([0.5, 0.5, 0.75, 0.25], np.float32)


def dead_code_world(inferred: np.ndarray, calls: list) -> WorldFunctions:
    """Clips whose first pixel is the clip id; records the actions of every generate() call."""

    def reconstruct(frames):
        return np.zeros(frames.shape[:2] + (4,), np.int32), unit(frames)

    def infer_actions(frames):
        return inferred[frames[:, 0, 0, 0, 0]]

    def generate(prompt, prompt_actions, actions, keys):
        calls.append(actions.copy())
        grey = GREY_OF_CODE[actions][..., None, None, None]
        return np.broadcast_to(grey, (*actions.shape, *prompt.shape[2:])).astype(np.float32)

    return WorldFunctions(
        num_codes=4,
        num_actions=len(GREY_OF_CODE),
        reconstruct=reconstruct,
        infer_actions=infer_actions,
        generate=generate,
    )


def test_used_code_delta_psnr_by_hand():
    clips = np.zeros((40, 6, 4, 4, 3), np.uint8)  # black targets
    clips[:, 0, 0, 0, 0] = np.arange(40)
    inferred = np.zeros((40, 5), np.int32)  # 200 transitions, code 0 unless set below
    inferred[:10, 0] = 1  # 5%: used
    inferred[0, 4] = 3  # 0.5%: not used; in the horizon of clip 0 at t = 4
    calls = []
    report = evaluate.evaluate(
        dead_code_world(inferred, calls),
        clips,
        context=2,
        horizon=4,
        seed=11,
        batch_size=40,
        progress=False,
    ).report
    delta = report["delta_psnr"]
    assert delta["used_codes"] == [0, 1] and delta["used_code_share"] == 0.01
    assert delta["lam_usage"]["counts"] == [189, 10, 0, 1]
    assert delta["lam_usage"]["shares"] == [0.945, 0.05, 0.0, 0.005]

    # One batch: the inferred, used-code and all-code rollouts, in that order.
    inferred_calls, used_calls, all_calls = calls
    np.testing.assert_array_equal(inferred_calls, inferred[:, 1:5])
    assert set(np.unique(used_calls)) <= {0, 1}
    np.testing.assert_array_equal(used_calls, evaluate.random_actions(11, 40, 4, [0, 1]))
    np.testing.assert_array_equal(all_calls, evaluate.random_actions(11, 40, 4, 4))

    # Inferred: grey 0.5 (MSE 0.25) everywhere but clip 0 at t = 4, grey 0.25 (MSE 0.0625).
    # Random over used codes: grey 0.5 whatever the draw.
    mse_inferred = np.array([0.25, 0.25, 0.25, (39 * 0.25 + 0.0625) / 40])
    expected_used = [0.0, 0.0, 0.0, 10 * math.log10(0.25 / 0.2453125)]
    np.testing.assert_allclose(delta["random_used_codes"]["by_step"], expected_used, atol=1e-12)
    assert delta["random_used_codes"]["t4"] == pytest.approx(0.0822, abs=1e-4)
    assert report["rollout"]["psnr"]["random_used_codes"] == pytest.approx(
        [-10 * math.log10(0.25)] * 4
    )
    # Random over all codes: the dead codes' frames make this world look controllable.
    mse_all = np.mean(np.square(GREY_OF_CODE[all_calls].astype(np.float64)), axis=0)
    np.testing.assert_allclose(
        delta["random_all_codes"]["by_step"], 10 * np.log10(mse_all / mse_inferred), rtol=1e-9
    )
    assert delta["random_all_codes"]["t4"] > 0.5


def sampling_world(clips: np.ndarray, inferred: np.ndarray, context: int) -> WorldFunctions:
    """The oracle's tokenizer and LAM with a dynamics model whose every frame is noise drawn
    from the clip's key, blended with the true future when the actions are obeyed: like a real
    MaskGIT world, its output depends on the sampling key."""
    oracle = oracle_world(clips, inferred, context)

    def generate(prompt, prompt_actions, actions, keys):
        assert keys.shape == (len(prompt),)  # one key per clip
        shape = (actions.shape[1], *prompt.shape[2:])
        noise = np.stack([np.asarray(jax.random.uniform(key, shape)) for key in keys])
        return 0.5 * oracle.generate(prompt, prompt_actions, actions, keys) + 0.5 * noise

    return dataclasses.replace(oracle, generate=generate)


@pytest.mark.parametrize("make_world", [oracle_world, sampling_world])
def test_report_does_not_depend_on_batch_size(setting, make_world):
    clips, inferred = setting
    world = make_world(clips, inferred, 2)
    reports = [
        evaluate.evaluate(world, clips, context=2, seed=5, batch_size=b, progress=False).report
        for b in (1, 2, 5)
    ]
    assert reports[0] == reports[1] == reports[2]
    if make_world is sampling_world:  # the key is used: another seed samples other frames
        other = evaluate.evaluate(world, clips, context=2, seed=6, progress=False).report
        assert other["rollout"]["psnr"] != reports[0]["rollout"]["psnr"]


def test_both_rollouts_of_a_clip_share_its_sampling_key(setting):
    clips, inferred = setting
    world = sampling_world(clips, inferred, 2)
    ignoring = dataclasses.replace(
        world, generate=lambda p, pa, a, keys: world.generate(p, pa, np.zeros_like(a), keys)
    )
    report = evaluate.evaluate(ignoring, clips, context=2, horizon=3, progress=False).report
    # Same key, same noise: a world that ignores its actions scores exactly zero ΔtPSNR.
    for name in ("random_used_codes", "random_all_codes"):
        assert report["delta_psnr"][name]["by_step"] == [0.0, 0.0, 0.0]


def test_files_are_written_and_readable(setting, tmp_path):
    clips, inferred = setting
    result = evaluate.evaluate(
        oracle_world(clips, inferred, 2), clips, context=2, horizon=4, progress=False
    )
    paths = evaluate.write_outputs(result, tmp_path)
    loaded = json.loads(paths["json"].read_text())
    assert loaded["rollout"]["psnr"]["inferred_actions"] == ["inf"] * 4
    assert float(loaded["rollout"]["psnr"]["inferred_actions"][0]) == np.inf
    text = paths["markdown"].read_text()
    assert "| 4 |" in text
    used = loaded["delta_psnr"]["used_codes"]
    assert "ΔtPSNR at t=4, random over used codes {" + ", ".join(map(str, used)) in text
    assert f"ΔtPSNR at t=4, random over all {NUM_ACTIONS} codes" in text
    assert "LAM code shares | 0: " in text
    with Image.open(paths["plot"]) as image:
        assert image.format == "PNG"
    with Image.open(paths["gif"]) as image:
        assert image.format == "GIF" and image.n_frames > 1


def test_cli_on_a_tiny_run(tiny_run, tmp_path, monkeypatch, capsys):
    from data_pipelines import loader
    from genie.checkpoint import load_model

    run_dir = tiny_run
    clips = moving_square_clips(3, frames=4, size=16)
    requested = {}

    def read_clips(name, split, **kwargs):
        requested.update(name=name, split=split, **kwargs)
        return {"frames": clips[: kwargs["limit"]]}

    monkeypatch.setattr(loader, "read_clips", read_clips)
    out = tmp_path / "eval"
    argv = [str(run_dir), "--clips", "3", "--batch-size", "3", "--out", str(out)]
    evaluate.main(argv + ["--maskgit-steps", "2"])
    assert requested["split"] == "test" and requested["clip_frames"] == 4
    assert "ΔtPSNR" in capsys.readouterr().out

    report = json.loads((out / "eval.json").read_text())
    assert (report["context"], report["horizon"], report["maskgit_steps"]) == (2, 2, 2)
    assert report["greedy_digits"] is None  # its head is a softmax over ids: no digits
    np.testing.assert_allclose(
        report["rollout"]["psnr"]["repeat_last_frame"],
        metrics.repeat_last_frame_baseline(clips, 2, 2),
    )
    # The same tokenizer calls (already compiled), pooled by genie.metrics directly.
    tokenizer, _ = load_model(run_dir, "tokenizer")
    reconstruction = np.asarray(Engine({"tokenizer": tokenizer}).reconstruct(clips)[1])
    assert report["reconstruction"]["psnr"] == pytest.approx(
        float(metrics.pooled_psnr(clips, reconstruction))
    )
    for name in ("eval.md", "psnr_by_horizon.png", "rollouts.gif"):
        assert (out / name).stat().st_size > 0
