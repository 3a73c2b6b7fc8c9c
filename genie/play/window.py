"""Playing in a pygame window."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from genie.media import upscale
from genie.play.controls import Controls
from genie.play.session import Session


def run_window(
    session: Session,
    controls: Controls,
    *,
    scale: int = 8,
    events: Callable[[], Iterable] | None = None,
    frame_rate: int = 60,
) -> None:
    """Shows the world x`scale` (nearest neighbour) with a status line and plays it from the
    keyboard until q, Esc or the window closes. `events` replaces `pygame.event.get` (tests
    script the keys with it)."""
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    import pygame

    pygame.init()
    try:
        height, width = session.frame.shape[:2]
        font = pygame.font.Font(None, 20)
        bar = font.get_linesize() + 6
        try:
            screen = pygame.display.set_mode((width * scale, height * scale + bar))
        except pygame.error as error:
            raise RuntimeError(
                f"cannot open a window ({error}): use --serve to play in a browser, or "
                "--actions ... --out FILE to write a rollout"
            ) from error
        pygame.display.set_caption("genie play")
        clock = pygame.time.Clock()
        next_events = events or pygame.event.get
        running = True
        while running:
            for event in next_events():
                if event.type == pygame.QUIT:
                    running = False
                elif event.type == pygame.KEYDOWN:
                    ctrl = bool(event.mod & pygame.KMOD_CTRL)
                    command = controls.command(pygame.key.name(event.key), ctrl=ctrl)
                    running = session.apply(command) and running
                if not running:
                    break
            image = upscale(session.frame, scale)
            screen.fill((0, 0, 0))
            screen.blit(pygame.surfarray.make_surface(image.swapaxes(0, 1)), (0, 0))
            text = font.render(session.status(), True, (255, 255, 255))
            screen.blit(text, (4, height * scale + 3))
            pygame.display.flip()
            clock.tick(frame_rate)
    finally:
        pygame.quit()
