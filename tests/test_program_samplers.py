"""Every built-in model's hand-written fast sampler draws from the same distribution as its own Pyro program.

``compare_sampler_with_program`` runs the model's ``simulate`` and its Pyro program (``model.model``) on the
same number of data sets and compares six summary statistics per data set (number of clusters, largest
cluster, the size-biased cluster of label 0, the data's mean, mean square and within-cluster spread) by
two-sample Kolmogorov-Smirnov tests. The threshold is Bonferroni over all statistics and models (family-wise
level 1%). Power, stated and checked here: with 150 data sets each, a sampler with concentration 1.4 instead
of 0.7, or a cluster standard deviation 1.25 instead of 1, is rejected; a program that raises fails.
"""

from __future__ import annotations

import inspect

import pytest

from pyro_acp.models import CRPGaussianMixture, registered_models
from pyro_acp.models.program import ProgramError, compare_sampler_with_program
from tests.mcmc_checks import one_thread  # noqa: F401  (autouse)

NUM_DATASETS = 150
NUM_STATISTICS = 6


def built_in_models() -> list:
    """One default instance of every model class of pyro_acp.models that builds with defaults and has its own
    hand-written sampler (``_simulate`` defined in the class, not inherited from a program wrapper)."""
    out = []
    for name, cls in sorted(registered_models().items()):
        if not cls.__module__.startswith("pyro_acp.models") or name == "ProgramModel" or inspect.isabstract(cls):
            continue
        try:
            model = cls()
        except TypeError:  # needs arguments (a base class)
            continue
        try:
            model.simulate(1, num_points=_num_points(model), seed=0)
        except NotImplementedError:
            continue
        out.append(model)
    return out


def _num_points(model) -> int:
    lo, hi = model.default_num_points
    return min(max(lo, 20), hi - 1)


MODELS = built_in_models()
THRESHOLD = 0.01 / (NUM_STATISTICS * len(MODELS))  # Bonferroni: family-wise level 1%


@pytest.mark.parametrize("model", [MODELS[0]] + [pytest.param(m, marks=pytest.mark.slow) for m in MODELS[1:]],
                         ids=lambda m: type(m).__name__)
def test_the_fast_sampler_draws_what_the_program_draws(model):
    p_values = compare_sampler_with_program(model, num_points=_num_points(model), num_datasets=NUM_DATASETS, seed=0)
    assert len(p_values) == NUM_STATISTICS
    assert min(p_values.values()) > THRESHOLD, p_values


def test_every_built_in_family_is_covered():
    names = {type(m).__name__ for m in MODELS}
    assert {"CRPGaussianMixture", "PitmanYorGaussianMixture", "MFMGaussianMixture", "SBM",
            "OrderedGaussianCatalog", "ProceduralCatalog"} <= names


class _WrongConcentration(CRPGaussianMixture):
    """Its sampler uses alpha 1.4, its program alpha 0.7."""

    def __init__(self):
        super().__init__(alpha=0.7)

    def _simulate(self, sizes, mask, generator):
        return CRPGaussianMixture(alpha=1.4)._simulate(sizes, mask, generator)


class _WrongSpread(CRPGaussianMixture):
    """Its sampler draws clusters with standard deviation 1.25, its program with 1."""

    def _simulate(self, sizes, mask, generator):
        return CRPGaussianMixture(sigma=1.25)._simulate(sizes, mask, generator)


class _RaisingProgram(CRPGaussianMixture):
    def _program(self, num_points, obs):
        raise RuntimeError("forgot to write the program")


@pytest.mark.parametrize("wrong, statistic", [(_WrongConcentration(), "num_clusters"),
                                              (_WrongSpread(), "within_cluster_spread")])
def test_the_check_has_power_against_a_sampler_that_differs(wrong, statistic):
    p_values = compare_sampler_with_program(wrong, num_points=20, num_datasets=NUM_DATASETS, seed=0)
    assert p_values[statistic] < THRESHOLD, p_values


def test_a_model_whose_program_raises_fails_the_check():
    model = _RaisingProgram()
    assert model.simulate(2, seed=0).batch_size == 2  # its sampler alone would train and infer
    with pytest.raises(ProgramError, match="_RaisingProgram.model raised RuntimeError .* forgot to write"):
        compare_sampler_with_program(model, num_points=20, num_datasets=10)
