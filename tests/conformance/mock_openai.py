"""A mock OpenAI-compatible chat server for the AIPerf conformance step (tests only).

Bound to 127.0.0.1 on a free port (printed as `PORT <n>` on stdout), it answers
`/v1/chat/completions` (plain or streamed) with `max_tokens` tokens of " a" (one cl100k token
each, so a replayed history grows by exactly the recorded output) after `--latency` seconds, and
logs one JSON line per request: arrival time (s since start), session header, message count and
the message texts' total characters. It stops itself after `--idle` seconds without a request
or `--lifetime` seconds in all, so a hung client never leaves it behind.

Standard library only: it runs under any interpreter.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class MockServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, log_path: str, latency: float) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.log = open(log_path, "a", encoding="utf-8")
        self.lock = threading.Lock()
        self.latency = latency
        self.started = time.monotonic()
        self.last_request = self.started

    def record(self, row: dict) -> None:
        with self.lock:
            self.last_request = time.monotonic()
            self.log.write(json.dumps(row) + "\n")
            self.log.flush()


class Handler(BaseHTTPRequestHandler):
    server: MockServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path.rstrip("/").endswith("/models"):
            self._send(200, json.dumps({"object": "list", "data": [{"id": "mock", "object": "model"}]}).encode())
        else:
            self._send(200, b"{}")

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        arrived = time.monotonic() - self.server.started
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self._send(400, b'{"error": "bad json"}')
            return
        messages = body.get("messages") or []
        chars = sum(len(m.get("content") or "") if isinstance(m.get("content"), str)
                    else len(json.dumps(m.get("content"))) for m in messages)
        tokens = max(1, int(body.get("max_completion_tokens") or body.get("max_tokens") or 1))
        self.server.record({"arrived_s": round(arrived, 4), "messages": len(messages), "chars": chars,
                            "max_tokens": tokens, "headers": {k.lower(): v for k, v in self.headers.items()
                                                             if k.lower().startswith("x-")}})
        time.sleep(self.server.latency)
        text = " a" * tokens
        usage = {"prompt_tokens": 0, "completion_tokens": tokens, "total_tokens": tokens}
        if body.get("stream"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            chunks = [{"choices": [{"index": 0, "delta": {"role": "assistant", "content": text}}]},
                      {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}], "usage": usage}]
            for chunk in chunks:
                self._chunk(b"data: " + json.dumps({"id": "mock", "object": "chat.completion.chunk",
                                                    "model": "mock", **chunk}).encode() + b"\n\n")
            self._chunk(b"data: [DONE]\n\n")
            self._chunk(b"")
            return
        self._send(200, json.dumps({
            "id": "mock", "object": "chat.completion", "model": "mock",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}],
            "usage": usage}).encode())

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--log", required=True, help="JSONL file, one row per request")
    parser.add_argument("--latency", type=float, default=0.01, help="seconds before each answer")
    parser.add_argument("--idle", type=float, default=120.0, help="stop after this long without a request")
    parser.add_argument("--lifetime", type=float, default=600.0, help="stop after this long in all")
    args = parser.parse_args()
    server = MockServer(args.log, args.latency)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"PORT {server.server_address[1]}", flush=True)
    while True:
        time.sleep(0.5)
        now = time.monotonic()
        if now - server.last_request > args.idle or now - server.started > args.lifetime:
            break
    server.shutdown()
    sys.exit(0)


if __name__ == "__main__":
    main()
