"""A stand-in for `vllm serve` in the parent-death tests: answers /health on loopback and, like
vLLM's engine core, keeps a worker process of its own in its process group (which it does not
stop when it exits: the guard must). ``--ignore-sigterm``: both ignore SIGTERM, as a server
stuck in its shutdown would; ``--exit N``: fail at start-up with code N."""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys

from aiohttp import web


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ignore-sigterm", action="store_true")
    parser.add_argument("--exit", type=int, default=None)
    args = parser.parse_args()
    if args.exit is not None:
        print(f"stand-in server: failing at start-up with code {args.exit}", flush=True)
        return args.exit
    if args.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # inherited by the worker across exec
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    app = web.Application()
    app.router.add_get("/health", lambda request: web.Response(text="ok"))
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, handle_signals=not args.ignore_sigterm)
    return 0


if __name__ == "__main__":
    sys.exit(main())
