"""Which noisy log q estimates reweighting refines (pyro_acp.inference.log_prob.refinement_choice)."""

import math

import torch

import pyro_acp  # noqa: F401  (imports the package in order)
from pyro_acp.inference.log_prob import refinement_choice


def _by_hand(log_prob, error, refine_to, target, owner, mass):
    """The rule written out per data set: pessimistic shares, then the loose partitions by share x error,
    refined until the rest carries at most ``mass``."""
    chosen = []
    for o in owner.unique().tolist():
        members = (owner == o).nonzero().flatten().tolist()
        logs = [target[p] - log_prob[p] + 2 * (0.0 if math.isnan(error[p]) else error[p]) for p in members]
        top = max(logs)
        total = sum(math.exp(v - top) for v in logs)
        carried = {p: math.exp(v - top) / total * error[p] for p, v in zip(members, logs, strict=True)
                   if error[p] > refine_to}
        left = sum(carried.values())
        for p in sorted(carried, key=lambda p: -carried[p]):
            if left <= mass:
                break
            chosen.append(p)
            left -= carried[p]
    return sorted(chosen)


def test_the_rule_matches_it_written_out_on_random_estimates():
    generator = torch.Generator().manual_seed(0)
    for trial in range(40):
        size = 3 + trial
        log_prob = -5 * torch.rand(size, generator=generator, dtype=torch.float64)
        error = torch.rand(size, generator=generator, dtype=torch.float64)
        error[torch.rand(size, generator=generator) < 0.1] = float("nan")  # one unit: no error
        target = -5 * torch.rand(size, generator=generator, dtype=torch.float64)
        owner = torch.sort(torch.randint(0, 3, (size,), generator=generator)).values
        mass = [0.0, 0.005, 0.05][trial % 3]
        got = refinement_choice(log_prob, error, 0.25, target, owner, mass=mass).tolist()
        assert got == _by_hand(log_prob.tolist(), error.tolist(), 0.25, target.tolist(), owner, mass), trial


def test_without_weights_every_loose_estimate_is_refined_and_a_single_unit_never_is():
    error = torch.tensor([0.1, 0.3, float("nan"), 0.9])
    assert refinement_choice(torch.zeros(4), error, 0.25).tolist() == [1, 3]


def test_a_loose_partition_that_carries_no_weight_is_left_and_one_that_does_is_refined():
    # two data sets: in the first the loose partition holds almost all the weight, in the second almost none
    log_prob = torch.tensor([-1.0, -1.0, -1.0, -1.0])
    error = torch.tensor([0.6, 0.05, 0.6, 0.05])
    target = torch.tensor([0.0, -8.0, -12.0, 0.0])
    owner = torch.tensor([0, 0, 1, 1])
    assert refinement_choice(log_prob, error, 0.25, target, owner).tolist() == [0]
    # an estimate that may be far too high hides its weight: the pessimistic share still finds it (its share as
    # estimated, 0.0008, times its error would not pass the budget)
    assert refinement_choice(log_prob, torch.tensor([0.05, 0.05, 1.0, 0.05]), 0.25,
                             torch.tensor([0.0, 0.0, -7.0, 0.0]), owner).tolist() == [2]


def test_a_data_set_whose_shares_are_not_numbers_leaves_the_others_choice_alone():
    """Each data set is ranked on its own: a data set whose targets are all -inf (every sample impossible), or
    with a NaN target, an infinite error or a -inf log q, does not change what the others refine."""
    generator = torch.Generator().manual_seed(3)
    log_prob = -3 * torch.rand(12, generator=generator, dtype=torch.float64)
    error = 0.2 + torch.rand(12, generator=generator, dtype=torch.float64)
    target = -3 * torch.rand(12, generator=generator, dtype=torch.float64)
    owner = torch.arange(3).repeat_interleave(4)
    clean = refinement_choice(log_prob, error, 0.25, target, owner, mass=0.05)
    others = clean[clean >= 4].tolist()
    assert others and (clean < 4).any()  # something is chosen in every data set, so the comparison bites
    for field, value in (("target", float("-inf")), ("target", float("nan")), ("error", float("inf")),
                         ("log_prob", float("-inf"))):
        values = {"log_prob": log_prob.clone(), "error": error.clone(), "target": target.clone()}
        values[field][:4 if field == "target" and value == float("-inf") else 1] = value
        got = refinement_choice(values["log_prob"], values["error"], 0.25, values["target"], owner, mass=0.05)
        assert got[got >= 4].tolist() == others, (field, value, got)
    assert refinement_choice(log_prob[:0], error[:0], 0.25, target[:0], owner[:0]).numel() == 0
