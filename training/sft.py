"""Reference VLA SFT recipe: ``python -m training.sft CONFIG.yaml [key=value ...]``.

setup → train → cleanup, torchtune-style, on ``lake.stream`` packed batches:
- setup: open the lake (pinned version or tag), stream the split of the packed table, build the VLA from the
  table's layout, AdamW + warmup/cosine; resume model, optimizer, RNG and loader position from the latest
  checkpoint when ``resume`` is on (exact: the loader's state is a handful of numbers);
- train: fixed number of optimizer steps, epochs roll over; loss logged (and plotted at the end);
- checkpoints record the lake URI, version, tags and recipe hash they were trained on (``training.checkpoint``).
Multi-process: ``torchrun --nproc_per_node=N -m training.sft CONFIG`` (gloo on CPU, DDP); Ray Train:
``training.sft.ray_train(config, num_workers=N)``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch


@dataclass(frozen=True)
class SFTConfig:
    lake: str = "lake_demo"
    split: str = "train"
    recipe: str | None = None  # recipe hash (or None: the newest packed table)
    version: str | None = None  # lake version or tag to train on (None: newest)
    out_dir: str = "runs/sft"
    steps: int = 200
    batch_packs: int = 1
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup: int = 20
    grad_clip: float = 1.0
    seed: int = 0
    log_every: int = 10
    ckpt_every: int = 100
    keep_checkpoints: bool = False  # also keep each ckpt_every checkpoint as step_NNNNNN.pt (learning curves)
    resume: bool = True
    num_workers: int = 0
    model: dict = field(default_factory=lambda: {"width": 128, "depth": 4, "heads": 4, "head_dim": 32})
    fp8: str | None = None  # "tensorwise" | "rowwise" (torchao float8; emulated on CPU)

    @classmethod
    def load(cls, path: str | None, overrides: list[str] = ()) -> "SFTConfig":
        import yaml

        d = (yaml.safe_load(Path(path).read_text()) or {}) if path else {}
        for o in overrides:
            k, _, v = o.partition("=")
            d[k] = yaml.safe_load(v)
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown config keys {sorted(unknown)}")
        return cls(**d)


def _dist() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("gloo")
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    return rank, world


def _lr(step: int, cfg: SFTConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    p = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, p)))


def setup(cfg: SFTConfig, rank: int = 0, world: int = 1):
    import lake
    from training import checkpoint

    from .vla import make_vla

    torch.manual_seed(cfg.seed)
    lk = lake.open(cfg.lake, create=False)
    if cfg.version is not None:
        lk = lk.checkout(cfg.version)
    loader = lk.stream(cfg.split, recipe=cfg.recipe, seed=cfg.seed, batch_packs=cfg.batch_packs, rank=rank,
                       world_size=world, num_workers=cfg.num_workers)
    src = loader.source
    model_cfg = {"layout": src.layout, **cfg.model}
    model = make_vla(**model_cfg)
    if cfg.fp8:
        from .fp8 import convert_to_fp8

        model = convert_to_fp8(model, recipe=cfg.fp8)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    tags = [e.tags for e in lk.log() if e.version == src.lake_version]
    lineage = checkpoint.Lineage(lake_uri=lk.uri, lake_version=src.lake_version,
                                 lake_tag=(tags[0][0] if tags and tags[0] else None), recipe_hash=src.recipe_hash,
                                 packed_table=src.table)
    state = {"step": 0, "epoch": 0, "losses": []}
    last = Path(cfg.out_dir) / "last.pt"
    if cfg.resume and last.exists():
        ck = checkpoint.load(last)
        if ck["lineage"].get("recipe_hash") != src.recipe_hash:
            raise ValueError(f"{last} was trained on packed table {ck['lineage'].get('packed_table')}, "
                             f"not {src.table}: use another out_dir or resume=false")
        model.load_state_dict(ck["state_dict"])
        opt.load_state_dict(ck["optimizer"])
        torch.set_rng_state(ck["rng"])
        loader.load_state_dict(ck["loader"])
        state = {"step": ck["step"], "epoch": ck["loader"].get("epoch", 0), "losses": ck["losses"]}
    if world > 1:
        # the prefix expert's last-layer output feeds no loss (as in π0): those weights get no gradient
        model = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    return lk, loader, model, opt, lineage, model_cfg, state


def save(cfg: SFTConfig, model, opt, loader, lineage, model_cfg, state, name: str = "last.pt") -> str:
    from training import checkpoint

    core = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    return checkpoint.save(Path(cfg.out_dir) / name, core, factory="vla", config=model_cfg,
                           step=state["step"], lineage=lineage, optimizer=opt.state_dict(), rng=torch.get_rng_state(),
                           loader=loader.state_dict(), losses=state["losses"], sft_config=dataclasses.asdict(cfg))


def train(cfg: SFTConfig, progress: bool = True) -> dict:
    """Run the recipe; returns {"losses": [...], "checkpoint": path, "lineage": {...}}."""
    from tqdm.auto import tqdm

    rank, world = _dist()
    lk, loader, model, opt, lineage, model_cfg, state = setup(cfg, rank, world)
    it = iter(loader)
    bar = tqdm(total=cfg.steps, initial=state["step"], desc="sft", disable=not progress or rank != 0)
    t0, tokens = time.perf_counter(), 0
    embodiment_of = _embodiments(lk, loader.source.layout)  # episode -> robot type, for a mixture of robots
    by_embodiment: dict[str, list[float]] = state.setdefault("losses_by_embodiment", {})
    while state["step"] < cfg.steps:
        try:
            batch = next(it)
        except StopIteration:  # epoch boundary: a new deterministic order
            state["epoch"] += 1
            loader.set_epoch(state["epoch"])
            it = iter(loader)
            continue
        if batch.n_samples == 0:  # a per-epoch mixture draw kept none of these packs' samples (rare)
            continue
        for g in opt.param_groups:
            g["lr"] = _lr(state["step"], cfg)
        if embodiment_of:
            loss, each = model(batch, per_sample=True)
            _report(by_embodiment, embodiment_of, batch.origin, each)
        else:
            loss = model(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        state["step"] += 1
        state["losses"].append(loss.item())
        tokens += batch.n_tokens
        bar.update(1)
        if state["step"] % cfg.log_every == 0:
            bar.set_postfix(loss=f"{sum(state['losses'][-cfg.log_every:]) / cfg.log_every:.4f}")
        if rank == 0 and (state["step"] % cfg.ckpt_every == 0 or state["step"] == cfg.steps):
            path = save(cfg, model, opt, loader, lineage, model_cfg, state)
            if cfg.keep_checkpoints:
                save(cfg, model, opt, loader, lineage, model_cfg, state, name=f"step_{state['step']:06d}.pt")
    bar.close()
    if rank == 0:
        path = save(cfg, model, opt, loader, lineage, model_cfg, state)
        _plot(state["losses"], Path(cfg.out_dir) / "loss.png")
    else:
        path = None
    return {"losses": state["losses"], "checkpoint": path, "lineage": dataclasses.asdict(lineage),
            "tokens_per_s": tokens / max(1e-9, time.perf_counter() - t0),
            "losses_by_embodiment": {k: list(v) for k, v in by_embodiment.items()}}


def _embodiments(lk, layout: dict) -> dict[str, str]:
    """episode id -> robot type when the packed table mixes embodiments (``packers._embodiments``), else {}."""
    if len(layout.get("embodiments") or {}) < 2:
        return {}
    t = lk.episodes(columns=["episode_id", "robot_type"])
    return dict(zip(t["episode_id"].to_pylist(), (r or "unknown" for r in t["robot_type"].to_pylist())))


def _report(by: dict[str, list[float]], embodiment_of: dict[str, str], origin, each) -> None:
    """Append this step's mean sample loss of each embodiment present in the batch."""
    sums: dict[str, list[float]] = {}
    for (eid, _), v in zip(origin, each.tolist()):
        sums.setdefault(embodiment_of.get(eid, "unknown"), []).append(v)
    for k, vs in sums.items():
        by.setdefault(k, []).append(sum(vs) / len(vs))


def _plot(losses: list[float], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    if not losses:
        return
    fig, ax = plt.subplots(figsize=(6, 3.2))
    x = np.arange(1, len(losses) + 1)
    ax.plot(x, losses, alpha=0.35, label="step")
    w = max(1, len(losses) // 20)
    ax.plot(x[w - 1:], np.convolve(losses, np.ones(w) / w, mode="valid"), label=f"mean of {w}")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("flow-matching loss")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def ray_train(cfg: SFTConfig, num_workers: int = 2) -> dict:
    """The same recipe under Ray Train (TorchTrainer, gloo on CPU): each worker streams its own shard."""
    from ray.train import ScalingConfig
    from ray.train.torch import TorchTrainer

    def loop(config):
        import ray.train

        ctx = ray.train.get_context()
        os.environ.update(RANK=str(ctx.get_world_rank()), WORLD_SIZE=str(ctx.get_world_size()))
        out = train(SFTConfig(**config), progress=False)
        ray.train.report({"loss": out["losses"][-1], "steps": len(out["losses"])})

    result = TorchTrainer(loop, train_loop_config=dataclasses.asdict(cfg),
                          scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=False)).fit()
    return result.metrics


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    path = argv[0] if argv and "=" not in argv[0] else None
    cfg = SFTConfig.load(path, [a for a in argv if "=" in a])
    out = train(cfg)
    if out["checkpoint"]:
        print(json.dumps({"checkpoint": out["checkpoint"], "first_loss": out["losses"][0] if out["losses"] else None,
                          "last_loss": out["losses"][-1] if out["losses"] else None, "lineage": out["lineage"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
