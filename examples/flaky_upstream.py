"""A deliberately flaky upstream for the demo: a local HTTP server that answers 503 (with
`Retry-After: 1`) to a fixed share of requests and 200 with an order's amount to the rest.

    python examples/flaky_upstream.py --port 18999 --share 0.5

It prints its URL once it listens and serves until SIGTERM or Ctrl-C. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--share", type=float, default=0.5, help="share of calls that get 503")
    parser.add_argument("--seed", type=int, default=14, help="14: half of the first 40 fail")
    args = parser.parse_args()
    rng = random.Random(args.seed)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            order = parse_qs(urlsplit(self.path).query).get("order", ["0"])[0]
            if rng.random() < args.share:
                status, body = 503, {"error": "busy, try again"}
            else:
                status, body = 200, {"order": order, "amount": 42}
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if status == 503:
                self.send_header("Retry-After", "1")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"http://127.0.0.1:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
