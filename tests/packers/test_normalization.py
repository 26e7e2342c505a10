"""Frozen normalization constants: a dimension (nearly) constant in the data is not blown up into noise."""

import numpy as np
import pytest

from packers import Recipe
from packers.samples import MIN_SCALE, make_layout


@pytest.mark.parametrize("normalization", ["mean_std", "quantile"])
def test_near_constant_dimensions_get_the_floor_scale_others_their_spread(normalization):
    feats = {"observation.state": {"dtype": "float32", "shape": [3]}, "action": {"dtype": "float32", "shape": [1]}}
    state = {"mean": np.array([0.5, 0.02, 0.0]), "std": np.array([0.2, 1e-5, 0.0]),
             "q01": np.array([0.1, 0.02, 0.0]), "q99": np.array([0.9, 0.02001, 0.0])}
    action = {"mean": np.array([0.0]), "std": np.array([0.5]), "q01": np.array([-1.0]), "q99": np.array([1.0])}
    recipe = Recipe(state_features=("observation.state",), normalization=normalization)
    lay = make_layout(recipe, feats, {"observation.state": state, "action": action}, fps=10, vocab_size=256)
    scale = np.asarray(lay["norm"]["observation.state"]["scale"])
    spread = 0.2 if normalization == "mean_std" else 0.4
    np.testing.assert_allclose(scale, [spread, MIN_SCALE, MIN_SCALE], rtol=1e-6)
    # a 1e-4 deviation at evaluation stays a small input, not 1e4 standard deviations
    assert abs(1e-4 / scale[1]) <= 0.1


def test_no_normalization_keeps_unit_scale():
    feats = {"observation.state": {"dtype": "float32", "shape": [1]}, "action": {"dtype": "float32", "shape": [1]}}
    s = {"mean": np.zeros(1), "std": np.zeros(1), "q01": np.zeros(1), "q99": np.zeros(1)}
    lay = make_layout(Recipe(state_features=("observation.state",), normalization="none"), feats,
                      {"observation.state": s, "action": s}, fps=10, vocab_size=256)
    assert lay["norm"]["observation.state"] == {"shift": [0.0], "scale": [1.0]}
