"""The parent process of the parent-death tests: starts a managed server, prints one JSON line
(``guard``: the guard's pid = the server's process group, ``port``, ``forked``), then lives until
killed. ``--standin``: the cheap stand-in server instead of vLLM; ``--thread``: start it from a
thread that then exits (a parent-death signal would fire there); ``--fork``: fork a child that
keeps a copy of every file descriptor, the guard's pipe included; ``--serve``: keep requests in
flight and print ``serving`` after the first answer."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.teachers.vllm_server import VLLMServer, resolve_model  # noqa: E402

STANDIN = Path(__file__).with_name("standin_server.py")


class StandInServer(VLLMServer):
    def __init__(self, *, flags: list[str], grace_s: float, **options):
        super().__init__("standin", **options)
        self.flags = flags
        self.stop_grace_s = grace_s

    def command(self) -> list[str]:
        return [sys.executable, str(STANDIN), "--port", str(self.port), *self.flags]


async def _serve(server: VLLMServer) -> None:
    import aiohttp

    body = {"model": server.served_model_name, "max_tokens": 256,
            "messages": [{"role": "user", "content": "Tell me a long story about a lighthouse keeper."}]}
    first = asyncio.Event()

    async def one(session: aiohttp.ClientSession) -> None:
        while True:
            async with session.post(server.base_url + "/chat/completions", json=body) as resp:
                await resp.read()
            first.set()

    async with aiohttp.ClientSession() as session:
        tasks = [asyncio.create_task(one(session)) for _ in range(4)]
        await first.wait()
        print("serving", flush=True)
        await asyncio.gather(*tasks)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--log", required=True)
    parser.add_argument("--standin", default=None, help="stand-in flags, space-separated ('' for none)")
    parser.add_argument("--grace", type=float, default=10.0)
    parser.add_argument("--thread", action="store_true")
    parser.add_argument("--fork", action="store_true")
    parser.add_argument("--serve", action="store_true")
    args = parser.parse_args()
    if args.standin is not None:
        server: VLLMServer = StandInServer(flags=args.standin.split(), grace_s=args.grace, log_path=args.log, startup_timeout_s=60)
    else:
        model, served, template = resolve_model("smollm2")
        server = VLLMServer(model, served_model_name=served, chat_template=template, log_path=args.log, startup_timeout_s=900)
    if args.thread:
        starter = threading.Thread(target=lambda: asyncio.run(server.start()))
        starter.start()
        starter.join()
    else:
        asyncio.run(server.start())
    forked = 0
    if args.fork:
        forked = os.fork()
        if forked == 0:
            time.sleep(3600)
            os._exit(0)
    print(json.dumps({"guard": server.proc.pid, "port": server.port, "forked": forked}), flush=True)
    if args.serve:
        asyncio.run(_serve(server))
    time.sleep(3600)
    return 0


if __name__ == "__main__":
    sys.exit(main())
