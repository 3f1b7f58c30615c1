#!/usr/bin/env python3
"""Spawn a server and time it from spawn to its first HTTP 200 on a URL.

    spawn_ready.py --url http://127.0.0.1:19000/readyz --stdout LOG --stderr LOG \
        [--interval-ms 5] [--timeout-s 30] [--pidfile FILE] -- CMD ARGS...

The clock starts immediately before the fork/exec. The URL is polled with a
raw HTTP/1.1 request every --interval-ms (connection refused counts as not
ready). Prints `PID=<pid> READY_MS=<ms> CONNECT_MS=<ms> POLLS=<n>` and exits
0 (CONNECT_MS: when the first TCP connection was accepted, which can be well
before the first 200 if the server listens before it serves), leaving the
server running (in its own session, so the caller kills it by PID). On
timeout or early exit of the server it kills the server, prints why and
exits 1. Bounded: at most --timeout-s seconds.
"""
import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from urllib.parse import urlsplit


def probe(host, port, path, timeout, on_connect):
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            on_connect()
            s.settimeout(timeout)
            s.sendall(
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode()
            )
            data = b""
            while b"\r\n" not in data and len(data) < 4096:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            line = data.split(b"\r\n", 1)[0].split()
            return len(line) >= 2 and line[1] == b"200"
    except OSError:
        return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--stdout", default=os.devnull)
    ap.add_argument("--stderr", default=os.devnull)
    ap.add_argument("--interval-ms", type=float, default=5.0)
    ap.add_argument("--timeout-s", type=float, default=30.0)
    ap.add_argument("--pidfile", help="write the server's pid here as soon as it is spawned")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd
    if not cmd:
        ap.error("no command")
    u = urlsplit(a.url)
    host, port, path = u.hostname, u.port or 80, u.path or "/"

    out = open(a.stdout, "ab")
    err = open(a.stderr, "ab")
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    if a.pidfile:
        with open(a.pidfile, "w") as f:
            f.write(f"{proc.pid}\n")
    deadline = t0 + a.timeout_s
    polls = 0
    connected = []

    def on_connect():
        if not connected:
            connected.append((time.monotonic() - t0) * 1000.0)

    while True:
        polls += 1
        if probe(host, port, path, timeout=2.0, on_connect=on_connect):
            ms = (time.monotonic() - t0) * 1000.0
            print(f"PID={proc.pid} READY_MS={ms:.1f} CONNECT_MS={connected[0]:.1f} POLLS={polls}", flush=True)
            return 0
        if proc.poll() is not None:
            print(f"FAILED server exited with status {proc.returncode} before ready", flush=True)
            return 1
        if time.monotonic() > deadline:
            print(f"FAILED not ready after {a.timeout_s}s ({polls} polls)", flush=True)
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            return 1
        time.sleep(a.interval_ms / 1000.0)


if __name__ == "__main__":
    sys.exit(main())
