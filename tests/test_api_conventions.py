"""One API convention (DESIGN.md): the data set is the second positional argument ``x``, everything after it
keyword-only; one seeding rule; training leaves Pyro's parameter store and torch's RNG as they were."""

import inspect

import pyro
import pytest
import torch
from pyro.infer import SVI

import pyro_acp
from pyro_acp.guides import ACPS
from pyro_acp.inference.elbo import ClusterwiseIWAE
from pyro_acp.models import CRPGaussianMixture
from pyro_acp.seeding import SeedStream

SMALL = {"batch_size": 4, "num_particles": 2, "num_points": (3, 8), "validate_every": 0, "progress_bar": False}


@pytest.mark.parametrize("function", [pyro_acp.infer, pyro_acp.exact_posterior, pyro_acp.mcmc.gibbs,
                                      pyro_acp.mcmc.nuts])
def test_data_is_the_second_positional_argument_and_the_rest_keyword_only(function):
    params = list(inspect.signature(function).parameters.values())
    assert [p.name for p in params[:2]] == ["model", "x"]
    assert all(p.kind is p.POSITIONAL_OR_KEYWORD for p in params[:2])
    assert all(p.kind is p.KEYWORD_ONLY for p in params[2:]), function.__name__


@pytest.mark.parametrize("function, leading", [(pyro_acp.train, ["model", "guide"]),
                                               (pyro_acp.sbc, ["model", "posterior_fn"]),
                                               (pyro_acp.compare, ["posteriors"])])
def test_entry_points_without_a_data_set_take_keywords_after_their_subjects(function, leading):
    params = list(inspect.signature(function).parameters.values())
    assert [p.name for p in params[: len(leading)]] == leading
    assert all(p.kind is p.KEYWORD_ONLY for p in params[len(leading):])


def test_infer_seeding_rule():
    model = CRPGaussianMixture()
    x, _ = model.simulate(1, num_points=30, seed=0).unpadded(0)
    state = torch.get_rng_state()
    first = pyro_acp.infer(model, x, num_samples=20, seed=5, progress_bar=False)
    assert torch.equal(torch.get_rng_state(), state)  # an integer seed leaves the global RNG as it was
    again = pyro_acp.infer(model, x, num_samples=20, seed=5, progress_bar=False)
    assert torch.equal(first.samples, again.samples) and torch.equal(first.log_prob, again.log_prob)
    torch.manual_seed(1)
    fresh = pyro_acp.infer(model, x, num_samples=20, progress_bar=False)
    assert not torch.equal(torch.get_rng_state(), torch.manual_seed(1).get_state())  # None drew from it
    torch.manual_seed(1)
    assert torch.equal(pyro_acp.infer(model, x, num_samples=20, progress_bar=False).samples, fresh.samples)


def test_train_leaves_the_global_rng_and_the_users_params_alone():
    model = CRPGaussianMixture()
    pyro.clear_param_store()
    mine = pyro.param("my_scale", torch.tensor(2.5))
    guide = ACPS(2, hidden_dim=16)
    state = torch.get_rng_state()
    pyro_acp.train(model, guide, steps=2, seed=3, **SMALL)
    assert torch.equal(torch.get_rng_state(), state)
    store = pyro.get_param_store()
    assert list(store.keys()) == ["my_scale"]  # the user's own parameter, and nothing of the guide's
    assert pyro.param("my_scale") is mine
    fresh, trained = ACPS(2, hidden_dim=16), ACPS(2, hidden_dim=16)
    trained.load_state_dict(fresh.state_dict())
    pyro_acp.train(model, trained, steps=2, seed=3, **SMALL)
    pyro_acp.train(model, fresh, steps=2, seed=3, **SMALL)
    pairs = zip(trained.state_dict().values(), fresh.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)  # a seeded run is reproducible
    pyro.clear_param_store()


def test_two_guides_trained_with_svi_in_one_process_both_train():
    model = CRPGaussianMixture()
    batch = model.simulate(4, num_points=(3, 8), seed=0)
    pyro.clear_param_store()
    for guide in (ACPS(2, hidden_dim=16), ACPS(2, hidden_dim=16)):
        before = [p.detach().clone() for p in guide.parameters()]
        svi = SVI(guide.model, guide.guide, pyro.optim.Adam({"lr": 1e-2}), ClusterwiseIWAE(2))
        for _ in range(3):
            svi.step(batch)
        changed = sum(not torch.equal(a, b) for a, b in zip(before, guide.parameters(), strict=True))
        assert changed == len(before), f"{changed} of {len(before)} parameters changed"
    pyro.clear_param_store()


def test_seed_stream_separates_steps_ranks_and_purposes():
    stream = SeedStream(7)
    seeds = {stream.seed_for(step, purpose) for step in range(50) for purpose in range(3)}
    seeds |= {SeedStream(7, rank=1).seed_for(step) for step in range(50)}
    assert len(seeds) == 200
    assert SeedStream(7, rank=1).seed_for(3) == SeedStream(7, rank=1).seed_for(3)
    assert all(0 <= s < 2**63 for s in seeds)
    with pytest.raises(ValueError, match="rank"):
        SeedStream(7, rank=-1)


def test_ranks_simulate_different_batches_from_one_seed():
    model = CRPGaussianMixture()
    a = model.simulate(2, num_points=6, seed=SeedStream(0, rank=0).seed_for(0))
    b = model.simulate(2, num_points=6, seed=SeedStream(0, rank=1).seed_for(0))
    assert not torch.equal(a.x, b.x)


def test_exact_posterior_sample_follows_the_rule():
    model = CRPGaussianMixture()
    exact = pyro_acp.exact_posterior(model, model.simulate(1, num_points=5, seed=0).unpadded(0)[0])
    state = torch.get_rng_state()
    assert torch.equal(exact.sample(50, seed=1), exact.sample(50, seed=1))
    assert torch.equal(torch.get_rng_state(), state)
