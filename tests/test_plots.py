import numpy as np
import pytest
from PIL import Image

from genie import media, plots


def _distinct_frames(count, height=8, width=8):
    """Frames filled with clearly different colours, so no two consecutive ones are identical."""
    colors = np.array(
        [[(37 * t) % 256, (91 * t + 40) % 256, (151 * t + 80) % 256] for t in range(count)]
    )
    return np.broadcast_to(colors[:, None, None, :], (count, height, width, 3)).astype(np.uint8)


def _read(path):
    with Image.open(path) as image:
        image.load()
        return image.format, image.size, np.asarray(image.convert("RGB"))


def test_save_png_round_trips(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    path = tmp_path / "nested" / "frame.png"
    media.save_png(path, image)
    image_format, size, pixels = _read(path)
    assert image_format == "PNG" and size == (7, 5)
    np.testing.assert_array_equal(pixels, image)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        media.save_png(tmp_path / "gray.png", np.zeros((5, 7), np.uint8))


def test_save_gif_frame_count_size_and_timing(tmp_path):
    frames = _distinct_frames(5, height=6, width=4)
    path = tmp_path / "clip.gif"
    media.save_gif(path, frames, fps=20, scale=3)
    with Image.open(path) as gif:
        assert gif.format == "GIF" and gif.size == (12, 18)
        assert gif.n_frames == 5
        assert gif.info["duration"] == 50
        gif.seek(2)
        # Nearest-neighbour upscaling keeps each frame one flat colour.
        pixels = np.asarray(gif.convert("RGB")).reshape(-1, 3)
        assert np.all(pixels == pixels[0])
        np.testing.assert_allclose(pixels[0], frames[2, 0, 0], atol=8)


def test_image_grid_places_each_frame_at_its_offset():
    frames = _distinct_frames(6, height=3, width=5).reshape(2, 3, 3, 5, 3)
    pad, scale = 2, 2
    grid = plots.image_grid(frames, pad=pad, scale=scale)
    height, width = 3 * scale, 5 * scale
    assert grid.shape == (pad + 2 * (height + pad), pad + 3 * (width + pad), 3)
    for r in range(2):
        for c in range(3):
            top, left = pad + r * (height + pad), pad + c * (width + pad)
            block = grid[top : top + height, left : left + width]
            np.testing.assert_array_equal(block, np.broadcast_to(frames[r, c, 0, 0], block.shape))
            assert np.all(grid[top - 1, left : left + width] == 255)  # padding just above
            assert np.all(grid[top : top + height, left - 1] == 255)  # padding just left


def test_video_grid_is_image_grid_per_step():
    videos = np.stack([_distinct_frames(4)] * 2).reshape(1, 2, 4, 8, 8, 3)
    grid = plots.video_grid(videos, pad=1)
    assert grid.shape[0] == 4
    np.testing.assert_array_equal(grid[3], plots.image_grid(videos[:, :, 3], pad=1))


def test_label_image_adds_a_caption_strip_above():
    image = np.zeros((32, 48, 3), np.uint8)
    labelled = plots.label_image(image, "left+jump")
    assert labelled.shape[1:] == (48, 3) and labelled.shape[0] > 32
    np.testing.assert_array_equal(labelled[-32:], image)
    strip = labelled[:-32]
    assert np.any(strip < 128)  # some dark text on the white strip


def test_line_plot_of_rising_series_is_drawn(tmp_path):
    path = tmp_path / "psnr.png"
    steps = np.arange(1, 9)
    image = plots.line_plot(
        path,
        {
            "model": (steps, 20 + steps),
            "repeat last frame": (steps, [18, 17, np.inf, 16, 15, 14, 13, 12]),
        },
        title="PSNR vs horizon",
        xlabel="horizon",
        ylabel="PSNR (dB)",
    )
    image_format, size, pixels = _read(path)
    assert image_format == "PNG" and size == (720, 450)
    np.testing.assert_array_equal(pixels, image)
    model_color = np.all(pixels == plots.PALETTE[0], axis=-1)
    assert model_color.sum() > 200
    # The rising series climbs: its colour reaches higher (smaller row) at the right than the left.
    rows, cols = np.nonzero(model_color[:, : 720 - 200])  # exclude the legend on the right
    left_rows, right_rows = rows[cols < np.median(cols)], rows[cols > np.median(cols)]
    assert right_rows.mean() < left_rows.mean()


def test_heatmap_and_bar_chart_are_valid_pngs(tmp_path):
    matrix = np.array([[5, 0, 1], [0, 7, 2]])
    image = plots.heatmap(
        tmp_path / "confusion.png", matrix, ["code 0", "code 1"], ["a", "b", "c"], "Confusion"
    )
    image_format, size, _ = _read(tmp_path / "confusion.png")
    assert image_format == "PNG" and size == (image.shape[1], image.shape[0])
    assert np.any(np.all(image == (8, 48, 107), axis=-1))  # the maximum cell is darkest blue
    with pytest.raises(ValueError, match="labels"):
        plots.heatmap(None, matrix, ["code 0"], ["a", "b", "c"], "Confusion")

    bars = plots.bar_chart(tmp_path / "usage.png", [3, 0, 9, 4], None, "Code usage")
    assert _read(tmp_path / "usage.png")[0] == "PNG"
    assert np.all(bars == plots.PALETTE[0], axis=-1).sum() > 100
    many = plots.bar_chart(None, np.arange(1024) % 7, None, "1024 codes")
    assert many.shape[1] <= 1400


def test_code_motion_figure_is_a_png_of_plausible_size(tmp_path):
    path = tmp_path / "code_motion.png"
    difference = np.zeros((3, 8, 8))
    difference[0, :, :4], difference[0, :, 4:] = -0.5, 0.5  # code 0 moved right
    difference[2] = np.nan  # code 2 never inferred
    last_frames = np.stack([_distinct_frames(3)] * 2)  # (P=2, K=3, 8, 8, 3)
    image = plots.code_motion_figure(
        path, [2.0, -2.0, np.nan], [0.0, 0.0, np.nan], [0.7, 0.3, 0.0], difference, last_frames
    )
    image_format, size, pixels = _read(path)
    assert image_format == "PNG" and size == (image.shape[1], image.shape[0])
    np.testing.assert_array_equal(pixels, image)
    assert 400 <= size[0] <= 1500 and 500 <= size[1] <= 1500
    red, green, blue = (pixels[..., c].astype(int) for c in range(3))
    assert np.sum((red > 150) & (blue < 80) & (green < 80)) > 100  # the diverging map's red end
    assert np.sum((blue > 150) & (red < 80)) > 100  # and its blue end
    with pytest.raises(ValueError, match="one per code"):
        plots.code_motion_figure(None, [1.0], [0.0], [1.0], difference, last_frames)
