"""Packs, evaluations, RL runs and the lineage graph that joins them to sources and lake versions, read from the
tables the packers (``packings``) and training (``evals``; RL episodes' ``attrs``) write into the lake."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.compute as pc

from ._queries import NotFound, _has, _quote, check_id


def packings(lk) -> list[dict]:
    """Rows of the ``packings`` table (one per pack job), oldest first; [] before anything was packed."""
    if not _has(lk, "packings"):
        return []
    return lk.table("packings").to_table().to_pylist()


def pack_detail(lk, recipe_hash: str) -> dict:
    check_id(recipe_hash, "recipe hash")
    rows = [r for r in packings(lk) if r["recipe_hash"] == recipe_hash]
    if not rows:
        raise NotFound(f"no packed table for recipe {recipe_hash!r} in lake version {lk.version}")
    last = rows[-1]
    try:
        ds = lk.table(last["table"])
    except KeyError:
        raise NotFound(f"packed table {last['table']} is not in lake version {lk.version}") from None
    budget = None
    try:
        budget = json.loads(last["recipe_json"]).get("token_budget")
    except (TypeError, ValueError):
        pass
    t = ds.to_table(columns=["split", "n_samples", "n_tokens", "cu_seqlens"])
    per_split = {}
    for split in sorted(set(t["split"].to_pylist())):
        sub = t.filter(pc.equal(t["split"], split))
        n_tokens = np.asarray(sub["n_tokens"].to_pylist(), np.float64)
        lengths = np.concatenate([np.diff(np.asarray(c, np.int64)) for c in sub["cu_seqlens"].to_pylist()]) \
            if sub.num_rows else np.zeros(0)
        per_split[split] = {"packs": sub.num_rows, "samples": int(np.sum(sub["n_samples"].to_pylist())),
                            "fill": float(n_tokens.sum() / (len(n_tokens) * budget)) if budget and len(n_tokens) else None,
                            "n_samples": np.asarray(sub["n_samples"].to_pylist()), "lengths": lengths,
                            "n_tokens": n_tokens}
    return {"rows": rows, "last": last, "recipe": json.loads(last["recipe_json"] or "{}"), "budget": budget,
            "splits": per_split, "table": last["table"]}


def evals(lk) -> list[dict]:
    """Rows of the ``evals`` table (closed-loop evaluations recorded by ``training.evaluate``)."""
    if not _has(lk, "evals"):
        return []
    return lk.table("evals").to_table().to_pylist()


def rl_runs(lk) -> dict[str, dict]:
    """RL runs found in the lake: episodes whose attrs name a ``run_id``, grouped, with return / success by
    policy version."""
    if not _has(lk, "episodes"):
        return {}
    ds = lk.table("episodes")
    if "attrs" not in ds.schema.names or "policy_version" not in ds.schema.names:
        return {}
    t = ds.to_table(columns=["attrs", "policy_version", "episode_return", "success", "source"],
                    filter="attrs LIKE '%run_id%'")
    runs: dict[str, dict] = {}
    for r in t.to_pylist():
        try:
            run = json.loads(r["attrs"]).get("run_id")
        except (TypeError, ValueError):
            continue
        if not run:
            continue
        d = runs.setdefault(str(run), {"source": r["source"], "by_version": {}})
        d["by_version"].setdefault(int(r["policy_version"] or 0), []).append(
            (r["episode_return"] if r["episode_return"] is not None else np.nan, bool(r["success"])))
    for d in runs.values():
        vs = sorted(d["by_version"])
        d["versions"] = vs
        d["mean_return"] = [float(np.nanmean([x[0] for x in d["by_version"][v]])) for v in vs]
        d["success_rate"] = [float(np.mean([x[1] for x in d["by_version"][v]])) for v in vs]
        d["episodes"] = sum(len(x) for x in d["by_version"].values())
    return runs


def lineage(lk) -> dict:
    """Nodes and edges: sources -> lake versions (ingests/appends) -> packs (recipe, from a version) ->
    checkpoints (named by evaluations) -> evaluations; RL runs -> the versions their episodes landed in."""
    nodes: dict[str, dict] = {}
    edges: set[tuple[str, str]] = set()

    def node(key, kind, label, href, note=""):
        nodes.setdefault(key, {"id": key, "kind": kind, "label": label, "href": href, "note": note})
        return key

    log = list(reversed(lk.log()))
    for e in log:
        src = e.summary.get("source")
        if src:
            s = node(f"source:{src}", "source", src, f"/episodes?filter={_url_filter(f'source = {_sql(src)}')}")
            v = node(f"version:{e.version}", "version", f"v{e.version}", f"/version/{e.version}",
                     ", ".join(e.tags) or e.message[:40])
            edges.add((s, v))
    for r in packings(lk):
        v = node(f"version:{r['source_version']}", "version", f"v{r['source_version']}",
                 f"/version/{r['source_version']}")
        p = node(f"pack:{r['recipe_hash']}", "pack", f"pack {r['recipe_hash'][:10]}", f"/packs/{r['recipe_hash']}",
                 f"fill {r['fill']:.0%}" if r["fill"] is not None else "")
        edges.add((v, p))
    for r in evals(lk):
        ck = r["checkpoint"] or "?"
        c = node(f"ckpt:{ck}", "checkpoint", _short(ck), f"/checkpoint?path={_url_filter(ck)}",
                 f"step {r['checkpoint_step']}")
        if r.get("recipe_hash") and f"pack:{r['recipe_hash']}" in nodes:
            edges.add((f"pack:{r['recipe_hash']}", c))
        elif r.get("lake_version") is not None:
            v = node(f"version:{r['lake_version']}", "version", f"v{r['lake_version']}", f"/version/{r['lake_version']}")
            edges.add((v, c))
        ev = node(f"eval:{r['eval_id']}", "eval", f"eval {r['env_id']}", f"/eval/{r['eval_id']}",
                  f"success {r['success_rate']:.0%}")
        edges.add((c, ev))
    for run, d in rl_runs(lk).items():
        node(f"rl:{run}", "rl", f"RL {run}", f"/rl/{run}",
             f"{d['episodes']} episodes, last success {d['success_rate'][-1]:.0%}" if d["success_rate"] else "")
        for e in log:
            if run in e.message:
                edges.add((f"rl:{run}", node(f"version:{e.version}", "version", f"v{e.version}", f"/version/{e.version}")))
    return {"nodes": list(nodes.values()), "edges": sorted(edges)}


def _short(path: str) -> str:
    parts = path.rstrip("/").split("/")
    return "/".join(parts[-2:])


def _sql(s: str) -> str:
    return "'" + _quote(s) + "'"


def _url_filter(s: str) -> str:
    from urllib.parse import quote

    return quote(s, safe="")
