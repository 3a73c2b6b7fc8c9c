"""Playing in a browser: the page (`page.html`, served from this package) and its HTTP server."""

from __future__ import annotations

import json
import threading
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources

from genie.play.controls import Controls
from genie.play.session import Session


@lru_cache(maxsize=1)
def page_template() -> str:
    """page.html with __WIDTH__, __HEIGHT__, __HELP__, __BROWSER_KEYS__ and __NUM_ACTIONS__ to
    fill in."""
    return resources.files("genie.play").joinpath("page.html").read_text(encoding="utf-8")


def make_server(
    session: Session,
    controls: Controls,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    scale: int = 8,
) -> ThreadingHTTPServer:
    """An HTTP server (stdlib, one thread per request, one step at a time) for the page:

    GET /            the page; it forwards key presses to POST /key
    GET /state       {"image": data-URL PNG, "frame", "action", "fps", "status", "saved"}
    POST /key        {"key": pygame key name, "ctrl": bool} -> state (same keys as the window)
    POST /step       {"action": k}, k a 0-based latent action id -> state
    POST /reset, POST /save -> state
    Errors answer 400 with {"error": message}. Port 0 picks a free port (server.server_port).
    """
    height, width = session.frame.shape[:2]
    page = (
        page_template()
        .replace("__WIDTH__", str(width * scale))
        .replace("__HEIGHT__", str(height * scale))
        .replace("__HELP__", controls.help())
        .replace("__BROWSER_KEYS__", json.dumps(controls.browser_keys()))
        .replace("__NUM_ACTIONS__", str(controls.num_actions))
    ).encode()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet: the status line says what happens
            pass

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, value: dict) -> None:
            self._send(status, json.dumps(value).encode(), "application/json")

        def do_GET(self):
            if self.path in ("/", "/index.html"):
                self._send(200, page, "text/html; charset=utf-8")
            elif self.path == "/state":
                with lock:
                    self._json(200, session.state())
            else:
                self._json(404, {"error": f"no page {self.path}"})

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
                with lock:
                    if self.path == "/step":
                        action = body.get("action")
                        if isinstance(action, bool) or not isinstance(action, int):
                            raise ValueError(f'POST /step takes {{"action": k}}, got {body}')
                        session.act(action)
                    elif self.path == "/key":
                        command = controls.command(
                            str(body.get("key", "")), ctrl=bool(body.get("ctrl"))
                        )
                        if command is not None and command.kind != "quit":
                            session.apply(command)
                    elif self.path == "/reset":
                        session.reset()
                    elif self.path == "/save":
                        session.save()
                    else:
                        self._json(404, {"error": f"no endpoint {self.path}"})
                        return
                    self._json(200, session.state())
            except (ValueError, json.JSONDecodeError, AttributeError) as error:
                self._json(400, {"error": str(error)})

    return ThreadingHTTPServer((host, port), Handler)
