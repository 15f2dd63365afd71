"""A local HTTP receiver standing in for the alert webhook: it keeps every JSON body POSTed to it."""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    def __init__(self, server: ThreadingHTTPServer):
        self.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/fluxo"
        self.received: list[dict] = []

    def events(self, event: str) -> list[dict]:
        return [body for body in self.received if body.get("event") == event]

    def wait_for(self, event: str, timeout: float = 60.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while not self.events(event) and time.monotonic() < deadline:
            time.sleep(0.2)
        return self.events(event)


@contextmanager
def alert_receiver():
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            receiver.received.append({**json.loads(body), "_path": self.path})
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver = Receiver(server)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
