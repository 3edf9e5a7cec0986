"""A minimal Alertmanager webhook receiver: every notification becomes one JSON line.

The docker-compose stack runs it as ``alert-webhook`` so that alerts are visible
(``docker compose logs -f alert-webhook``) before a real receiver is configured; the
end-to-end test runs the same script to see what Alertmanager delivers. Standard library
only, so it runs in any Python 3.11 image::

    python webhook_log.py --port 8080 [--output alerts.jsonl]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, ClassVar

logger = logging.getLogger("webhook_log")

MAX_BODY_BYTES = 1 << 20  # Alertmanager batches; a megabyte is far above one notification


class Handler(BaseHTTPRequestHandler):
    """Writes each POSTed JSON document as one line to ``sinks`` and answers 200."""

    sinks: ClassVar[list[IO[str]]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_BODY_BYTES:
            self.send_error(400, "expected a JSON body of at most 1 MiB")
            return
        try:
            payload = json.loads(self.rfile.read(length))
        except json.JSONDecodeError as exc:
            self.send_error(400, f"not JSON: {exc}")
            return
        line = json.dumps({"path": self.path, "payload": payload}, sort_keys=True)
        for sink in self.sinks:
            sink.write(line + "\n")
            sink.flush()
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        """Health check: 200 on any path."""
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        logger.debug(format, *args)  # the JSON lines are the log; no access log


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bind", default="0.0.0.0", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on")
    parser.add_argument("--output", type=Path, help="also append the JSON lines to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    Handler.sinks = [sys.stdout]
    output = args.output.open("a", encoding="utf-8") if args.output else None
    if output is not None:
        Handler.sinks.append(output)
    server = ThreadingHTTPServer((args.bind, args.port), Handler)
    logger.info("alert webhook on http://%s:%d/", args.bind, server.server_port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        if output is not None:
            output.close()


if __name__ == "__main__":
    main()
