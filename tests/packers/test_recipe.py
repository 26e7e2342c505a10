"""Recipe: hash identity, YAML round trip, LeRobot delta_timestamps validation, clear errors."""

from __future__ import annotations

import dataclasses

import pytest

from packers import Recipe, default_recipe

CHANGES = {
    "cameras": ("observation.images.top",), "image_size": (32, 32), "patch_size": 8, "observation_deltas": (-0.1, 0.0),
    "action_deltas": (0.0, 0.1), "action_horizon": 8, "state_features": ("observation.state",),
    "action_features": ("other",), "pad": "zero", "tokenizer": "tok.json", "max_text_tokens": 9,
    "normalization": "quantile", "action_bins": 256, "token_budget": 4096, "max_samples_per_pack": 7,
    "too_long": "truncate", "frame_stride": 2, "episodes_per_group": 3, "packer": "bfd", "seed": 1,
    "image_encoder": "frozen", "encoder": "patch_embed", "mixture": {"a": 1.0, "b": 3.0},
}


def test_hash_changes_when_any_field_changes():
    base = Recipe()
    fields = {f.name for f in dataclasses.fields(Recipe)} - {"name"}
    assert set(CHANGES) == fields  # every field is exercised
    for name, value in CHANGES.items():
        kw = {name: value}
        if name in ("encoder", "image_encoder"):  # the two only make sense together
            kw.update(image_encoder="frozen", encoder=CHANGES["encoder"])
        assert Recipe(**kw).hash != base.hash, name
    assert Recipe(name="other").hash == base.hash  # the name is a label, not content
    assert hash(Recipe()) == hash(Recipe()) and Recipe() == Recipe()


def test_yaml_round_trip(tmp_path):
    r = Recipe(image_size=(32, 48), observation_deltas=(-0.2, 0.0), action_bins=64, name="mine")
    p = tmp_path / "mine.yaml"
    p.write_text("# lake pack mine.yaml --lake URI\n" + r.to_yaml())
    assert Recipe.from_yaml(p) == r and Recipe.from_yaml(p).hash == r.hash


@pytest.mark.parametrize("bad", [
    dict(image_size=(30, 32)), dict(normalization="zscore"), dict(pad="mirror"), dict(token_budget=0),
    dict(image_encoder="frozen"), dict(observation_deltas=()), dict(too_long="drop"),
])
def test_invalid_recipes_are_rejected(bad):
    with pytest.raises(ValueError):
        Recipe(**bad)


def test_unknown_yaml_fields_are_named(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("token_budgt: 10\n")
    with pytest.raises(ValueError, match="token_budgt"):
        Recipe.from_yaml(p)


def test_delta_timestamps_must_be_multiples_of_the_frame_period():
    assert Recipe(observation_deltas=(-0.2, -0.1, 0.0)).observation_offsets(10) == [-2, -1, 0]
    assert Recipe(action_horizon=4).action_offsets(10) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="multiple of 1/fps"):
        Recipe(observation_deltas=(-0.15,)).observation_offsets(10)


def test_default_recipe_takes_every_camera_and_observation_feature():
    feats = {"observation.state": {"dtype": "float32", "shape": [2]}, "observation.images.a": {"dtype": "video"},
             "observation.images.b": {"dtype": "video"}, "action": {"dtype": "float32", "shape": [2]},
             "timestamp": {"dtype": "float32", "shape": [1]}}
    r = default_recipe(feats)
    assert r.cameras == ("observation.images.a", "observation.images.b")
    assert r.state_features == ("observation.state",) and r.action_features == ("action",)


def test_frozen_encoders_are_chosen_by_registered_name_only():
    from packers import UnknownEncoder, get_encoder, register_encoder
    from packers.encoders import ENCODERS, patch_embed

    assert get_encoder("patch_embed") is patch_embed
    assert get_encoder("packers.encoders:patch_embed") is patch_embed  # recipes written before the registry
    with pytest.raises(UnknownEncoder, match=r"recipe mine: image encoder 'os:system' is not registered"):
        get_encoder("os:system", "recipe mine")
    with pytest.raises(ValueError, match="plain name"):
        register_encoder("mymod:make", patch_embed)  # module paths are what the registry replaces

    def mine():
        return patch_embed(dim=8)

    try:
        register_encoder("mine", mine)
        assert get_encoder("mine") is mine
        with pytest.raises(ValueError, match="already registered"):
            register_encoder("mine", patch_embed)
    finally:
        ENCODERS.pop("mine", None)
