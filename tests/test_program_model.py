"""A plain Pyro program as a clustering model: ProgramModel / as_clustering_model (issue 18 item 1).

The programs here are written only as Pyro code (no subclass). Simulation is checked for the protocol's
shapes, masks, variable N, canonical labels and seeding, for the vectorised path against the per-data-set
path (same distribution, by two-sample tests), and for clear errors on bad programs and bad data.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_acp.data.partitions import is_canonical
from pyro_acp.distributions import CRP
from pyro_acp.models import CRPGaussianMixture, ProgramModel, as_clustering_model
from pyro_acp.models.program import ProgramError, training_range
from pyro_acp.protocols import ClusteringModel
from tests.mcmc_checks import one_thread  # noqa: F401  (autouse: one intra-op thread)
from tests.test_program_references import finite_mixture


def issue_program(num_points, x=None):
    """The example of issue 18, verbatim: CRP partition, Student-t clusters (indexing loc[labels])."""
    labels = pyro.sample("labels", CRP(0.5, num_points))
    scale = pyro.sample("scale", dist.LogNormal(0.0, 0.5))
    with pyro.plate("clusters", num_points):
        loc = pyro.sample("loc", dist.Normal(0.0, 5.0).expand([2]).to_event(1))
    with pyro.plate("points", num_points):
        pyro.sample("x", dist.StudentT(4.0, loc[labels], scale).to_event(1), obs=x)


def renamed(num_points, x=None):
    """A CRP program whose sites are called "z" (the partition) and "y" (the data)."""
    z = pyro.sample("z", CRP(1.0, num_points))
    rates = pyro.sample("rates", dist.Gamma(2.0, 0.5).expand([num_points]).to_event(1))
    with pyro.plate("points", num_points):
        pyro.sample("y", dist.Poisson(rates[..., z]), obs=x)


def test_the_issue_program_is_a_clustering_model_read_from_the_data():
    x = torch.randn(20, 2)
    model = as_clustering_model(issue_program, x)
    assert isinstance(model, ClusteringModel) and isinstance(model, ProgramModel)
    assert model.data_dim == 2 and model.default_num_points == training_range(20) == (8, 33)
    assert model.partition_site_kind == "partition" and model.sites.latents == ("scale", "loc")
    assert model.config()["type"] == "ProgramModel" and model.config()["program"] == "issue_program"
    assert not model.simulation_vectorised  # loc[labels] indexes the copies: runs once per data set
    assert torch.equal(model.check_data(x), x)


def test_simulated_batches_have_masks_variable_n_canonical_labels_and_seeds():
    model = ProgramModel(issue_program, num_points_range=(5, 12), workers=0)
    state = torch.get_rng_state()
    batch = model.simulate(16, seed=3)
    assert torch.equal(torch.get_rng_state(), state)  # an integer seed leaves the global RNG alone
    sizes = batch.num_points
    assert sizes.min() >= 5 and sizes.max() < 12 and len(set(sizes.tolist())) > 2
    assert batch.x.shape == (16, int(sizes.max()), 2)
    assert torch.equal(batch.mask, batch.labels >= 0)
    assert bool(is_canonical(batch.labels).all())
    assert bool((batch.x[~batch.mask] == 0).all())
    again = model.simulate(16, seed=3)
    assert torch.equal(batch.x, again.x) and torch.equal(batch.labels, again.labels)
    assert not torch.equal(model.simulate(16, seed=4).x, batch.x)


def test_worker_processes_draw_what_one_process_draws():
    """One seed per data set: the draws do not depend on the number of worker processes."""
    serial = ProgramModel(issue_program, num_points_range=(5, 12), workers=0).simulate(12, seed=1)
    pooled_model = ProgramModel(issue_program, num_points_range=(5, 12), workers=2)
    pooled = pooled_model.simulate(12, seed=1)
    pooled_model.close()
    assert torch.equal(serial.x, pooled.x) and torch.equal(serial.labels, pooled.labels)


def test_one_value_per_point_data_may_be_given_as_shape_n():
    x = torch.tensor([-3.0, -2.5, 0.1, 0.4, 3.0, 2.8, 3.3])
    model = as_clustering_model(finite_mixture, x)
    assert model.data_dim == 1 and model.partition_site_kind == "categorical" and model.sites.num_components == 3
    assert torch.equal(model.check_data(x), x.reshape(-1, 1))
    assert torch.equal(model.check_data(x.reshape(-1, 1)), x.reshape(-1, 1))
    assert model.program_data(model.check_data(x)).shape == (7,)
    batch = model.simulate(4, seed=0)
    assert batch.x.shape[-1] == 1 and bool(is_canonical(batch.labels).all())


def test_vectorised_simulation_is_verified_and_draws_the_same_distribution():
    """The outer-plate run (verified by replaying each copy) against one run per data set: two-sample KS tests
    of the number of clusters and of the data's spread, 300 data sets each (power: data scaled by 1.5
    instead of 1 gives p < 1e-6 on the spread)."""
    from scipy.stats import ks_2samp

    fast = ProgramModel(finite_mixture, num_points_range=(10, 11))
    slow = ProgramModel(finite_mixture, num_points_range=(10, 11), vectorize=False, workers=0)
    assert fast.simulation_vectorised and not slow.simulation_vectorised
    a, b = fast.simulate(300, seed=0), slow.simulate(300, seed=1)

    def spread(batch):
        return batch.x.squeeze(-1).var(-1)

    assert ks_2samp(a.num_clusters.numpy(), b.num_clusters.numpy()).pvalue > 1e-3
    assert ks_2samp(spread(a).numpy(), spread(b).numpy()).pvalue > 1e-3
    wider = b.x * 1.5
    assert ks_2samp(spread(a).numpy(), wider.squeeze(-1).var(-1).numpy()).pvalue < 1e-6


def test_a_program_that_breaks_on_copies_is_not_vectorised():
    """loc[labels] runs without error under the outer plate when there are more copies than clusters, but
    indexes the copies: the density check catches it."""
    model = as_clustering_model(issue_program, torch.randn(6, 2))
    assert model._probe(6, None, None) is False


# ---------------------------------------------------------------------------------------------- bad input
def no_partition(num_points, x=None):
    with pyro.plate("points", num_points):
        pyro.sample("x", dist.Normal(0.0, 1.0), obs=x)


def no_observation(num_points, x=None):
    pyro.sample("labels", CRP(1.0, num_points))


def normal_labels(num_points, x=None):
    with pyro.plate("points", num_points):
        pyro.sample("labels", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(0.0, 1.0), obs=x)


def raising(num_points, x=None):
    pyro.sample("labels", CRP(1.0, num_points))
    raise ZeroDivisionError("my bug")


@pytest.mark.parametrize("program, error, message", [
    (no_partition, ValueError, r"no_partition has no sample site 'labels' \(its partition site\); its sample "
                               r"sites are 'x': pass labels_site="),
    (no_observation, ValueError, r"no sample site 'x' \(its observed site\)"),
    (normal_labels, TypeError, r"partition site 'labels' of normal_labels is a Normal .* must be a partition "
                               "distribution"),
    (raising, ProgramError, r"the program raising raised ZeroDivisionError when run with num_points=6: my bug"),
    (42, TypeError, "a model must be a clustering model .* or a Pyro program"),
])
def test_bad_programs_get_an_error_naming_the_site_or_the_problem(program, error, message):
    with pytest.raises(error, match=message):
        as_clustering_model(program)


def test_site_names_are_options_and_wrong_ones_are_named():
    with pytest.raises(ValueError, match="no sample site 'labels'.* sites are 'z', 'rates', 'y'"):
        as_clustering_model(renamed)
    model = as_clustering_model(renamed, torch.tensor([1.0, 0.0, 7.0]), labels_site="z", obs_site="y")
    assert model.labels_site == "z" and model.data_dim == 1 and model.simulate(3, seed=0).x.shape[-1] == 1
    with pytest.raises(ValueError, match="labels_site and obs_site must differ"):
        ProgramModel(renamed, labels_site="z", obs_site="z")


def test_data_of_the_wrong_width_is_refused_naming_the_site():
    model = as_clustering_model(issue_program)
    with pytest.raises(ValueError, match=r"the data have 3 values per point but the program's site 'x' draws "
                                         r"points of 2 values"):
        model.check_data(torch.randn(5, 3))
    with pytest.raises(ValueError, match=r"data_dim=3 but the program's site 'x' draws points of 2 values"):
        as_clustering_model(issue_program, torch.randn(5, 3))
    with pytest.raises(ValueError, match="NaN"):
        model.check_data(torch.tensor([[0.0, float("nan")]]))


def test_models_pass_through_and_options_only_configure_programs():
    model = CRPGaussianMixture()
    assert as_clustering_model(model) is model
    with pytest.raises(TypeError, match="configure a Pyro program"):
        as_clustering_model(model, labels_site="z")


def test_the_partition_prior_is_the_site_when_it_depends_on_no_latent():
    model = as_clustering_model(issue_program)
    prior = model.partition_prior(5)
    assert isinstance(prior, CRP) and prior.alpha == 0.5 and prior.num_points == 5
    with pytest.raises(TypeError, match="no closed form"):
        as_clustering_model(finite_mixture).partition_prior(5)


# ---------------------------------------------------------------------------------------------- fingerprints
def _scaled_program(scale: float):
    def program(num_points, x=None):
        labels = pyro.sample("labels", CRP(0.5, num_points))
        with pyro.plate("clusters", num_points):
            loc = pyro.sample("loc", dist.Normal(0.0, scale))
        with pyro.plate("points", num_points):
            pyro.sample("x", dist.Normal(loc[..., labels], 1.0), obs=x)

    return program


def test_the_config_fingerprint_follows_the_code_and_the_values_it_closes_over():
    fingerprint = ProgramModel(_scaled_program(2.0)).fingerprint
    assert ProgramModel(_scaled_program(2.0)).fingerprint == fingerprint  # same code, same values
    assert ProgramModel(_scaled_program(3.0)).fingerprint != fingerprint  # a closed-over value changed
    assert ProgramModel(issue_program).fingerprint != fingerprint  # other code
    named = ProgramModel(_scaled_program(2.0), name="mine", version="1")
    assert named.fingerprint == ProgramModel(_scaled_program(3.0), name="mine", version="1").fingerprint
    assert named.fingerprint != ProgramModel(_scaled_program(2.0), name="mine", version="2").fingerprint
    assert named.config()["program"] == "mine"


# ---------------------------------------------------------------------------------------------- train and infer
def test_train_and_infer_accept_the_wrapped_program():
    """pyro_acp.train / infer on the wrapper object (the one-line as_clustering_model call they will make)."""
    import pyro_acp
    from pyro_acp.guides import ACPS
    from pyro_acp.pretrained.registry import check_guide_matches, on_demand_path

    x = torch.tensor([-3.0, -2.6, 0.2, 0.5, 3.1, 2.7])
    model = as_clustering_model(finite_mixture, x)
    torch.manual_seed(0)
    guide = ACPS(model.data_dim, hidden_dim=16)
    history = pyro_acp.train(model, guide, steps=4, batch_size=4, num_particles=2, seed=0, progress_bar=False,
                             validate_every=0)
    assert len(history.loss) == 4 and guide.trained_for == model.config()
    post = pyro_acp.infer(model, x, guide=guide, num_samples=8, seed=0, progress_bar=False, check_prior=False)
    assert post.samples.shape == (8, 6) and post.log_joint is None
    changed = as_clustering_model(_scaled_program(2.0), x.reshape(-1, 1))
    with pytest.raises(ValueError, match="was trained for"):
        check_guide_matches(changed, guide)
    assert on_demand_path(model) != on_demand_path(changed)  # a changed program never finds the old guide


def test_load_program_names_a_module_function_and_its_errors(tmp_path):
    from pyro_acp.models.program import load_program

    assert load_program("pyro_acp.models.program:training_range") is training_range
    file = tmp_path / "mine.py"
    file.write_text("def program(num_points, x=None):\n    pass\n")
    assert callable(load_program(f"{file}:program"))
    for spec, message in (("nocolon", "module:function"), ("no_such_module_xyz:f", "cannot import"),
                          ("pyro_acp.models.program:missing", "has no 'missing'"),
                          ("pyro_acp.models.program:_COPIES", "not a callable"),
                          (f"{tmp_path}/absent.py:f", "does not exist")):
        with pytest.raises(ValueError, match=message):
            load_program(spec)


def test_the_cache_file_of_a_program_carries_its_name_and_fingerprint():
    from pyro_acp.pretrained.registry import model_key, on_demand_path

    model = ProgramModel(issue_program)
    assert on_demand_path(model).name == f"ProgramModel-issue_program-{model_key(model)}.pt"
    assert on_demand_path(CRPGaussianMixture()).name.startswith("CRPGaussianMixture-")


def test_vectorize_true_insists_and_false_never_tries():
    with pytest.raises(ValueError, match="vectorize=True but simulation of the program issue_program does not"):
        ProgramModel(issue_program, vectorize=True).simulate(2, seed=0)
    assert ProgramModel(finite_mixture, vectorize=True).simulation_vectorised
    assert not ProgramModel(finite_mixture, vectorize=False).simulation_vectorised


def test_plain_program_goes_straight_into_train_and_infer():
    """The one-line wiring: pyro_acp.train and pyro_acp.infer take the plain Pyro callable itself."""
    import pyro_acp
    from pyro_acp.guides import ACPS

    x = torch.tensor([-3.0, -2.6, 0.2, 0.5, 3.1, 2.7])
    model = as_clustering_model(finite_mixture, x)
    torch.manual_seed(0)
    guide = ACPS(model.data_dim, hidden_dim=16)
    pyro_acp.train(model, guide, steps=2, batch_size=4, num_particles=2, seed=0, progress_bar=False,
                   validate_every=0)
    post = pyro_acp.infer(finite_mixture, x, guide=guide, num_samples=8, seed=0, progress_bar=False,
                          check_prior=False)
    assert post.samples.shape == (8, 6)
