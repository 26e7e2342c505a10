"""The lean Meta-World SFT path: state-only demos pack without a camera, the VLA trains on them and acts in
``lake eval`` from exactly the normalized state the packer wrote, and nothing is rendered."""

import numpy as np
import pytest
from sims_marks import needs_metaworld

import lake

pytestmark = needs_metaworld
ENV = "metaworld/reach-v3"


@pytest.fixture(scope="module")
def reach_lake(tmp_path_factory, ray_session):
    from training.sims.demos import record_expert_demos
    from training.sims.metaworld_sft import metaworld_recipe

    root = tmp_path_factory.mktemp("mw_sft")
    uri = str(root / "lake")
    rep = record_expert_demos(uri, ENV, out=root / "demos", episodes=3, noise=0.1, seed=0, camera=False, batch_size=3)
    recipe = metaworld_recipe("test")
    packed = lake.open(uri).pack(recipe)
    return root, uri, rep, recipe, packed


def test_state_only_demos_have_no_camera_and_pack_state_text_and_chunks(reach_lake):
    _, uri, rep, _, packed = reach_lake
    lk = lake.open(uri)
    assert (rep.kept, rep.success_rate) == (3, 1.0)
    assert all(not c for c in lk.episodes()["cameras"].to_pylist())
    assert packed.samples == rep.frames  # one sample per frame
    loader = lk.stream("train", recipe=packed.recipe_hash)
    lay = loader.source.layout
    assert lay["cameras"] == [] and lay["state_features"] == ["observation.state"] and lay["state_dim"] == 39
    assert len(lay["action_offsets"]) == 8


def test_eval_conditions_on_the_state_the_packer_wrote(reach_lake):
    """The VLA's ``act`` normalizes raw env state with the packed table's frozen constants: for a frame of the
    lake, that equals the packed sample's state row exactly (constant dims included: no 1e-8 blow-up)."""
    from training.observations import normalize

    _, uri, _, recipe, _ = reach_lake
    lk = lake.open(uri)
    loader = lk.stream("train", recipe=recipe.hash)
    lay = loader.source.layout
    scale = np.asarray(lay["norm"]["observation.state"]["scale"])
    assert scale.min() >= 1e-3  # padding zeros and quaternion jitter are not blown up
    batch = next(iter(loader))
    eid, t = batch.origin[5]
    raw = np.asarray(lk.frames(eid, columns=["observation.state"])["observation.state"].to_pylist(), np.float32)[t]
    k = len(lay["observation_offsets"])
    packed_row = batch.state.numpy().reshape(-1, k, lay["state_dim"])[5, -1]
    np.testing.assert_allclose(normalize(lay, {"observation.state": raw[None]}, ["observation.state"])[0], packed_row,
                               rtol=1e-5, atol=1e-5)


def test_sft_with_state_in_suffix_trains_and_lake_eval_runs_without_rendering(reach_lake):
    import torch

    from training.checkpoint import load_policy
    from training.evaluate import evaluate
    from training.sft import SFTConfig, train
    from training.sims.metaworld_sft import METAWORLD_VLA

    root, uri, _, recipe, _ = reach_lake
    out = train(SFTConfig(lake=uri, recipe=recipe.hash, out_dir=str(root / "sft"), steps=4, ckpt_every=2,
                          keep_checkpoints=True, warmup=1, model=METAWORLD_VLA), progress=False)
    assert sorted(p.name for p in (root / "sft").glob("step_*.pt")) == ["step_000002.pt", "step_000004.pt"]
    policy, _ = load_policy(out["checkpoint"])
    assert policy.state_in_suffix and policy.input_features == ["observation.state"]
    # the state reaches the action expert directly: two states give two different chunks from the same noise
    obs = lake.open(uri).frames(lake.open(uri).episodes()["episode_id"][0].as_py(), columns=["observation.state"])
    s = np.asarray(obs["observation.state"].to_pylist()[:2], np.float32)
    cond = policy.condition(torch.from_numpy(normalize_state(policy, s)), 2)
    assert cond.shape == (2, METAWORLD_VLA["width"]) and not torch.allclose(cond[0], cond[1])
    ev = evaluate(out["checkpoint"], ENV, 2, lake_uri=uri, seed=1000, record_video=False, max_steps=6, batch_size=2)
    assert ev.episodes == 2 and ev.lake_version is not None
    assert all(r.length <= 6 for r in ev.rows)


def normalize_state(policy, s):
    from training.observations import normalize

    return normalize(policy.layout, {"observation.state": s}, ["observation.state"])
