"""`magnet view RUN`: the aiohttp server of the viewer. Read-only by construction.

Only GET (and HEAD) routes exist, and no handler writes anything: not the run, not a cache
file (indexes and pictures live in memory). It binds to 127.0.0.1 unless told otherwise, and
then also refuses requests whose Host header names another machine, so a web page elsewhere
cannot reach it through DNS rebinding. Every response carries a Content-Security-Policy with
no script source at all (the pages need none: menus are forms, collapsibles are <details>) and
no outside source, so the page works offline and injected markup could not run.

Handlers do their blocking work (index waits, shard reads, drawing) in the default thread pool,
so one slow page does not stall the others.
"""

from __future__ import annotations

import asyncio
import functools
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec
from aiohttp import web

from engine.loopback import serving
from engine.reasons import reason_key
from engine.records import RECORD_KINDS
from engine.view import conversation, pages
from engine.view.config import ViewConfig, load_config
from engine.view.index import FILTERS, RunIndex
from engine.view.markup import CSS, esc, page
from engine.view.runinfo import GraphCache, find_reports, run_facts

_CSP = "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
_HEADERS = {"Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY", "Cache-Control": "no-store"}
_PICTURES = 32  # neighbourhood pictures kept in memory
_SINGULAR = {"trajectories": "trajectory", "pairs": "pair", "paths": "signature path", "episodes": "episode",
             "dead_letters": "dead letter"}


class _NotFound(Exception):
    pass


class Viewer:
    """The state behind the routes: the run, its indexes, the graph, pictures drawn."""

    def __init__(self, config: ViewConfig):
        self.config = config
        self.run_dir = Path(config.run).resolve()
        self.index = RunIndex(self.run_dir)
        self.graph = GraphCache(self.run_dir)
        self.decoders = {k: msgspec.msgpack.Decoder(t) for k, t in RECORD_KINDS.items()}
        self._pictures: OrderedDict[str, bytes] = OrderedDict()
        self._draw_lock = threading.Lock()  # matplotlib's pyplot is not thread-safe

    def title_page(self, title: str, body: str, refresh_s: int | None = None) -> str:
        return page(title, body, run=str(self.run_dir), refresh_s=refresh_s)

    def record(self, kind: str, record_id: str) -> Any:
        ix = self.index.get(kind)
        pos = ix.lookup(record_id, wait_s=max(self.config.wait_s, 30.0))
        if pos is None:
            raise _NotFound(f"no {kind} record with id {record_id!r} in this run")
        return self.decoders[kind].decode(ix.read(pos))

    def maybe_record(self, kind: str, record_id: str) -> Any:
        try:
            return self.record(kind, record_id)
        except _NotFound:
            return None

    # -- pages (blocking; run in the thread pool) --------------------------------------------------

    def overview(self) -> str:
        facts = run_facts(self.run_dir)
        if facts.live:  # live progress comes from the growing shards (a short wait: small runs show whole counts)
            deadline = time.monotonic() + 1.0
            for kind in ("trajectories", "done", "dead_letters"):
                self.index.get(kind).wait_complete(deadline - time.monotonic())
        return self.title_page("overview", pages.overview(facts, self.run_dir, self.index.started()), 5 if facts.live else None)

    def record_list(self, kind: str, query: dict[str, str]) -> str:
        if kind not in pages.LIST_KINDS:
            raise _NotFound(f"no record list {kind!r}; choose one of {', '.join(pages.LIST_KINDS)}")
        ix = self.index.get(kind)
        filters = {f: query[f] for f in FILTERS[kind] if query.get(f)}
        text = query.get("q", "").strip()
        try:
            start = max(0, int(query.get("start") or 0))
        except ValueError:
            raise web.HTTPBadRequest(text=f"start={query.get('start')!r} is not a record position") from None
        pg = ix.page(filters, start, self.config.page_size, text=text, wait_s=self.config.wait_s,
                     search_budget_s=self.config.search_budget_s)
        records = [self.decoders[kind].decode(ix.read(p)) for p in pg.positions]
        body = pages.record_list(kind, ix, filters, text, start, pg, records)
        return self.title_page(kind.replace("_", " "), body)

    def record_page(self, kind: str, record_id: str, mode: str) -> str:
        if kind not in pages.LIST_KINDS:
            raise _NotFound(f"no record kind {kind!r}; choose one of {', '.join(pages.LIST_KINDS)}")
        if mode not in conversation.MODES:
            mode = "prompt"
        rec = self.record(kind, record_id)
        if kind == "trajectories":
            body = conversation.trajectory_body(rec, self.maybe_record("episodes", rec.episode_id), mode)
        elif kind == "pairs":
            body = conversation.pair_body(rec, mode)
        elif kind == "paths":
            graph, note = self.graph.get()
            body = pages.path_body(rec, graph, note)
        elif kind == "episodes":
            body = pages.episode_body(rec)
        else:
            body = pages.dead_letter_body(rec, reason_key(rec.error))
        return self.title_page(f"{_SINGULAR[kind]} {record_id}", body)

    def reports(self) -> str:
        roots = [self.run_dir, *(Path(p) for p in self.config.reports)]
        return self.title_page("reports", pages.reports_body(find_reports(roots), roots))

    def path_picture(self, path_id: str) -> bytes:
        key = f"{path_id}\0{self.config.graph_depth}\0{self.config.graph_max_nodes}"
        if key in self._pictures:
            self._pictures.move_to_end(key)
            return self._pictures[key]
        path = self.record("paths", path_id)
        graph, note = self.graph.get()
        if graph is None:
            raise _NotFound(note or "no graph")
        import networkx as nx

        from graph.viz import neighbourhood, render_png

        functions = [f for t in path.turns for f in t.functions if f in graph] or [f for f in path.distractors if f in graph]
        if not functions:
            raise _NotFound(f"none of path {path_id}'s functions is in the graph")
        per = max(1, self.config.graph_max_nodes // len(functions))
        nodes = set(functions)
        for f in functions:
            nodes |= set(neighbourhood(graph, f, self.config.graph_depth, per).nodes)
        sub = nx.DiGraph(graph.subgraph(nodes))
        with self._draw_lock, tempfile.TemporaryDirectory(prefix="magnet-view-") as tmp:
            out = render_png(sub, functions[0], Path(tmp) / "graph.png")
            data = out.read_bytes()
        self._pictures[key] = data
        while len(self._pictures) > _PICTURES:
            self._pictures.popitem(last=False)
        return data

    def index_stats(self) -> dict[str, Any]:
        return {kind: {"records": ix.n, "complete": ix.complete, "index_bytes": ix.nbytes(), "files": len(ix.files),
                       "damaged_spans": ix.damaged,
                       "seconds": round((ix.finished_at or 0) - ix.started, 3) if ix.finished_at else None}
                for kind, ix in self.index.started().items()}


# -- aiohttp ---------------------------------------------------------------------------------------

def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def _allowed_hosts(config: ViewConfig, port: int) -> set[str]:
    names = {"127.0.0.1", "localhost", "[::1]"}
    return {f"{n}:{port}" for n in names} | (names if port == 80 else set())


def make_app(config: ViewConfig) -> web.Application:
    viewer = Viewer(config)

    @web.middleware
    async def guard(request: web.Request, handler: Callable) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"], headers=_HEADERS)
        if config.loopback:
            port = request.app["port"]
            if request.host not in _allowed_hosts(config, port):
                return web.Response(status=421, text="this viewer answers only to 127.0.0.1 / localhost", headers=_HEADERS)
        try:
            response = await handler(request)
        except _NotFound as err:
            response = _html(viewer.title_page("not found", f'<p class="notice">{esc(err)}</p>'), 404)
        except KeyError as err:
            response = _html(viewer.title_page("bad request", f'<p class="notice">{esc(err.args[0] if err.args else err)}</p>'), 400)
        response.headers.update(_HEADERS)
        return response

    async def blocking(fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, functools.partial(fn, *args))

    async def overview(request: web.Request) -> web.Response:
        return _html(await blocking(viewer.overview))

    async def style(request: web.Request) -> web.Response:
        return web.Response(text=CSS, content_type="text/css", charset="utf-8")

    async def record_list(request: web.Request) -> web.Response:
        return _html(await blocking(viewer.record_list, request.match_info["kind"], dict(request.query)))

    async def record(request: web.Request) -> web.Response:
        record_id = request.query.get("id", "")
        if not record_id:
            raise web.HTTPBadRequest(text="give the record's id: ?id=...")
        return _html(await blocking(viewer.record_page, request.match_info["kind"], record_id, request.query.get("mode", "prompt")))

    async def reports(request: web.Request) -> web.Response:
        return _html(await blocking(viewer.reports))

    async def picture(request: web.Request) -> web.Response:
        data = await blocking(viewer.path_picture, request.query.get("id", ""))
        return web.Response(body=data, content_type="image/png")

    async def index_stats(request: web.Request) -> web.Response:
        return web.json_response(viewer.index_stats())

    async def close(app: web.Application) -> None:
        viewer.index.close()

    app = web.Application(middlewares=[guard])
    app["viewer"] = viewer
    app["port"] = config.port
    app.router.add_get("/", overview)
    app.router.add_get("/style.css", style)
    app.router.add_get("/list/{kind}", record_list)
    app.router.add_get("/record/{kind}", record)
    app.router.add_get("/reports", reports)
    app.router.add_get("/graph/path.png", picture)
    app.router.add_get("/api/index", index_stats)
    app.on_cleanup.append(close)
    return app


async def serve(config: ViewConfig, ready: Callable[[str], None] | None = None) -> None:
    """Serve until cancelled; ``ready`` gets the address once the socket listens."""
    app = make_app(config)
    async with serving(app, host=config.host, port=config.port) as root:
        app["port"] = urlsplit(root).port  # the real port when 0 was asked for
        if ready:
            ready(root + "/")
        await asyncio.Event().wait()


def main(argv: list[str]) -> int:
    config = load_config(argv)
    if not config.loopback:
        print(f"magnet view: warning: listening on {config.host}: anyone who can reach this machine can read the run "
              "(model text, configs); the default 127.0.0.1 serves this machine only", file=sys.stderr)

    def ready(address: str) -> None:
        print(f"magnet view: serving {Path(config.run).resolve()} at {address} (read-only; Ctrl-C stops)", flush=True)

    try:
        asyncio.run(serve(config, ready))
    except KeyboardInterrupt:
        pass
    return 0
