"""Mixtures at pack time: exact per-source sample counts, a pure seeded draw, lineage, recipe YAML."""

from __future__ import annotations

import collections
import json
import shutil

import numpy as np
import pytest

import lake
from packers import Recipe
from packers.mixture import SLOT_BITS, Mixture, epoch_slots, multiplicities, pool_copies, pool_slots, targets

RECIPE = Recipe(image_size=(32, 32), patch_size=16, action_horizon=4, token_budget=512, episodes_per_group=3,
                name="mix")


# --- pure functions -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("weights,total", [([1, 3], 200), ([1, 1, 1], 10), ([0.2, 0.5, 0.3], 7), ([5, 0, 1], 13),
                                           ([1e-3, 1], 1000)])
def test_targets_sum_to_the_epoch_and_stay_within_one_of_each_share(weights, total):
    t = targets(weights, total)
    exact = np.asarray(weights, float) / sum(weights) * total
    assert t.sum() == total and (np.abs(t - exact) < 1).all()


@pytest.mark.parametrize("replacement", [False, True])
@pytest.mark.parametrize("n,target", [(7, 10), (10, 3), (5, 5), (4, 0)])
def test_multiplicities_are_a_pure_function_summing_to_the_target(n, target, replacement):
    m = multiplicities(n, target, replacement, seed=3, split="train", index=1)
    assert m.sum() == target and len(m) == n and (m >= 0).all()
    assert np.array_equal(m, multiplicities(n, target, replacement, seed=3, split="train", index=1))
    if not replacement:  # whole passes, then distinct samples: counts differ by at most one
        assert m.max() - m.min() <= 1


def test_draw_depends_on_seed_split_and_source():
    base = multiplicities(50, 20, False, 0, "train", 0)
    assert not np.array_equal(base, multiplicities(50, 20, False, 1, "train", 0))
    assert not np.array_equal(base, multiplicities(50, 20, False, 0, "val", 0))
    assert not np.array_equal(base, multiplicities(50, 20, False, 0, "train", 1))


def test_mixture_specs_parse_and_bad_ones_are_named():
    a = Mixture.parse({"pusht": 1.0, "other": 3})
    b = Mixture.parse({"sources": [{"name": "pusht", "weight": 1}, {"name": "other", "weight": 3.0}]})
    assert a == b and [s.predicate for s in a.sources] == ["source = 'pusht'", "source = 'other'"]
    c = Mixture.parse({"sources": {"long": {"filter": "length > 20", "weight": 2}}, "replacement": True})
    assert c.sources[0].predicate == "length > 20" and c.replacement
    with pytest.raises(ValueError, match="weight"):
        Mixture.parse({"pusht": -1})
    with pytest.raises(ValueError, match="sum to 0"):
        Mixture.parse({"pusht": 0})
    with pytest.raises(ValueError, match="unknown fields"):
        Mixture.parse({"sources": [{"name": "x", "wieght": 1}]})


def test_recipe_yaml_mixture_section_round_trips_and_changes_the_hash(tmp_path):
    p = tmp_path / "mix.yaml"
    p.write_text("# lake pack mix.yaml --lake URI\nimage_size: [32, 32]\npatch_size: 16\nmixture:\n"
                 "  replacement: false\n  sources:\n    - {name: pusht, weight: 1.0}\n"
                 "    - {name: other, weight: 3.0, filter: \"source = 'other'\"}\n")
    r = Recipe.from_yaml(p)
    assert r.mixture.sources[1].weight == 3.0 and r.mixture.sources[1].filter == "source = 'other'"
    assert Recipe.from_dict(r.to_dict()) == r and Recipe.from_dict(r.to_dict()).hash == r.hash
    plain = Recipe(image_size=(32, 32), patch_size=16)
    assert r.hash != plain.hash and "mixture" not in plain.to_dict()


@pytest.mark.parametrize("replacement", [False, True])
@pytest.mark.parametrize("n,target", [(7, 10), (10, 3), (5, 5), (4, 0), (1, 9)])
def test_epoch_slots_keep_exactly_the_target_and_are_pure_in_seed_and_epoch(n, target, replacement):
    copies = pool_copies(n, target, replacement)
    assert n * copies >= target
    draws = [epoch_slots(n, copies, target, replacement, seed=1, epoch=e, split="train", index=0) for e in range(4)]
    for keep in draws:
        assert keep.shape == (n * copies,) and keep.sum() == target
        per_sample = keep.reshape(copies, n).sum(0) if copies else np.zeros(n)
        if not replacement:  # whole passes, then distinct samples, as the pack-time draw
            assert per_sample.max() - per_sample.min() <= 1
        assert per_sample.max() <= copies
    assert np.array_equal(draws[1], epoch_slots(n, copies, target, replacement, 1, 1, "train", 0))
    if 0 < target < n * copies and (replacement or target % n):
        assert any(not np.array_equal(draws[0], d) for d in draws[1:])  # a fresh draw per epoch
        assert not all(np.array_equal(d, epoch_slots(n, copies, target, replacement, 2, e, "train", 0))
                       for e, d in enumerate(draws))


def test_pool_copies_and_slots():
    assert pool_copies(10, 25, False) == 3 and pool_copies(10, 25, True) == 4 and pool_copies(10, 25, True, 6) == 6
    assert pool_copies(10, 3, False) == 1 and pool_copies(10, 3, True) == 2 and pool_copies(0, 0, True) == 0
    slots = pool_slots(2, 5, 20, np.array([2, 0, 1]))  # samples 5, 6, 7 of source 2 (20 samples), copies 2, 0, 1
    assert (slots >> SLOT_BITS).tolist() == [2, 2, 2]
    assert (slots & ((1 << SLOT_BITS) - 1)).tolist() == [5, 25, 7]
    with pytest.raises(ValueError, match="pool holds"):
        epoch_slots(3, 1, 4, False, 0, 0, "train", 0)


def test_epoch_draw_specs_parse_and_keep_older_hashes():
    m = Mixture.parse({"sources": {"a": 1.0, "b": {"weight": 2.0, "replacement": True}}, "draw": "epoch",
                       "max_repeats": 3})
    assert m.draw == "epoch" and m.max_repeats == 3 and [m.replacement_of(i) for i in (0, 1)] == [False, True]
    assert Mixture.parse(m.to_dict()) == m
    old = Mixture.parse({"a": 1.0, "b": 2.0})
    assert old.to_dict() == {"sources": [{"name": "a", "weight": 1.0, "filter": None, "tag": None},
                                         {"name": "b", "weight": 2.0, "filter": None, "tag": None}],
                             "replacement": False, "samples": None}  # as before: same recipe hash
    with pytest.raises(ValueError, match="draw must be one of"):
        Mixture.parse({"sources": {"a": 1.0}, "draw": "step"})
    with pytest.raises(ValueError, match="max_repeats"):
        Mixture.parse({"sources": {"a": 1.0}, "max_repeats": 2})


# --- packing ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mixed(tmp_path_factory, two_sources):
    dst = tmp_path_factory.mktemp("mix") / "lake"
    shutil.copytree(two_sources.uri, dst)
    lk = lake.open(dst)
    rep = lk.pack(RECIPE, mixture={"pusht_v3": 1.0, "other": 3.0}, progress=False)
    return lk, rep


def _counts(lk, table: str) -> dict[str, collections.Counter]:
    t = lk.episodes(columns=["episode_id", "source"])
    source = dict(zip(t["episode_id"].to_pylist(), t["source"].to_pylist()))
    out: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for row in lk.table(table).to_table(columns=["split", "origin_episode"]).to_pylist():
        out[row["split"]].update(source[e] for e in row["origin_episode"])
    return out


def test_packed_table_holds_each_source_exactly_its_weighted_share(mixed):
    lk, rep = mixed
    counts = _counts(lk, rep.table)
    lineage = rep.mixture
    for split, c in counts.items():
        natural = {s["name"]: s["samples"].get(split, 0) for s in lineage["sources"]}
        present = {n: w for n, w in (("pusht_v3", 1.0), ("other", 3.0)) if natural[n]}
        total = sum(natural.values())
        for name, w in present.items():
            share = total * w / sum(present.values())
            assert abs(c[name] - share) < 1, (split, name, c, share)
            assert c[name] == next(s for s in lineage["sources"] if s["name"] == name)["target"][split]
        assert sum(c.values()) == total
    assert sum(sum(c.values()) for c in counts.values()) == rep.samples


def test_without_replacement_a_downsampled_source_never_repeats_a_sample(mixed):
    lk, rep = mixed
    seen = collections.Counter()
    for row in lk.table(rep.table).to_table(columns=["origin_episode", "origin_frame"]).to_pylist():
        seen.update(zip(row["origin_episode"], row["origin_frame"]))
    src = dict(zip(*[lk.episodes(columns=["episode_id", "source"])[c].to_pylist() for c in ("episode_id", "source")]))
    pusht = [n for (e, _), n in seen.items() if src[e] == "pusht_v3"]
    other = [n for (e, _), n in seen.items() if src[e] == "other"]
    assert max(pusht) == 1  # weight 1 of 4 over ~60% of the samples: a subsample
    assert max(other) - min(other) <= 1 and max(other) >= 2  # upsampled: whole passes plus a remainder


def test_lineage_names_every_source_version_and_weight(mixed):
    lk, rep = mixed
    from packers import packings

    row = [r for r in packings(lk) if r["recipe_hash"] == rep.recipe_hash][-1]
    lineage = json.loads(row["mixture_json"])
    assert lineage == rep.mixture
    by = {s["name"]: s for s in lineage["sources"]}
    assert by["pusht_v3"]["weight"] == 1.0 and by["other"]["weight"] == 3.0
    assert by["pusht_v3"]["lake_version"] == by["other"]["lake_version"] == row["source_version"]
    assert by["other"]["episodes"] == 4 and by["pusht_v3"]["episodes"] == 6
    assert by["other"]["source_uris"][0].endswith("other")
    assert lk.log()[0].summary["mixture"] == {"pusht_v3": 1.0, "other": 3.0}


def test_repacking_the_same_mixture_is_a_no_op_and_the_draw_is_deterministic(mixed, tmp_path):
    lk, rep = mixed
    again = lk.pack(RECIPE, mixture={"pusht_v3": 1.0, "other": 3.0}, progress=False)
    assert again.version is None and again.recipe_hash == rep.recipe_hash
    dst = tmp_path / "copy"
    shutil.copytree(lk.uri, dst)
    other = lake.open(dst)
    fresh = other.pack(RECIPE, mixture={"pusht_v3": 1.0, "other": 3.0}, repack=True, progress=False)
    assert _counts(other, fresh.table) == _counts(lk, rep.table)


def test_mixture_by_filter_and_tag_and_with_replacement(two_sources, tmp_path):
    dst = tmp_path / "lake"
    shutil.copytree(two_sources.uri, dst)
    lk = lake.open(dst)
    lk.tag("both")
    mixture = {"sources": [{"name": "short", "filter": "source = 'pusht_v3' AND length <= 25", "weight": 1},
                           {"name": "rest", "filter": "NOT (source = 'pusht_v3' AND length <= 25)", "tag": "both",
                            "weight": 1}], "replacement": True, "samples": 100}
    rep = lk.pack(RECIPE, mixture=mixture, progress=False)
    assert {s["name"]: s["tag"] for s in rep.mixture["sources"]} == {"short": None, "rest": "both"}
    drawn = sum(sum(s["target"].values()) for s in rep.mixture["sources"])
    assert rep.samples == drawn == 100 * len({sp for s in rep.mixture["sources"] for sp in s["target"]})


def test_bad_mixtures_fail_with_a_reason(two_sources, tmp_path):
    dst = tmp_path / "lake"
    shutil.copytree(two_sources.uri, dst)
    lk = lake.open(dst)
    with pytest.raises(ValueError, match="selects no episodes"):
        lk.pack(RECIPE, mixture={"nope": 1.0}, progress=False)
    with pytest.raises(ValueError, match="make their filters disjoint"):
        lk.pack(RECIPE, mixture={"sources": [{"name": "a", "filter": "length > 0"}, {"name": "other"}]}, progress=False)


def test_plain_and_mixture_packings_share_the_packings_table(two_sources, tmp_path):
    """The packings table gains mixture_json with the first mixture row; plain rows before and after read null."""
    from packers import packings

    dst = tmp_path / "lake"
    shutil.copytree(two_sources.uri, dst)
    lk = lake.open(dst)
    plain = lk.pack(RECIPE, progress=False)
    mix = lk.pack(RECIPE, mixture={"pusht_v3": 1.0, "other": 1.0}, progress=False)
    again = lk.pack(Recipe(**{**RECIPE.to_dict(), "seed": 5}), progress=False)
    rows = {r["recipe_hash"]: r for r in packings(lk)}
    assert rows[plain.recipe_hash].get("mixture_json") is None and rows[again.recipe_hash].get("mixture_json") is None
    assert json.loads(rows[mix.recipe_hash]["mixture_json"]) == mix.mixture
    assert sum(1 for _ in lk.stream("train", recipe=plain.recipe_hash)) > 0


def test_the_example_mixture_config_loads():
    from pathlib import Path

    path = Path(__file__).parents[2] / "configs" / "pack" / "mix.yaml"
    assert path.read_text().startswith("# lake pack configs/pack/mix.yaml")
    r = Recipe.from_yaml(path)
    m = r.mixture
    assert m.draw == "epoch" and r.cameras == ("top", "wrist")
    assert [s.name for s in m.sources] == ["pusht", "gr1_long", "gr1_short"]
    assert [m.replacement_of(i) for i in range(3)] == [False, True, False]
