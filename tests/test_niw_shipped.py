"""The shipped NIWGaussianMixture guides: found by the registry for their widths, and blind to units and offsets."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from pyro_acp import infer
from pyro_acp.models import NIWGaussianMixture
from pyro_acp.pretrained.registry import default_model_for_width, find_guide


@pytest.mark.parametrize("width", [2, 4])
def test_a_shipped_guide_serves_the_default_model_of_its_width(width):
    model = default_model_for_width(width)
    assert model == NIWGaussianMixture(dim=width)
    assert find_guide(model).name == f"niw_gaussian_mixture_{width}d.pt"


@pytest.mark.parametrize("width", [2, 4])
def test_small_tables_get_the_small_table_guide(width):
    """The small-table guide (trained on N in [2, 12)) serves 2-11 points; the guide for every size the rest,
    and callers that give no size."""
    model = NIWGaussianMixture(dim=width)
    assert find_guide(model, num_points=7).name == f"niw_gaussian_mixture_{width}d_small.pt"
    assert find_guide(model, num_points=12).name == f"niw_gaussian_mixture_{width}d.pt"
    assert find_guide(model).name == f"niw_gaussian_mixture_{width}d.pt"
    card = json.loads(find_guide(model, num_points=7).with_suffix(".json").read_text())
    assert card["training"]["num_points"] == [2, 12] and "tv_n7_invariant_raw" in card["evaluation"]


def test_no_default_model_for_a_width_without_a_shipped_guide():
    assert default_model_for_width(3) is None


def test_infer_is_identical_under_scaling_and_shifting():
    model = NIWGaussianMixture(dim=2)
    x = model.simulate(1, num_points=25, seed=5).unpadded(0)[0].double()
    plain = infer(model, x, num_samples=20, seed=3, train=False, progress_bar=False)
    moved = infer(model, 1000 * x + 7, num_samples=20, seed=3, train=False, progress_bar=False)
    assert torch.equal(plain.samples, moved.samples)
    torch.testing.assert_close(plain.log_joint, moved.log_joint)


def test_infer_many_gives_each_data_set_the_guide_infer_gives_it():
    """A small table and a larger one in one run: each has the samples ``infer`` gives it alone (the small-table
    guide for the first, the every-size guide for the second), not one guide for both."""
    from pyro_acp import infer_many
    from pyro_acp.inference.many import dataset_seed

    model = NIWGaussianMixture(dim=2)
    xs = [model.simulate(1, num_points=n, seed=n).unpadded(0)[0] for n in (7, 30, 9)]
    with pytest.warns(UserWarning):
        many = infer_many(model, xs, num_samples=16, seed=5, progress_bar=False, estimate_log_prob=False, loss=None,
                          check_prior=False)
    for i, x in enumerate(xs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the small-table warning
            alone = infer(model, x, num_samples=16, seed=dataset_seed(5, i), progress_bar=False,
                          estimate_log_prob=False, check_prior=False)
        assert torch.equal(many[i].samples, alone.samples), i
