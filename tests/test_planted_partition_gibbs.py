"""Collapsed Gibbs and greedy ascent for PlantedPartition (the CLUSTER recipe), and ascent under known labels.

The planted-partition prior (SizedBlocksPartition: exactly K blocks, sizes in [low, high)) gets exact seating
weights on complete partitions; the likelihood statistics score with the known p_in / p_out. Both are checked
against the model's exact log joint, Gibbs against exact enumeration, and the ascent with frozen (labelled)
nodes against brute force over its allowed moves.
"""

import math

import pytest
import torch

import pyro_acp
from pyro_acp.data.partitions import canonicalize
from pyro_acp.diagnostics.metrics import total_variation
from pyro_acp.models import SBM, PlantedPartition
from pyro_acp.models.block_priors import SizedBlocksPartition
from pyro_acp.reference.map_ascent import ascend_to_mode

SMALL = PlantedPartition(num_blocks=2, p_in=0.7, p_out=0.2, block_sizes=(2, 6))  # N = 7: sizes (2,5), (3,4)


def _graph(model, num_points: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    batch = model.simulate(1, num_points=num_points, seed=seed)
    return batch.adjacency[0].double(), batch.labels[0]


def _moved(labels: torch.Tensor, i: int, slot: int) -> torch.Tensor:
    out = labels.clone()
    out[i] = slot
    return out


def test_seating_weights_are_the_exact_conditional_prior_on_complete_partitions():
    prior = SizedBlocksPartition(3, (2, 5), 9)
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        labels = prior.sample(generator=generator)
        for i in range(9):
            k = int(labels.max()) + 1
            counts = torch.bincount(labels[torch.arange(9) != i], minlength=k).double()
            weights = prior.seating_log_weights(counts.unsqueeze(0), 8)[0]
            exact = prior.log_prob(torch.stack([_moved(labels, i, slot) for slot in range(k + 1)])).double()
            valid = torch.isfinite(exact)
            # on the valid choices the weights differ from log p(partition) by one constant ...
            assert torch.allclose(weights[valid] - exact[valid], (weights[valid] - exact[valid])[0], atol=1e-9)
            # ... and every invalid choice is far below, so its probability is exactly 0 next to a valid one
            assert (weights[~valid] < weights[valid].max() - 1e5).all()
            assert torch.softmax(weights, 0)[~valid].sum() == 0


def test_seating_weights_lead_an_invalid_partition_towards_validity():
    prior = SizedBlocksPartition(2, (3, 6), 8)
    # counts without the node: a block of 2 (below the minimum 3) and one of 5: joining the small one is the fix
    weights = prior.seating_log_weights(torch.tensor([[2.0, 5.0, 0.0]]), 7)[0]
    assert int(weights.argmax()) == 0 and torch.isfinite(weights[0])
    assert torch.isneginf(weights[2])  # an empty slot is never chosen


def test_planted_partition_statistics_match_the_exact_likelihood():
    model = PlantedPartition()
    adjacency, truth = _graph(model, 60, seed=1)
    statistics = model.gibbs_statistics(adjacency)
    labels = torch.stack([truth, torch.randint(0, 6, (60,), generator=torch.Generator().manual_seed(2))])
    statistics.init(canonicalize(labels), 9)
    assert torch.allclose(statistics.log_likelihood(), model.log_marginal_likelihood(adjacency, labels).double(),
                          atol=1e-6)
    # the log predictive of node 5 over the slots differs from the exact log likelihoods by a constant
    i, k = 5, int(canonicalize(truth).max()) + 1
    statistics.init(canonicalize(truth).unsqueeze(0), k + 1)
    statistics.move(i, canonicalize(truth)[i:i + 1], -torch.ones(1, dtype=torch.float64))
    predictive = statistics.log_predictive(i)[0, :k]
    exact = model.log_marginal_likelihood(
        adjacency, torch.stack([_moved(canonicalize(truth), i, slot) for slot in range(k)])).double()
    assert torch.allclose(predictive - exact, (predictive - exact)[0], atol=1e-6)


def test_gibbs_on_a_planted_partition_matches_exact_enumeration(monkeypatch):
    adjacency, _ = _graph(SMALL, 7, seed=3)
    exact = pyro_acp.exact_posterior(SMALL, adjacency)

    def gibbs():
        # 16 chains run as one batch: 8,000 draws for the cost of one chain's 550 sweeps
        return pyro_acp.mcmc.gibbs(SMALL, adjacency, num_samples=500, warmup_steps=50, num_chains=16, seed=0,
                                   progress_bar=False)

    post = gibbs()
    assert torch.isfinite(post.log_joint).all()  # every state visited is a valid planted partition
    sizes = torch.stack([torch.bincount(row, minlength=2) for row in post.samples])
    assert ((sizes >= 2) & (sizes < 6)).all()
    # 8,000 correlated draws over 56 partitions: measured 0.019; the bound is 3x that
    assert total_variation(exact, post.samples) < 0.06
    # power: the same sampler with the prior's n_k + 1 factor dropped (uniform over valid partitions) is caught
    # (measured 0.113)
    exact_weights = SizedBlocksPartition.seating_log_weights

    def without_size_factor(self, counts, num_seated):
        weights = exact_weights(self, counts, num_seated)
        return torch.where(weights > -1e5, torch.zeros_like(weights), weights)

    monkeypatch.setattr(SizedBlocksPartition, "seating_log_weights", without_size_factor)
    assert total_variation(exact, gibbs().samples) > 0.08


def test_the_ascent_keeps_frozen_nodes_and_stops_at_a_constrained_local_mode():
    model = SBM()
    adjacency, truth = _graph(model, 10, seed=4)
    frozen = torch.zeros(10, dtype=torch.bool)
    frozen[[0, 1]] = True
    starts = torch.randint(0, 3, (4, 10), generator=torch.Generator().manual_seed(5))
    starts[:, 0], starts[:, 1] = 0, 1  # nodes 0 and 1: two known, different labels
    for new_clusters in (True, False):
        modes, log_joint = ascend_to_mode(model, adjacency, starts, frozen=frozen, new_clusters=new_clusters)
        start_joint = model.log_joint(adjacency, canonicalize(starts)).double()
        assert (log_joint >= start_joint - 1e-9).all()
        for start, mode, value in zip(starts, modes, log_joint, strict=True):
            assert mode[0] != mode[1]  # the two labels were never merged
            if not new_clusters:
                assert int(mode.max()) + 1 <= int(canonicalize(start).max()) + 1
            k = int(mode.max()) + 1
            allowed = [_moved(mode, i, slot) for i in range(2, 10) for slot in range(k + int(new_clusters))
                       if slot != int(mode[i])]
            allowed += [torch.where(mode == b, torch.tensor(a), mode) for a in range(k) for b in range(a + 1, k)
                        if not {int(mode[0]), int(mode[1])} <= {a, b}]
            neighbours = model.log_joint(adjacency, canonicalize(torch.stack(allowed))).double()
            assert float(neighbours.max()) <= float(value) + 1e-9


def test_the_ascent_without_constraints_would_merge_what_the_labels_keep_apart():
    """A power check of the constraint: two frozen nodes in one dense block, labelled differently, start in
    their own clusters; unconstrained, the ascent merges them, constrained it cannot."""
    model = PlantedPartition(num_blocks=2, p_in=0.9, p_out=0.1, block_sizes=(4, 9))
    adjacency, truth = _graph(model, 12, seed=6)
    truth = canonicalize(truth)
    same = torch.nonzero(truth == 0).squeeze(-1)
    start = truth.clone()
    start[same[0]] = 1  # split node same[0] off into the other block: a worse partition
    frozen = torch.zeros(12, dtype=torch.bool)
    frozen[[int(same[0]), int(same[1])]] = True
    free, _ = ascend_to_mode(model, adjacency, start)
    held, _ = ascend_to_mode(model, adjacency, start, frozen=frozen)
    assert free[0, same[0]] == free[0, same[1]]
    assert held[0, same[0]] != held[0, same[1]]


def test_refined_map_with_known_labels_keeps_them(tmp_path):
    from pyro_acp.guides import ACPS

    model = PlantedPartition(num_blocks=2, p_in=0.8, p_out=0.1, block_sizes=(4, 9))
    adjacency, truth = _graph(model, 14, seed=7)
    first = {c: int(torch.nonzero(truth == c)[0]) for c in range(2)}
    labelled = {first[0]: "a", first[1]: "b"}
    guide = ACPS(model.data_dim, encoder="gatedgcn", hidden_dim=8, encoder_layers=1)
    with pytest.warns(UserWarning, match="no record"):
        post = pyro_acp.infer(model, adjacency, guide=guide, num_samples=8, seed=0, labelled=labelled,
                              new_clusters=False, progress_bar=False)
    refined = post.refined_map()
    assert refined[first[0]] != refined[first[1]] and int(refined.max()) == 1
    assert float(model.log_joint(adjacency, refined)) >= float(model.log_joint(adjacency, post.map)) - 1e-6
    assert math.isfinite(float(model.log_joint(adjacency, refined)))


def test_frozen_points_need_initial_labels_and_a_sweeping_kernel():
    from pyro_acp.reference.gibbs_kernel import CollapsedGibbs

    adjacency, _ = _graph(SMALL, 7, seed=8)
    frozen = torch.zeros(7, dtype=torch.bool)
    with pytest.raises(ValueError, match="initial_params"):
        CollapsedGibbs(SMALL, frozen=frozen).setup(0, adjacency)
    with pytest.raises(ValueError, match="initial_params"):
        CollapsedGibbs(SMALL, new_clusters=False).setup(0, adjacency)
    with pytest.raises(ValueError, match="split_merge"):
        CollapsedGibbs(SMALL, frozen=frozen, split_merge=True)
    kernel = CollapsedGibbs(SMALL, num_chains=1, frozen=torch.zeros(5, dtype=torch.bool))
    kernel.initial_params = {"labels": torch.tensor([0, 0, 0, 1, 1, 1, 1])}
    with pytest.raises(ValueError, match="frozen must be"):
        kernel.setup(0, adjacency)
