"""A fast webhook receiver for the benchmark, run as its own process on 127.0.0.1.

It answers every POST with 200 at once (HTTP/1.1, keep-alive) and notes when each
arrived (``time.time()``, the clock ``finished_at`` is read from). ``GET /count`` says
how many arrived; ``GET /results`` returns them all. The first line it prints on
stdout is the port it listens on.

    python -m bench._webhook_receiver [--port 0]
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Store:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: list[dict[str, Any]] = []


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512  # the listen backlog: many senders connect at once


def make_handler(store: Store) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # with Nagle on, the body (a second small write) waits for the sender's delayed
        # ACK of the headers, ~40 ms, and holds a dispatcher slot that long
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", 0))
            body = self.rfile.read(length)
            arrived = time.time()
            self._reply(200, b"ok")
            item = {
                "arrived": arrived,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body.decode(),
            }
            with store.lock:
                store.items.append(item)

        def do_GET(self) -> None:
            with store.lock:
                if self.path == "/count":
                    payload = json.dumps({"count": len(store.items)}).encode()
                elif self.path == "/results":
                    payload = json.dumps(store.items).encode()
                else:
                    self._reply(404, b"not found")
                    return
            self._reply(200, payload, "application/json")

        def do_DELETE(self) -> None:
            with store.lock:
                store.items.clear()
            self._reply(204, b"")

        def _reply(self, status: int, payload: bytes, kind: str = "text/plain") -> None:
            self.send_response_only(status)
            self.send_header("content-type", kind)
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            if payload:
                self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    server = Server(("127.0.0.1", args.port), make_handler(Store()))
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    sys.exit(0)


if __name__ == "__main__":
    main()
