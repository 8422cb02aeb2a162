#!/usr/bin/env python3
"""A fault-injecting HTTP proxy between sealfs and the S3/KMS endpoint.

    faultproxy.py UPSTREAM_URL PORT_FILE

Listens on 127.0.0.1 (a free port, written to PORT_FILE) and forwards every
request unchanged (Host header included, so SigV4 signatures still verify)
to UPSTREAM_URL. Faults are drawn per request, at a rate set through the
control endpoint:

    POST /__faults  {"rate": 0.1, "kinds": ["500", "503", "reset", "stall", "slow", "throttle"],
                     "stall_seconds": 40, "down": false}
    GET  /__faults  -> the settings and counters

- 500 / 503: an S3-style XML error (InternalError / SlowDown) instead of forwarding;
- reset: the connection is closed without a response;
- stall: nothing is sent for stall_seconds (past the client's timeout);
- slow: the upstream response is sent in small pieces with pauses;
- throttle: KMS requests (X-Amz-Target: TrentService.*) get ThrottlingException;
- down: every request is refused (connection closed), as if S3 were unreachable.

Standard library only; it never connects anywhere but UPSTREAM_URL.
"""
import http.client
import json
import random
import socket
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

upstream = urllib.parse.urlparse(sys.argv[1])
settings = {"rate": 0.0, "kinds": ["500", "503", "reset"], "stall_seconds": 40, "down": False}
counts = {"requests": 0, "faults": 0}
lock = threading.Lock()


def pick_fault(is_kms):
    with lock:
        counts["requests"] += 1
        if settings["down"]:
            counts["faults"] += 1
            return "reset"
        if random.random() >= settings["rate"]:
            return None
        kinds = [k for k in settings["kinds"] if k != "throttle" or is_kms]
        if not kinds:
            return None
        counts["faults"] += 1
        return random.choice(kinds)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _control(self):
        if self.command == "POST":
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with lock:
                settings.update(json.loads(body or b"{}"))
        with lock:
            out = json.dumps({"settings": settings, "counts": counts}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def _error(self, status, code, message):
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
            f"<Message>{message}</Message></Error>"
        ).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _drop(self):
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _handle(self):
        if self.path.startswith("/__faults"):
            return self._control()
        length = int(self.headers.get("Content-Length", 0) or 0)
        body = self.rfile.read(length) if length else None
        is_kms = (self.headers.get("X-Amz-Target") or "").startswith("TrentService.")
        fault = pick_fault(is_kms)
        if fault == "reset":
            return self._drop()
        if fault == "500":
            return self._error(500, "InternalError", "injected fault")
        if fault == "503":
            return self._error(503, "SlowDown", "injected fault")
        if fault == "throttle":
            out = json.dumps({"__type": "ThrottlingException", "message": "injected throttling"}).encode()
            self.send_response(400)
            self.send_header("Content-Type", "application/x-amz-json-1.1")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)
            return
        if fault == "stall":
            time.sleep(settings["stall_seconds"])
            return self._drop()
        conn = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=120)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
        conn.request(self.command, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        self.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(k, v)
        if self.command == "HEAD":
            # A HEAD answer describes the object; its length is not the body's.
            self.send_header("Content-Length", resp.getheader("Content-Length", "0"))
            self.end_headers()
            conn.close()
            return
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if fault == "slow" and data:
            step = max(1, len(data) // 8)
            for i in range(0, len(data), step):
                self.wfile.write(data[i : i + step])
                self.wfile.flush()
                time.sleep(0.05)
        else:
            self.wfile.write(data)
        conn.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    with open(sys.argv[2], "w") as f:
        f.write(str(server.server_address[1]))
    server.serve_forever()


if __name__ == "__main__":
    main()
