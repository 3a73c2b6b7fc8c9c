"""genie.play: key maps, headless rollouts, the pygame window (SDL dummy driver) and the browser
page (headless Chromium; `tests/install_browser.sh` installs it)."""

from __future__ import annotations

import json
import os
import shutil
import threading

import numpy as np
import pytest
from PIL import Image

from genie.play import Controls, Session, keymap_from_dict, load_keymap, make_server, run_window
from genie.world import World
from tests.conftest import moving_square_clips
from tests.tiny_world import tiny_models

os.environ["SDL_VIDEODRIVER"] = "dummy"
os.environ["SDL_AUDIODRIVER"] = "dummy"
os.environ["PYGAME_HIDE_SUPPORT_PROMPT"] = "1"


def gif_frames(path, fps: float = 10.0) -> int:
    """Frames a GIF saved at `fps` plays, counting the runs of identical frames that Pillow
    merges into one longer frame on save."""
    with Image.open(path) as gif:
        milliseconds = 0
        for index in range(gif.n_frames):
            gif.seek(index)
            milliseconds += gif.info["duration"]
    return round(milliseconds * fps / 1000)


@pytest.fixture(scope="module")
def prompt_png(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompt") / "start.png"
    Image.fromarray(moving_square_clips(1)[0, 0]).save(path)
    return path


@pytest.fixture
def session(tmp_path, prompt_png):
    config, models = tiny_models()
    return Session(World(config, models), prompt_png, save_dir=tmp_path / "episodes", scale=2)


def test_keymap(tmp_path):
    keymap = keymap_from_dict({"left": 3, "Right": 1, "up": 2, "w": 0}, num_actions=4)
    assert keymap == {"left": 3, "right": 1, "up": 2, "w": 0, "a": 3, "d": 1}
    controls = Controls(4, keymap)
    assert controls.command("1").action == 0 and controls.command("[4]").action == 3
    assert controls.command("5") is None  # no fifth action
    assert controls.command("a").action == 3 and controls.command("w").action == 0
    assert controls.command("s").kind == "save" and controls.command("escape").kind == "quit"
    bound_s = Controls(4, keymap_from_dict({"down": 0}, 4))
    assert bound_s.command("s").action == 0 and bound_s.command("s", ctrl=True).kind == "save"
    with pytest.raises(ValueError, match="reserved"):
        keymap_from_dict({"r": 1}, 4)
    with pytest.raises(ValueError, match="outside the codebook of 4"):
        keymap_from_dict({"left": 4}, 4)
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"left": 3}))
    assert load_keymap(path, 4)["a"] == 3
    path.write_text("[3]")
    with pytest.raises(ValueError, match="JSON object"):
        load_keymap(path, 4)


def test_headless_play_writes_gif(tiny_run, tmp_path, prompt_png, monkeypatch, capsys):
    from genie.__main__ import main

    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    out = tmp_path / "rollout.gif"
    run = str(tiny_run)
    main(["play", run, "--prompt", str(prompt_png), "--actions", "1,4,2", "--out", str(out)])
    assert "4 frames" in capsys.readouterr().out
    assert gif_frames(out) == 4  # the prompt, then one frame per action
    with Image.open(out) as gif:
        assert gif.size == (16 * 8, 16 * 8)

    with pytest.raises(SystemExit):  # 1-based: 5 is not a key of a 4-action world
        main(["play", run, "--prompt", str(prompt_png), "--actions", "1,5", "--out", str(out)])
    assert "not one of 1..4" in capsys.readouterr().err
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    with pytest.raises(SystemExit):
        main(["play", run, "--prompt", str(notes), "--actions", "1", "--out", str(out)])
    assert "notes.txt" in capsys.readouterr().err


def test_window_plays_scripted_keys(session, tmp_path):
    import pygame

    controls = Controls(4, keymap_from_dict({"left": 3}, 4))
    script = [
        (pygame.K_2, 0),  # action 1
        (pygame.K_SPACE, 0),  # repeat action 1
        (pygame.K_LEFT, 0),  # key map: action 3
        (pygame.K_s, 0),  # save the 4-frame episode
        (pygame.K_r, 0),  # back to the prompt
        (pygame.K_3, 0),  # action 2
        (pygame.K_q, 0),  # quit
    ]
    seen = []

    def scripted_events():
        """Posts one key per frame into SDL's real event queue, then reads it back."""
        seen.append((session.frame_count, session.last_action))
        if script:
            key, mod = script.pop(0)
            pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=key, mod=mod))
        return pygame.event.get()

    run_window(session, controls, scale=2, events=scripted_events)
    assert seen == [(1, None), (2, 1), (3, 1), (4, 3), (4, 3), (1, None), (2, 2)]
    gif, mp4 = session.saved
    assert gif_frames(gif) == 4 and mp4.stat().st_size > 0
    import av

    with av.open(str(mp4)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 4


def _browser_missing() -> str | None:
    for path in ("/usr/bin/chromium", "/usr/bin/chromedriver"):
        if not os.path.exists(path) and not shutil.which(os.path.basename(path)):
            return f"{path} is not installed: run tests/install_browser.sh"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: run tests/install_browser.sh"
    return None


def test_browser_page_plays_keys(session):
    reason = _browser_missing()
    if reason:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    controls = Controls(4, keymap_from_dict({"left": 3}, 4))
    server = make_server(session, controls, port=0, scale=2)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ):
        options.add_argument(flag)
    service = Service(executable_path=shutil.which("chromedriver") or "/usr/bin/chromedriver")
    driver = webdriver.Chrome(options=options, service=service)
    try:
        driver.get(f"http://127.0.0.1:{server.server_port}/")
        wait = WebDriverWait(driver, 30)

        def counter_is(value):
            return lambda d: d.find_element(By.ID, "frame-count").text == value

        wait.until(counter_is("1"))
        image = driver.find_element(By.ID, "frame").get_attribute("src")
        assert image.startswith("data:image/png;base64,")
        body = driver.find_element(By.TAG_NAME, "body")
        body.send_keys("2")
        wait.until(counter_is("2"))
        assert driver.find_element(By.ID, "frame").get_attribute("src") != image
        assert "action 1 (key 2)" in driver.find_element(By.ID, "status").text
        body.send_keys(Keys.ARROW_LEFT)
        wait.until(counter_is("3"))
        assert session.last_action == 3
        body.send_keys("r")
        wait.until(counter_is("1"))
    finally:
        driver.quit()
        server.shutdown()
        server.server_close()
    np.testing.assert_array_equal(session.world.frames[0], moving_square_clips(1)[0, 0])
