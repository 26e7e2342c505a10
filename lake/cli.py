"""The ``lake`` command line. Exit 0 on success; non-zero with one line per failure on stderr.

    lake ingest SRC --lake URI [--split train=0.9,val=0.1] [--message M] [--ray-address ADDR] [--verify-all]
    lake log --lake URI
    lake tag NAME [--version N] --lake URI
    lake diff A B --lake URI
    lake episodes --lake URI [--split S] [--filter SQL] [--limit N]
    lake stats --lake URI [--split S]
    lake quarantine --lake URI
    lake verify [--version V] [--deep] --lake URI
    lake pack [RECIPE.yaml] --lake URI [--repack]
    lake decode [--camera C ...] --lake URI [--rebuild]
    lake train [CONFIG.yaml] [key=value ...] --lake URI
    lake serve --lake URI [--host 127.0.0.1] [--port 8470]
    lake edit delete [ID ...] [--filter SQL] [-m M] [--dry-run] --lake URI
    lake edit relabel|update --filter SQL [--task T] [--split S] [--set COL=JSON ...] [--dry-run] --lake URI
    lake edit resplit train=0.9,val=0.1 [--seed N] | --by SPLIT=SQL ... [--dry-run] --lake URI
    lake edit add-feature NAME --values FILE.json [--level frame|episode] [--dry-run] --lake URI
    lake edit remove-feature NAME [--dry-run] --lake URI
    lake edit merge OTHER_URI [--filter SQL] [--dry-run] --lake URI
    lake edit restore VERSION_OR_TAG [--dry-run] --lake URI
    lake export DEST [--version V] [--split S] [--filter SQL] [--format lerobot-v3.0|lerobot-v2.1] --lake URI

``--lake`` defaults to $LAKE_URI. S3 credentials come from the usual AWS_* variables (see ``storage_options``).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from lake._store import storage_options_from_env


def _parse_split(text: str) -> dict[str, float]:
    out = {}
    for part in filter(None, text.split(",")):
        name, _, ratio = part.partition("=")
        try:
            out[name.strip()] = float(ratio)
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad split {part!r}: expected name=ratio") from None
    if not out:
        raise argparse.ArgumentTypeError("empty split")
    return out


def _lake(args, create: bool = False):
    import lake

    uri = args.lake or os.environ.get("LAKE_URI")
    if not uri:
        raise SystemExit("error: no lake given (--lake URI or $LAKE_URI)")
    return lake.open(uri, create=create, storage_options=storage_options_from_env(uri))


def _table(title: str, columns: list[str], rows: list[list]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title, show_lines=False)
    for i, c in enumerate(columns):
        t.add_column(c, overflow="fold", no_wrap=i == 0)  # ids and feature names stay whole
    for r in rows:
        t.add_row(*[str(x) for x in r])
    Console(width=max(120, int(os.environ.get("COLUMNS", 0) or 0))).print(t)


def _fmt(x) -> str:
    a = np.asarray(x, dtype=np.float64).ravel()
    s = ", ".join(f"{v:.4g}" for v in a[:4])
    return f"[{s}{', …' if len(a) > 4 else ''}]" if len(a) > 1 else s


def cmd_ingest(args) -> int:
    lk = _lake(args, create=True)
    rep = lk.ingest(args.src, split_ratios=args.split, message=args.message, ray_address=args.ray_address,
                    source_storage_options=storage_options_from_env(args.src), progress=not args.quiet,
                    verify_all=args.verify_all)
    replaced = f"{len(rep.episodes_replaced)} replaced (new video bytes); " if rep.episodes_replaced else ""
    unchanged = f" ({rep.episodes_unchanged} recognised unchanged without reading)" if rep.episodes_unchanged else ""
    print(f"lake {lk.uri}: version {rep.version if rep.version is not None else lk.version} "
          f"({'new' if rep.version is not None else 'unchanged'}); {rep.episodes_added} episodes, "
          f"{rep.frames_added} frames added; {replaced}{rep.episodes_skipped} already present{unchanged}; "
          f"{rep.seconds:.1f} s")
    for source, item, reason in rep.quarantined:
        print(f"quarantined: {source}: {item}: {reason}", file=sys.stderr)
    return 1 if rep.quarantined else 0


def cmd_log(args) -> int:
    rows = [[e.version, e.timestamp.strftime("%Y-%m-%d %H:%M:%S"), ", ".join(e.tags),
             e.message + (" [data deleted]" if e.data_deleted else ""),
             e.summary.get("episodes_added", ""), e.summary.get("frames_added", ""), e.summary.get("quarantined", "")]
            for e in _lake(args).log()]
    _table("lake log", ["version", "time (UTC)", "tags", "message", "episodes+", "frames+", "quarantined"], rows)
    return 0


def cmd_tag(args) -> int:
    lk = _lake(args)
    lk.tag(args.name, args.version)
    print(f"tagged version {lk.version if args.version is None else args.version} as {args.name!r}")
    return 0


def cmd_gc(args) -> int:
    rep = _lake(args).gc(keep_last=args.keep_last, keep_within=args.keep_within, dry_run=args.dry_run)
    print(rep.summary())
    for v in rep.deleted_versions if args.dry_run else ():
        print(f"would delete version {v}")
    for t in rep.tables_removed if args.dry_run else ():
        print(f"would remove table {t}")
    return 0


def cmd_diff(args) -> int:
    d = _lake(args).diff(args.a, args.b)
    edits = [f"{n} {what}" for n, what in ((len(d.relabelled), "relabelled"), (len(d.moved), "moved"),
                                          (len(d.changed), "changed"), (len(d.features_added), "features added"),
                                          (len(d.features_removed), "features removed")) if n]
    print(f"{d.a} -> {d.b}: +{len(d.episodes_added)} episodes, -{len(d.episodes_removed)} episodes"
          + "".join(f", {e}" for e in edits))
    for e in d.episodes_added:
        print(f"+ {e}")
    for e in d.episodes_removed:
        print(f"- {e}")
    for e, (old, new) in d.relabelled.items():
        print(f"~ {e} task: {old!r} -> {new!r}")
    for e, (old, new) in d.moved.items():
        print(f"~ {e} split: {old} -> {new}")
    for e, cols in d.changed.items():
        print(f"~ {e} {', '.join(cols)}")
    for f in d.features_added:
        print(f"+ feature {f}")
    for f in d.features_removed:
        print(f"- feature {f}")
    return 0


def _json_value(text: str):
    import json

    try:
        return json.loads(text)
    except ValueError:
        return text  # a bare string


def cmd_edit(args) -> int:
    import json

    import lake

    lk = _lake(args)
    kw = {"message": args.message, "dry_run": args.dry_run}
    op = args.op
    try:
        if op == "delete":
            if not args.args and not args.filter:
                raise SystemExit("error: lake edit delete needs episode ids and/or --filter")
            rep = lk.delete_episodes(ids=args.args or None, filter=args.filter, **kw)
        elif op in ("relabel", "update"):
            values = {k: _json_value(v) for k, _, v in (s.partition("=") for s in args.set or [])}
            if args.task is not None:
                values["task"] = args.task
            if args.split_to is not None:
                values["split"] = args.split_to
            rep = lk.update_episodes(args.filter, values, ids=args.args or None, **kw)
        elif op == "resplit":
            spec = dict(_parse_split(args.args[0])) if args.args else {}
            spec.update({k: v for k, _, v in (s.partition("=") for s in args.by or [])})
            rep = lk.resplit(spec, seed=args.seed, **kw)
        elif op == "add-feature":
            if len(args.args) != 1 or not args.values:
                raise SystemExit("error: lake edit add-feature NAME --values FILE.json (JSON {episode_id: value})")
            with open(args.values) as f:
                values = json.load(f)
            rep = lk.add_feature(args.args[0], values, level=args.level, **kw)
        elif op == "remove-feature":
            if len(args.args) != 1:
                raise SystemExit("error: lake edit remove-feature NAME")
            rep = lk.remove_feature(args.args[0], **kw)
        elif op == "merge":
            if len(args.args) != 1:
                raise SystemExit("error: lake edit merge OTHER_URI")
            rep = lk.merge(args.args[0], filter=args.filter, storage_options=storage_options_from_env(args.args[0]), **kw)
        else:  # restore
            if len(args.args) != 1:
                raise SystemExit("error: lake edit restore VERSION_OR_TAG")
            rep = lk.restore(args.args[0], **kw)
    except lake.NoChange as e:
        print(f"no change: {e}")
        return 0
    head = "dry run (nothing written)" if rep.dry_run else f"lake {lk.uri}: version {rep.version}"
    print(f"{head}: {rep.message}")
    for line in rep.lines():
        print(line)
    return 0


def cmd_episodes(args) -> int:
    t = _lake(args).episodes(split=args.split, filter=args.filter)
    cols = ["episode_id", "source", "source_episode_index", "task", "length", "split", "robot_type"]
    rows = [[r[c] for c in cols] for r in t.select(cols).slice(0, args.limit).to_pylist()]
    _table(f"{t.num_rows} episodes" + (f" (first {args.limit})" if t.num_rows > args.limit else ""), cols, rows)
    return 0


def cmd_stats(args) -> int:
    keys = ("mean", "std", "min", "max", "q01", "q10", "q50", "q90", "q99")
    lk = _lake(args)
    groups = (lk.stats(split=args.split, method=args.method, by=args.by) if args.by
              else {None: lk.stats(split=args.split, method=args.method)})
    for group, st in groups.items():
        rows = [[f, int(np.asarray(s["count"]).ravel()[0])] + [_fmt(s[k]) if k in s else "" for k in keys]
                for f, s in st.items()]
        title = " ".join(x for x in (f"({args.split})" if args.split else "", f"{args.by}={group}" if args.by else "",
                                     f"method={args.method}" if args.method != "lake" else "") if x)
        _table(f"stats {title}".strip(), ["feature", "count", *keys], rows)
    return 0


def cmd_quarantine(args) -> int:
    t = _lake(args).quarantine()
    _table(f"{t.num_rows} quarantined", ["source", "item", "reason"],
           [[r["source"], r["item"], r["reason"]] for r in t.to_pylist()])
    return 0


def cmd_verify(args) -> int:
    lk = _lake(args)
    version = None if args.version is None else int(args.version) if args.version.isdigit() else args.version
    rep = lk.verify(version, deep=args.deep, progress=not args.quiet)
    for m in rep.mismatches:
        print(f"mismatch: {m}", file=sys.stderr)
    mb = rep.bytes / 1e6
    print(f"lake {lk.uri}: version {rep.version}: {rep.episodes} episodes, {rep.segments} video segments"
          f"{' decoded strictly' if rep.deep else ''}, {mb:,.1f} MB in {rep.seconds:.1f} s "
          f"({mb / max(rep.seconds, 1e-9):,.1f} MB/s); "
          + (f"{rep.unchecked} without checksums (written before them); " if rep.unchecked else "")
          + ("ok" if rep.ok else f"{len(rep.mismatches)} MISMATCHES"))
    return 0 if rep.ok else 1


def cmd_pack(args) -> int:
    lk = _lake(args)
    rep = lk.pack(args.recipe, repack=args.repack, progress=not args.quiet)
    if rep.version is None:
        print(f"packed table {rep.table} is up to date with lake version {lk.version} (nothing to pack)")
    else:
        print(f"lake {lk.uri}: version {rep.version}: {rep.packs} packs, {rep.samples} samples from {rep.episodes} "
              f"episodes, fill {rep.fill:.2%}, table {rep.table}{' (full repack)' if rep.repacked else ''}; "
              f"{rep.seconds:.1f} s")
    return 0


def cmd_decode(args) -> int:
    lk = _lake(args)
    rep = lk.decode_videos(args.camera or None, rebuild=args.rebuild, progress=not args.quiet)
    if rep.version is not None:
        print(f"lake {lk.uri}: version {rep.version}: {rep.videos} videos, {rep.frames} frames decoded "
              f"({rep.bytes / 2**20:,.1f} MiB) into {rep.table}{' (rebuilt)' if rep.rebuilt else ''}; {rep.seconds:.1f} s")
    elif not rep.failed:
        print(f"table {rep.table} is up to date with lake version {lk.version} (nothing to decode)")
    for eid, cam, reason in rep.failed:
        print(f"error: episode {eid} camera {cam}: did not decode ({reason})", file=sys.stderr)
    return 1 if rep.failed else 0


def cmd_train(args) -> int:
    from training.sft import main as sft

    return sft([*([args.config] if args.config else []), *args.overrides,
                *([f"lake={args.lake}"] if getattr(args, "lake", None) else [])])


def cmd_eval(args) -> int:
    from training.evaluate import cli  # torch and the simulator load only for this command

    return cli(args)


def cmd_serve(args) -> int:
    from lakeview import serve  # an entry point above the packages; starlette / uvicorn load only here

    lk = _lake(args)
    serve(lk, host=args.host, port=args.port)
    return 0


def cmd_export(args) -> int:
    lk = _lake(args)
    version = int(args.version) if args.version and args.version.isdigit() else args.version
    rep = lk.export(args.dest, version=version, split=args.split, filter=args.filter, format=args.format)
    print(f"exported lake version {rep.version} to {rep.dest} ({rep.format}): {rep.episodes} episodes, "
          f"{rep.frames} frames, {rep.videos} video files (stream copy); {rep.seconds:.1f} s")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lake", description="episode-lake: a versioned lake of robot episodes")
    p.add_argument("--lake", help="lake URI (local folder or s3://bucket/prefix); default $LAKE_URI")
    sub = p.add_subparsers(dest="cmd", required=True)

    def add(name, fn, help_):
        sp = sub.add_parser(name, help=help_)
        sp.add_argument("--lake", default=argparse.SUPPRESS, help="lake URI; default $LAKE_URI")
        sp.set_defaults(fn=fn)
        return sp

    sp = add("ingest", cmd_ingest, "ingest a LeRobot v2.1/v3.0 dataset folder")
    sp.add_argument("src")
    sp.add_argument("--split", type=_parse_split, default=None, help="e.g. train=0.9,val=0.1")
    sp.add_argument("--message", "-m", default=None)
    sp.add_argument("--ray-address", default=None, help="join a Ray cluster instead of starting one in-process")
    sp.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    sp.add_argument("--verify-all", action="store_true",
                    help="read and compare every episode, even those whose files look unchanged (size, mtime)")
    add("log", cmd_log, "lake versions, newest first")
    sp = add("tag", cmd_tag, "name a lake version")
    sp.add_argument("name")
    sp.add_argument("--version", type=int, default=None)
    sp = add("gc", cmd_gc, "delete the data of old versions (tagged, the newest N and recent ones are kept)")
    sp.add_argument("--keep-last", type=int, default=10, help="newest versions kept (default 10)")
    sp.add_argument("--keep-within", default=None, help="also keep versions newer than this, e.g. 7d, 12h, 30m")
    sp.add_argument("--dry-run", action="store_true", help="list what would be deleted; delete nothing")
    sp = add("diff", cmd_diff, "episodes added/removed between two versions or tags")
    sp.add_argument("a")
    sp.add_argument("b")
    sp = add("edit", cmd_edit, "curate: each edit one zero-copy lake version (--dry-run prints the diff)")
    sp.add_argument("op", choices=["delete", "relabel", "update", "resplit", "add-feature", "remove-feature", "merge",
                                   "restore"])
    sp.add_argument("args", nargs="*", help="ids (delete, relabel), ratios (resplit), NAME, OTHER_URI or VERSION")
    sp.add_argument("--filter", default=None, help="SQL predicate over episodes")
    sp.add_argument("--task", default=None, help="relabel: the new task string")
    sp.add_argument("--split", dest="split_to", default=None, help="relabel/update: move to this split")
    sp.add_argument("--set", action="append", help="update: COLUMN=VALUE (VALUE as JSON, else a string)")
    sp.add_argument("--by", action="append", help="resplit: SPLIT=SQL predicate")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--values", default=None, help="add-feature: JSON file {episode_id: value or per-frame list}")
    sp.add_argument("--level", choices=["frame", "episode"], default="frame")
    sp.add_argument("--message", "-m", default=None)
    sp.add_argument("--dry-run", action="store_true", help="print what would change; write nothing")
    sp = add("episodes", cmd_episodes, "list episodes")
    sp.add_argument("--split", default=None)
    sp.add_argument("--filter", default=None, help="SQL predicate, e.g. \"length > 50 AND task LIKE '%%T%%'\"")
    sp.add_argument("--limit", type=int, default=50)
    sp = add("stats", cmd_stats, "feature statistics")
    sp.add_argument("--split", default=None)
    sp.add_argument("--method", default="lake", choices=["lake", "lerobot"],
                    help="lake: exact over every frame, sketch quantiles; lerobot: LeRobot 0.4.4's numbers")
    sp.add_argument("--by", default=None, help="one table per group: episode, embodiment, source, ...")
    add("quarantine", cmd_quarantine, "what did not land, and why")
    sp = add("verify", cmd_verify, "recompute the checksums of what a lake version holds (exit 1 on any mismatch)")
    sp.add_argument("--version", default=None, help="lake version or tag (default: the newest)")
    sp.add_argument("--deep", action="store_true", help="also decode every video segment strictly")
    sp.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    sp = add("pack", cmd_pack, "decode, tokenize and bin-pack every split (default recipe without RECIPE.yaml)")
    sp.add_argument("recipe", nargs="?")
    sp.add_argument("--repack", action="store_true", help="rebuild the packed table from scratch")
    sp.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    sp = add("decode", cmd_decode, "decode every frame of the videos once (fast random frames for map-style datasets)")
    sp.add_argument("--camera", action="append", help="a camera (source feature name); repeat for more; default all")
    sp.add_argument("--rebuild", action="store_true", help="decode everything again")
    sp.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    sp = add("train", cmd_train, "train the reference VLA on the lake's packed table (training.sft)")
    sp.add_argument("config", nargs="?", help="YAML config (configs/sft/*.yaml)")
    sp.add_argument("overrides", nargs="*", help="key=value overrides, e.g. steps=100")
    sp = add("serve", cmd_serve, "a read-only browser view of the lake (versions, episodes with video, stats, packs, lineage)")
    sp.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    sp.add_argument("--port", type=int, default=8470)
    sp = add("eval", cmd_eval, "closed-loop evaluation in simulation")
    sp.add_argument("checkpoint")
    sp.add_argument("--env", help="gymnasium env id (default: the one the checkpoint was trained for)")
    sp.add_argument("--episodes", type=int, help="episodes to run (default 10)")
    sp.add_argument("--seed", type=int, default=0, help="episode i resets with a seed derived from (seed, i)")
    sp.add_argument("--max-steps", type=int, help="time limit per episode (default: the checkpoint's, else the env's)")
    sp.add_argument("--batch-size", type=int, default=8, help="episodes stepped together (one policy call per step)")
    sp.add_argument("--task", help="task string given to the policy (default: the env's)")
    sp.add_argument("--no-video", action="store_true", help="do not record camera frames into the lake")
    sp.add_argument("--env-kwargs", help='env options as JSON, e.g. \'{"objects": true}\' (default: the checkpoint\'s)')
    # export (lake/_export.py)
    sp = add("export", cmd_export, "write a lake version as a LeRobot dataset folder (videos copied, not re-encoded)")
    sp.add_argument("dest")
    sp.add_argument("--version", default=None, help="lake version or tag (default: newest)")
    sp.add_argument("--split", default=None)
    sp.add_argument("--filter", default=None, help="SQL predicate over episodes, e.g. \"source = 'pusht'\"")
    sp.add_argument("--format", default="lerobot-v3.0", choices=["lerobot-v3.0", "lerobot-v2.1"])
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # one line per failure, never a traceback
        print(f"error: {_reason(e)}", file=sys.stderr)
        return 1


def _reason(e: BaseException) -> str:
    """The root cause in one line (a Ray task error wraps the user exception in a long report)."""
    import re

    if isinstance(e, KeyError) and e.args:
        return str(e.args[0])
    lines = str(e).splitlines()
    causes = [m.group(0) for line in lines if (m := re.match(r"^\s*(\w+\.)*\w*(Error|Exception|TooLong): .+", line))]
    return (causes[-1].strip() if causes else (lines[0] if lines else type(e).__name__))


if __name__ == "__main__":
    sys.exit(main())
