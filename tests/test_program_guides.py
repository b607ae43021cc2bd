"""Guides trained for programs written only as Pyro code, checked against NUTS and the enumerated posterior
(issue 18's must-show).

Two programs (``tests/data/programs.py``): a finite mixture with a ``Categorical`` partition site, and a CRP
program with a Student-t likelihood. Their guides were trained for a few CPU minutes each by
``benchmarks/train_program_guides.py`` (seeded; the command is in each card) and are loaded here, not trained:
the fingerprint in the card's model config guarantees that the program tested is the program trained. The
references were computed by the same script and stored beside them (``program_references.json``): per program
one data set of N = 6 points, its enumerated posterior ``exact_posterior(program, x)`` with 2^17 importance
samples per labelling (and its reported Monte-Carlo error), and for the finite mixture 2,000 draws of
``pyro_acp.mcmc.nuts`` (labels enumerated by Pyro). Recomputing them takes minutes, so a test here recomputes
the enumerated posterior with fewer particles and checks the stored one against it within the errors both
report.

The guide's error is stated (``GUIDE_TV``: its total variation to the enumerated posterior as the benchmark
measured it, rounded up) and measured here from its samples through ``pyro_acp.infer``; the bound adds the
two Monte-Carlo errors of the comparison (the reference's reported TV error, and the TV of as many i.i.d.
draws from the reference itself). An untrained guide is far outside the same bound.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import pyro_acp
from pyro_acp.diagnostics.metrics import total_variation
from pyro_acp.guides import ACPS
from pyro_acp.models import ProgramModel
from pyro_acp.posteriors.enumerated import ExactPosterior
from pyro_acp.pretrained.checkpoint import load_guide
from pyro_acp.pretrained.registry import check_guide_matches
from tests.data import programs
from tests.helpers import StopTraining, stop_after
from tests.mcmc_checks import one_thread  # noqa: F401  (autouse: one intra-op thread)

DATA = Path(__file__).resolve().parent / "data"
PROGRAMS = {"finite_mixture": programs.finite_mixture, "studentt_crp": programs.studentt_crp}
#: each guide's total variation to the enumerated posterior at its N = 6 data set, measured by
#: benchmarks/train_program_guides.py --stage evaluate (the cards' "evaluation": 0.118 and 0.098 from 4,000
#: samples, 0.100 and 0.106 from the guide's density over all 203 partitions), rounded up
GUIDE_TV = {"finite_mixture": 0.13, "studentt_crp": 0.12}
NUM_SAMPLES = 2000


@pytest.fixture(scope="module")
def references():
    return json.loads((DATA / "program_references.json").read_text())


def reference(references, name) -> tuple[torch.Tensor, ExactPosterior, float]:
    entry = references[name]
    exact = ExactPosterior(torch.tensor(entry["partitions"]), torch.tensor(entry["probs"], dtype=torch.float64))
    return torch.tensor(entry["x"]), exact, float(entry["tv_error"])


def fixture_guide(name):
    guide, card = load_guide(DATA / f"{name}_guide.pt")
    model = ProgramModel(PROGRAMS[name], num_points_range=programs.NUM_POINTS_RANGE)
    check_guide_matches(model, guide, card)  # the card's fingerprint is this program's
    return guide


def bound(name, exact, reference_error) -> float:
    return GUIDE_TV[name] + reference_error + total_variation(exact.sample(NUM_SAMPLES, seed=12345), exact)


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_a_trained_program_guide_is_within_its_stated_error_of_the_enumerated_posterior(name, references):
    x, exact, reference_error = reference(references, name)
    post = pyro_acp.infer(PROGRAMS[name], x, guide=fixture_guide(name), num_samples=NUM_SAMPLES, seed=0,
                          progress_bar=False, check_prior=False, estimate_log_prob=False)
    tv = total_variation(post, exact)
    assert tv <= bound(name, exact, reference_error), (tv, bound(name, exact, reference_error))
    untrained = ACPS(2, hidden_dim=32)
    untrained.trained_for = post.model.config()  # compared as it is, without the untrained-guide warning
    blind = pyro_acp.infer(PROGRAMS[name], x, guide=untrained, num_samples=NUM_SAMPLES, seed=0, progress_bar=False,
                           check_prior=False, estimate_log_prob=False)
    assert total_variation(blind, exact) > 2 * bound(name, exact, reference_error)  # the check has power


def test_the_finite_mixture_guide_against_nuts(references):
    """NUTS agrees with the enumerated posterior to its Monte-Carlo floor, and the guide is within its stated
    error of the NUTS samples (plus NUTS's own Monte-Carlo TV, 2.5 times that of i.i.d. draws)."""
    x, exact, reference_error = reference(references, "finite_mixture")
    nuts_samples = torch.tensor(references["finite_mixture"]["nuts_samples"])
    nuts_floor = total_variation(exact.sample(len(nuts_samples), seed=12345), exact)
    assert total_variation(nuts_samples, exact) <= 2.5 * nuts_floor + reference_error
    post = pyro_acp.infer(programs.finite_mixture, x, guide=fixture_guide("finite_mixture"), num_samples=NUM_SAMPLES,
                          seed=0, progress_bar=False, check_prior=False, estimate_log_prob=False)
    assert total_variation(post, nuts_samples) <= bound("finite_mixture", exact, 0.0) + 2.5 * nuts_floor


@pytest.mark.slow
def test_the_stored_reference_is_what_exact_posterior_gives(references):
    """A fresh enumerated posterior with 1,024 particles (another seed) agrees with the stored one within the
    errors both report (the Student-t program; the finite mixture's stored reference is checked by NUTS,
    above, which agrees with it to NUTS's Monte-Carlo floor: its 729 labellings make a fresh one slow)."""
    x, stored, stored_error = reference(references, "studentt_crp")
    fresh = pyro_acp.exact_posterior(programs.studentt_crp, x, num_particles=1024, seed=1)
    assert torch.equal(fresh.partitions, stored.partitions)
    assert total_variation(fresh, stored) <= 3 * (fresh.tv_error + stored_error), fresh.tv_error


def test_a_changed_program_is_refused_the_fixture():
    guide, card = load_guide(DATA / "studentt_crp_guide.pt")

    def studentt_crp(num_points, x=None):  # the same name, another body: another fingerprint
        return programs.finite_mixture(num_points, x)

    with pytest.raises(ValueError, match="was trained for"):
        check_guide_matches(ProgramModel(studentt_crp, num_points_range=programs.NUM_POINTS_RANGE), guide, card)


@pytest.mark.slow
def test_training_a_program_guide_checkpoints_and_resumes_bit_for_bit(tmp_path):
    """The Student-t CRP program trained for 4 steps straight, and interrupted after 2 then resumed from its
    checkpoint: the same weights."""
    model = ProgramModel(programs.studentt_crp, num_points_range=(3, 7), workers=0)
    settings = {"steps": 4, "batch_size": 4, "num_particles": 2, "seed": 3, "validate_every": 2,
                "validation_size": 4, "progress_bar": False, "checkpoint_every": 2}
    straight, resumed = ACPS(2, hidden_dim=8), ACPS(2, hidden_dim=8)
    pyro_acp.train(model, straight, checkpoint=tmp_path / "a.pt", **settings)
    with pytest.raises(StopTraining):
        pyro_acp.train(model, resumed, checkpoint=tmp_path / "b.pt", callback=stop_after(2), **settings)
    history = pyro_acp.train(model, resumed, checkpoint=tmp_path / "b.pt", resume=True, **settings)
    assert history.steps == [0, 1, 2, 3] and len(history.validation_elbo) == 2
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    _, card = load_guide(tmp_path / "b.pt")
    assert card["model"]["fingerprint"] == model.fingerprint and card["training"]["completed_steps"] == 4
