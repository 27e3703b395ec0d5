"""A local webhook receiver for notification tests: an HTTP server on 127.0.0.1 (free port) in a
thread, recording each POSTed JSON body by path (Apprise's ``json://127.0.0.1:PORT/path``)."""
from __future__ import annotations

import json
import threading
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class WebhookReceiver:
    def __init__(self):
        self.received: dict[str, list[dict]] = defaultdict(list)
        self.fail_next = 0  # answer this many POSTs with HTTP 500 first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if receiver.fail_next > 0:
                    receiver.fail_next -= 1
                    self.send_response(500)
                    self.end_headers()
                    return
                receiver.received[self.path].append(json.loads(body or b"{}"))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"json://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def messages(self, path: str) -> list[dict]:
        return list(self.received.get("/" + path.lstrip("/"), []))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
