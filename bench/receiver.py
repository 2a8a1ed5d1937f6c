"""An OTLP/HTTP trace receiver that reads every request and discards it, for timing exporters alone.

    python bench/receiver.py      # prints its port, then serves 127.0.0.1:PORT until terminated

POST /v1/traces: the body is read to its end and dropped; the answer is 200 with an empty
ExportTraceServiceResponse (zero bytes of protobuf). GET /stats: {"requests": n, "bytes": b} since the last
GET /stats?reset. Nothing is decoded, so the receiver costs the exporters next to nothing (tests/otlp_receiver.py
decodes; this one must not).
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CHUNK = 1 << 20


class Stats:
    requests = 0
    bytes = 0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive for clients that reuse a connection (the SDK's requests session)

    def do_POST(self):  # noqa: N802 - the http.server API
        left = int(self.headers.get("Content-Length") or 0)
        while left > 0:
            got = len(self.rfile.read(min(left, CHUNK)))
            if not got:
                break
            left -= got
            Stats.bytes += got
        Stats.requests += 1
        self.send_response(200 if self.path.startswith("/v1/traces") else 404)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):  # noqa: N802
        body = json.dumps({"requests": Stats.requests, "bytes": Stats.bytes}).encode()
        if self.path.endswith("reset"):
            Stats.requests = Stats.bytes = 0
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main() -> int:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
