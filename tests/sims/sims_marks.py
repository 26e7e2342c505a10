"""Skip marks for the simulator tests: they run where the ``sims`` extra is installed (``make sims``; CI does)."""

import pytest

from training.sims import available

needs_metaworld = pytest.mark.skipif(not available("metaworld"),
                                     reason="Meta-World is not installed (the sims extra: make sims)")
needs_libero = pytest.mark.skipif(not available("libero"),
                                  reason="LIBERO is not installed (the sims extra: make sims)")


def packed_reach_demos(tmp_path, episodes: int = 2):
    """A lake holding ``episodes`` noisy reach-v3 expert demos packed by the Meta-World recipe: (uri, recipe, the
    packed version), the set-up the RL-of-the-VLA tests share."""
    import lake
    from training.sims.demos import record_expert_demos
    from training.sims.metaworld_sft import metaworld_recipe

    uri = str(tmp_path / "lake")
    record_expert_demos(uri, "metaworld/reach-v3", out=tmp_path / "demos", episodes=episodes, noise=0.1, seed=0,
                        camera=False, batch_size=episodes)
    recipe = metaworld_recipe("test")
    lake.open(uri).pack(recipe)
    return uri, recipe, lake.open(uri).version
