"""The Starlette app: read-only pages over one Lake handle. Every route validates what it takes from the URL;
errors render as a page with a status and one clear message, never a traceback."""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from pathlib import Path
from urllib.parse import quote

import numpy as np

from . import _lineage as lin
from . import _queries as q
from . import _svg
from ._remux import remux

HERE = Path(__file__).parent
PAGE_SIZES = (25, 50, 100, 200)
log = logging.getLogger("lakeview")


def public_uri(uri: str) -> str:
    """The lake URI as shown on pages: any ``user:secret@`` part and query string removed."""
    return re.sub(r"^([a-z0-9+.-]+://)[^/@]*@", r"\1", uri.split("?", 1)[0])


def make_app(lk):
    """A Starlette app serving ``lk`` read-only (pages pin the version ``lk`` reads; ``?at=`` picks another)."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, RedirectResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))
    env.globals.update(svg_lines=_svg.lines, svg_hist=_svg.histogram, svg_bars=_svg.bars, quote=quote,
                       uri=public_uri(lk.uri), head_version=lk.version)
    env.filters["bytes"] = _human_bytes
    sizes = q.Sizes(lk)
    clips: OrderedDict = OrderedDict()  # (version, episode, camera) -> Clip: the player's range requests reuse it
    choices: dict = {}  # (what, version) -> splits / robot types: a pinned version never changes, scan it once

    def choice(what: str, view) -> list[str]:
        key = (what, view.version)
        if key not in choices:
            choices[key] = (q.splits if what == "split" else q.robot_types)(view)
        return choices[key]

    def page(name: str, status: int = 200, **ctx) -> HTMLResponse:
        return HTMLResponse(env.get_template(name).render(**ctx), status_code=status)

    def at(request: Request):
        """The handle a page reads: ``lk``, or a read-only checkout named by ``?at=``."""
        v = request.query_params.get("at")
        if not v:
            return lk
        v = q.check_version(v)
        try:
            return lk.checkout(v)
        except (KeyError, ValueError, FileNotFoundError) as e:
            raise q.NotFound(str(e.args[0]) if e.args else f"no lake version {v}") from None

    def int_param(request: Request, name: str, default: int, lo: int, hi: int) -> int:
        text = request.query_params.get(name)
        if text is None or text == "":
            return default
        if not re.fullmatch(r"\d{1,9}", text):
            raise q.BadRequest(f"{name} must be a whole number, not {text[:40]!r}")
        return min(max(int(text), lo), hi)

    async def lake_page(request: Request):
        offset = int_param(request, "offset", 0, 0, 10**9)
        rows, total = q.log_rows(lk, sizes, offset, 50)
        return page("lake.html", rows=rows, total=total, offset=offset, title="Lake",
                    quarantined=lk.quarantine().num_rows)

    async def diff_page(request: Request):
        a, b = request.query_params.get("a", ""), request.query_params.get("b", "")
        if not a or not b:
            raise q.BadRequest("pick two versions (a and b)")
        d = q.diff(lk, q.check_version(a), q.check_version(b))
        return page("diff.html", d=d, title=f"Diff {d['a']} → {d['b']}")

    async def version_page(request: Request):
        v = q.check_version(request.path_params["version"])
        entries = [e for e in lk.log() if e.version == v or v in e.tags]
        if not entries:
            raise q.NotFound(f"no lake version or tag {v!r}")
        e = entries[0]
        return page("version.html", e=e, title=f"Version {e.version}")

    async def episodes_page(request: Request):
        view = at(request)
        filt = q.check_filter(request.query_params.get("filter"))
        split = request.query_params.get("split") or None
        if split is not None:
            q.check_id(split, "split")
        sort = request.query_params.get("sort") or "episode_id"
        desc = request.query_params.get("desc") == "1"
        limit = int_param(request, "limit", 50, 1, 200)
        offset = int_param(request, "offset", 0, 0, 10**9)
        rows, total = q.episodes_page(view, filt, split, sort, desc, offset, limit)
        params = {k: v for k, v in (("filter", filt), ("split", split), ("sort", sort), ("desc", "1" if desc else None),
                                    ("limit", str(limit)), ("at", request.query_params.get("at"))) if v}
        return page("episodes.html", rows=rows.to_pylist(), columns=rows.column_names, total=total, offset=offset,
                    limit=limit, filter=filt or "", split=split or "", sort=sort, desc=desc, params=params,
                    sortable=q.SORTABLE, splits=choice("split", view), view_version=view.version, title="Episodes")

    async def episode_page(request: Request):
        view = at(request)
        eid = q.check_id(request.path_params["episode_id"])
        ep = q.episode(view, eid)
        cams = list(ep["row"].get("cameras") or [])
        fps = float(ep["row"].get("fps") or 10.0)
        charts = []
        x = np.arange(ep["length"])
        for name, arr in ep["series"].items():
            if name == "timestamp":
                continue
            dims = {f"{name}[{d}]" if arr.shape[1] > 1 else name: arr[:, d] for d in range(min(arr.shape[1], 10))}
            charts.append(_svg.lines(x, dims, title=name, cursor=True, css_class="chart sync", xlabel="frame"))
        return page("episode.html", ep=ep, row=ep["row"], cams=cams, fps=fps, charts=charts,
                    video_sums=q.video_checksums(view, eid), at=request.query_params.get("at") or "",
                    view_version=view.version, title=f"Episode {eid}")

    async def video(request: Request):
        view = at(request)
        eid = q.check_id(request.path_params["episode_id"])
        cam = q.check_id(request.query_params.get("camera", ""), "camera")
        key = (view.version, eid, cam)
        clip = clips.get(key)
        if clip is None:
            try:
                reader = view.video_reader(eid, cam)
            except KeyError as e:
                raise q.NotFound(str(e.args[0]) if e.args else "no such video") from None
            try:
                clip = remux(reader)
            except ValueError as e:
                raise q.BadRequest(str(e)) from None
            clips[key] = clip
            while len(clips) > 32:
                clips.popitem(last=False)
        else:
            clips.move_to_end(key)
        if request.query_params.get("meta") == "1":
            from starlette.responses import JSONResponse

            return JSONResponse({"times": clip.times, "codec": clip.codec, "width": clip.width, "height": clip.height})
        return _ranged(request, clip.data, "video/mp4", Response)

    async def stats_page(request: Request):
        view = at(request)
        split = request.query_params.get("split") or None
        robot = request.query_params.get("robot_type") or None
        for v, what in ((split, "split"), (robot, "robot type")):
            if v is not None:
                q.check_id(v, what)
        st = q.stats(view, split, robot)
        return page("stats.html", st=st, split=split or "", robot=robot or "", splits=choice("split", view),
                    robots=choice("robot", view), title="Stats")

    async def packs_page(request: Request):
        return page("packs.html", rows=lin.packings(lk), title="Packs")

    async def pack_page(request: Request):
        d = lin.pack_detail(lk, request.path_params["recipe_hash"])
        return page("pack.html", d=d, title=f"Pack {d['last']['recipe_hash']}")

    async def lineage_page(request: Request):
        g = lin.lineage(lk)
        return page("lineage.html", g=g, layout=_layout(g), title="Lineage")

    async def eval_page(request: Request):
        eid = q.check_id(request.path_params["eval_id"], "eval id")
        rows = [r for r in lin.evals(lk) if r["eval_id"] == eid]
        if not rows:
            raise q.NotFound(f"no evaluation {eid!r} in lake version {lk.version}")
        r = rows[0]
        ids = r.get("episode_ids") or []
        ids = [i for i in map(str, ids) if q._ID.match(i)]  # ids as written by training.evaluate: checked anyway
        eps = lk.episodes(filter=f"episode_id IN ({', '.join(lin._sql(i) for i in ids)})",
                          columns=["episode_id", "length", "task"]).to_pylist() if ids else []
        return page("eval.html", r=r, eps=eps, title=f"Evaluation {eid}")

    async def checkpoint_page(request: Request):
        path = request.query_params.get("path", "")
        rows = [r for r in lin.evals(lk) if r["checkpoint"] == path]
        if not rows:
            raise q.NotFound("no evaluation in this lake names that checkpoint")
        return page("checkpoint.html", path=path, rows=rows, title="Checkpoint")

    async def rl_page(request: Request):
        run = q.check_id(request.path_params["run_id"], "run id")
        runs = lin.rl_runs(lk)
        if run not in runs:
            raise q.NotFound(f"no RL run {run!r} in lake version {lk.version}")
        d = runs[run]
        chart_r = _svg.lines(d["versions"], {"mean return": d["mean_return"]}, title="return by policy version",
                             xlabel="policy version")
        chart_s = _svg.lines(d["versions"], {"success rate": d["success_rate"]}, title="success by policy version",
                             xlabel="policy version")
        return page("rl.html", run=run, d=d, charts=[chart_r, chart_s], title=f"RL run {run}")

    async def quarantine_page(request: Request):
        return page("quarantine.html", rows=lk.quarantine().to_pylist(), title="Quarantine")

    async def not_found(request: Request, exc):
        return page("error.html", status=404, status_code=404, message=str(exc) if isinstance(exc, q.NotFound)
                    else f"no page at {request.url.path[:200]}", title="Not found")

    async def bad_request(request: Request, exc):
        return page("error.html", status=400, status_code=400, message=str(exc), title="Bad request")

    async def http_error(request: Request, exc: HTTPException):
        if exc.status_code == 404:
            return await not_found(request, exc)
        return page("error.html", status=exc.status_code, status_code=exc.status_code, message=str(exc.detail),
                    title="Error")

    async def server_error(request: Request, exc: Exception):
        log.error("error serving %s: %s: %s", request.url.path, type(exc).__name__, exc)
        return page("error.html", status=500, status_code=500, title="Error",
                    message=f"{type(exc).__name__} while reading the lake (details in the server log)")

    routes = [
        Route("/", lake_page), Route("/diff", diff_page), Route("/version/{version}", version_page),
        Route("/episodes", episodes_page), Route("/episode/{episode_id}", episode_page),
        Route("/video/{episode_id}", video), Route("/stats", stats_page), Route("/packs", packs_page),
        Route("/packs/{recipe_hash}", pack_page), Route("/lineage", lineage_page), Route("/eval/{eval_id}", eval_page),
        Route("/checkpoint", checkpoint_page), Route("/rl/{run_id}", rl_page), Route("/quarantine", quarantine_page),
        Route("/favicon.ico", lambda request: RedirectResponse("/static/favicon.svg")),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    return Starlette(routes=routes, exception_handlers={
        q.BadRequest: bad_request, q.NotFound: not_found, HTTPException: http_error, Exception: server_error})


def _ranged(request, data: bytes, media_type: str, Response):
    """``data`` whole (200) or the one byte range asked for (206), as media players expect for seeking."""
    headers = {"Accept-Ranges": "bytes", "Cache-Control": "no-store"}
    rng = request.headers.get("range", "")
    m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng.strip())
    if not m or (not m.group(1) and not m.group(2)):
        return Response(data, media_type=media_type, headers=headers)
    n = len(data)
    if m.group(1):
        start, end = int(m.group(1)), int(m.group(2)) if m.group(2) else n - 1
    else:
        start, end = max(n - int(m.group(2)), 0), n - 1
    if start >= n or end < start:
        return Response(b"", status_code=416, headers={**headers, "Content-Range": f"bytes */{n}"})
    end = min(end, n - 1)
    return Response(data[start:end + 1], status_code=206, media_type=media_type,
                    headers={**headers, "Content-Range": f"bytes {start}-{end}/{n}"})


def _layout(g: dict) -> dict:
    """Columns by node kind, rows in order of appearance: positions for the lineage SVG."""
    order = ["source", "version", "pack", "checkpoint", "eval", "rl"]
    col = {"source": 0, "version": 1, "pack": 2, "checkpoint": 3, "eval": 4, "rl": 0}
    rows: dict[int, int] = {}
    pos = {}
    for kind in order:
        for n in g["nodes"]:
            if n["kind"] == kind:
                c = col[kind]
                pos[n["id"]] = (20 + c * 200, 30 + rows.get(c, 0) * 56)
                rows[c] = rows.get(c, 0) + 1
    height = 60 + max(rows.values(), default=1) * 56
    return {"pos": pos, "width": 20 + 5 * 200, "height": height}


def _human_bytes(n) -> str:
    if n is None:
        return "—"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def serve(lk, host: str = "127.0.0.1", port: int = 8470) -> None:
    """Serve ``lk`` read-only at http://host:port until interrupted (uvicorn)."""
    import uvicorn

    print(f"serving lake {public_uri(lk.uri)} (version {lk.version}) at http://{host}:{port}/", flush=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: bound to {host}: anyone who can reach this port can read the lake", flush=True)
    uvicorn.run(make_app(lk), host=host, port=int(port), log_level="warning")
