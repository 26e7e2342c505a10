"""``python -m training.rl CONFIG.yaml [--set key=value ...] [--lake URI] [--checkpoint PATH]``: one RL run."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    import yaml

    from .config import load_config
    from .pipeline import run, summary

    p = argparse.ArgumentParser(prog="python -m training.rl", description=__doc__)
    p.add_argument("config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set mode=ss --set algo.train_steps=3")
    p.add_argument("--lake", default=None, help="lake URI for the trajectories (lake.uri)")
    p.add_argument("--checkpoint", default=None, help="where to save the final policy")
    args = p.parse_args(argv)
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            p.error(f"--set {item!r}: expected KEY=VALUE")
        overrides[key] = yaml.safe_load(value)
    if args.lake:
        overrides["lake.uri"] = args.lake
    if args.checkpoint:
        overrides["checkpoint"] = args.checkpoint
    try:
        rep = run(load_config(args.config, overrides))
    except Exception as e:  # one line, not a traceback
        print(f"error: {type(e).__name__}: {e}".splitlines()[0], file=sys.stderr)
        return 1
    print(summary(rep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
