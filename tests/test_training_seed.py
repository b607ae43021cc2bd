"""Issue 15 item 7: an integer seed fixes training completely, the guide's initial weights included.

Before the fix ``train(model, guide, seed=0)`` on two freshly built guides gave different losses: the
initial weights came from torch's global RNG when the guides were built. Now an untrained guide's weights
are redrawn from the seed stream; a trained one is never touched (resume stays bit for bit).
"""

import copy

import pytest
import torch

from pyro_acp.guides import ACPS
from pyro_acp.inference.training import INITIAL_WEIGHTS, redraw_initial_weights, train
from pyro_acp.models import CRPGaussianMixture
from pyro_acp.seeding import SeedStream, forked_rng

SMALL = {"batch_size": 4, "num_particles": 3, "num_points": (3, 12), "validation_size": 4, "validate_every": 2,
         "progress_bar": False}


def _state(guide):
    return {name: value.clone() for name, value in guide.state_dict().items()}


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def _differ(a: dict, b: dict) -> bool:
    return any(not torch.equal(a[name], b[name]) for name in a)


def test_two_seeded_runs_on_fresh_guides_are_bit_identical():
    model = CRPGaussianMixture()
    torch.manual_seed(1)
    first = ACPS(2, 16)
    torch.manual_seed(2)
    second = ACPS(2, 16)  # other initial weights: the global RNG differed when it was built
    assert _differ(_state(first), _state(second))
    h1 = train(model, first, steps=2, seed=0, **SMALL)
    h2 = train(model, second, steps=2, seed=0, **SMALL)
    assert h1.loss == h2.loss and h1.validation_elbo == h2.validation_elbo
    _assert_same(_state(first), _state(second))


def test_the_seed_decides_the_initial_weights():
    model = CRPGaussianMixture()
    a, b, c = ACPS(2, 16), ACPS(2, 16), ACPS(2, 16)
    train(model, a, steps=0, seed=0, **SMALL)
    train(model, b, steps=0, seed=0, **SMALL)
    train(model, c, steps=0, seed=1, **SMALL)
    _assert_same(_state(a), _state(b))
    assert _differ(_state(a), _state(c))


def test_redrawn_weights_are_the_constructors_own_under_the_init_seed():
    """Every parameter (attention seeds too, which no reset_parameters covers) is drawn as the constructor
    draws it, in place (the parameter objects stay), and torch's global RNG is left as it was."""
    seed = SeedStream(5).seed_for(0, INITIAL_WEIGHTS)
    with forked_rng(seed):
        expected = ACPS(2, 16)
    guide = ACPS(2, 16)
    params = list(guide.parameters())
    rng = torch.get_rng_state()
    redraw_initial_weights(guide, seed)
    assert torch.equal(torch.get_rng_state(), rng)
    _assert_same(_state(guide), _state(expected))
    assert all(p is q for p, q in zip(params, guide.parameters(), strict=True))


def test_redraw_falls_back_to_reset_parameters_for_a_guide_its_config_does_not_rebuild():
    class Custom(ACPS):
        def __init__(self, data_dim, width):  # its config does not rebuild it
            super().__init__(data_dim, hidden_dim=width)

    torch.manual_seed(1)
    a = Custom(2, 16)
    torch.manual_seed(2)
    b = Custom(2, 16)
    original = a.join_point.weight.clone()
    for guide in (a, b):
        with pytest.warns(UserWarning, match="seeds"):  # PMA seeds: no reset_parameters covers them
            redraw_initial_weights(guide, 3)
    assert torch.equal(a.join_point.weight, b.join_point.weight)
    assert not torch.equal(a.join_point.weight, original)


def test_a_trained_guide_is_never_reset():
    model = CRPGaussianMixture()
    guide = ACPS(2, 16)
    train(model, guide, steps=2, seed=0, **SMALL)
    assert guide.trained_for == model.config()
    kept = copy.deepcopy(guide)
    kept.trained_for = None
    again = train(model, guide, steps=2, seed=0, **SMALL)  # trained already: continues from its weights
    control = train(model, kept, steps=2, seed=0, reinitialize=False, **SMALL)
    assert again.loss == control.loss
    _assert_same(_state(guide), _state(kept))
    fresh = ACPS(2, 16)
    redrawn = train(model, fresh, steps=2, seed=0, **SMALL)
    assert redrawn.loss != again.loss  # the comparison above can tell a reset guide apart


def test_weights_loaded_by_hand_are_kept_with_reinitialize_false():
    model = CRPGaussianMixture()
    source = ACPS(2, 16)
    train(model, source, steps=1, seed=0, **SMALL)
    loaded = ACPS(2, 16)
    loaded.load_state_dict(source.state_dict())
    before = _state(loaded)
    train(model, loaded, steps=0, seed=0, reinitialize=False, **SMALL)
    _assert_same(_state(loaded), before)
    train(model, loaded, steps=0, seed=0, reinitialize=True, **SMALL)
    assert _differ(_state(loaded), before)
    with pytest.raises(ValueError, match="reinitialize"):
        train(model, loaded, steps=0, seed=0, reinitialize="yes", **SMALL)


def test_unseeded_runs_keep_the_weights_the_guide_was_built_with():
    model = CRPGaussianMixture()
    guide = ACPS(2, 16)
    before = _state(guide)
    train(model, guide, steps=0, seed=None, **SMALL)
    _assert_same(_state(guide), before)


def test_cuda_without_cuda_is_a_one_line_error_before_any_work(monkeypatch):
    model = CRPGaussianMixture()

    def simulate(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(model, "simulate", simulate)
    with pytest.raises(ValueError, match="no CUDA device") as err:
        train(model, ACPS(2, 16), steps=2, seed=0, device="cuda", **SMALL)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="not a device torch knows"):
        train(model, ACPS(2, 16), steps=2, seed=0, device="gpu0", **SMALL)
