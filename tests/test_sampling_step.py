"""The clusterwise sampling round as guide methods: same draws as the loop it replaced, size caps, orders."""

from __future__ import annotations

import pytest
import torch

from pyro_acp.data.partitions import PAD_LABEL
from pyro_acp.guides import ACP, ACPS, CCP
from pyro_acp.guides.clusterwise import StepEncoding, cap_cluster_size
from pyro_acp.inference.frames import framed, random_frames
from pyro_acp.inference.frames import sample_frames as frames_of_samples
from pyro_acp.inference.sampling import padded_inputs, sample_partitions


@torch.no_grad()
def reference_sample_partitions(guide, x, num_samples, mask=None, sample_z=True, sample_joins=True,
                                generator=None, frames=None):
    """The sampling loop as it was before the round moved into the guide (anchor, z and joins drawn here)."""
    x, mask = padded_inputs(x, mask)
    num_sets, num_points = mask.shape
    dataset = torch.arange(num_sets).repeat_interleave(num_samples)
    frame = frames_of_samples(num_samples, frames).repeat(num_sets)
    x, mask, dataset = framed(x, mask, frames, dataset, frame)
    data = guide.encode_data(x, mask)
    labels = torch.full((dataset.shape[0], num_points), -1, dtype=torch.long)
    labels[~mask[dataset]] = PAD_LABEL - 1
    cluster_code = x.new_zeros(dataset.shape[0], guide.hidden_dim)
    active = torch.arange(dataset.shape[0])
    step = 0
    while active.numel():
        unassigned = labels[active] == -1
        anchor_index = torch.multinomial(unassigned.to(x.dtype), 1, generator=generator)
        anchor = torch.zeros_like(unassigned).scatter_(1, anchor_index, True)
        available = unassigned & ~anchor
        points, anchor_code, unassigned_code = guide.step_encodings(data.enc, data.feats, dataset[active], anchor,
                                                                    available)
        context = torch.cat([anchor_code, unassigned_code, cluster_code[active]], -1)
        enc = StepEncoding(dataset[active], available, points, context, anchor_code, cluster_code[active],
                           shared_points=guide.shares_points)
        prior = guide.prior(context)
        z = prior.loc + prior.scale * torch.randn(prior.loc.shape, generator=generator) if sample_z else prior.loc
        logits = guide.join_logits(z, enc)
        joins = torch.rand(logits.shape, generator=generator) < torch.sigmoid(logits) if sample_joins else logits > 0
        members = anchor | (joins & available)
        labels[active] = torch.where(members, torch.full_like(labels[active], step), labels[active])
        cluster_code[active] += guide.cluster_summaries(data.cluster_points, dataset[active], members)
        active = active[(labels[active] == -1).any(-1)]
        step += 1
    labels[labels < -1] = PAD_LABEL
    return labels.view(num_sets, num_samples, num_points)


def _padded_data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two data sets of 11 and 7 points (2-D, three loose clusters each), padded to 11."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 11, 2, generator=g) + 4.0 * torch.randint(0, 3, (2, 11, 1), generator=g)
    mask = torch.ones(2, 11, dtype=torch.bool)
    mask[1, 7:] = False
    return x, mask


def _guide(cls, seed: int = 0):
    torch.manual_seed(seed)
    return cls(2, 16).eval()


def _cluster_sizes(labels: torch.Tensor) -> torch.Tensor:
    """(rows, K) cluster sizes of labels (rows, N), padding (-1) ignored."""
    flat = labels.reshape(-1, labels.shape[-1])
    sizes = torch.zeros(flat.shape[0], int(flat.max()) + 1, dtype=torch.long)
    valid = flat >= 0
    return sizes.scatter_add_(1, flat.clamp(min=0), valid.long())


# ---------------------------------------------------------------------------------------------- same draws
@pytest.mark.parametrize("cls", [ACP, ACPS, CCP])
@pytest.mark.parametrize(("sample_z", "sample_joins"), [(True, True), (False, True), (True, False), (False, False)])
def test_same_labels_as_the_loop_it_replaced(cls, sample_z, sample_joins):
    guide = _guide(cls)
    x, mask = _padded_data()
    ours = sample_partitions(guide, x, 6, mask=mask, sample_z=sample_z, sample_joins=sample_joins,
                             generator=torch.Generator().manual_seed(3))
    reference = reference_sample_partitions(guide, x, 6, mask=mask, sample_z=sample_z, sample_joins=sample_joins,
                                            generator=torch.Generator().manual_seed(3))
    assert torch.equal(ours, reference)
    assert (ours[1, :, 7:] == PAD_LABEL).all() and (ours[:, :, :7] >= 0).all()


def test_same_labels_with_frames_and_ordered_identity():
    """Frames keep the same draws too, and the default order (creation order) adds none."""
    guide = _guide(ACPS, 1)
    x, mask = _padded_data(1)
    frames = random_frames(3, 2, generator=torch.Generator().manual_seed(2))
    reference = reference_sample_partitions(guide, x, 5, mask=mask, frames=frames,
                                            generator=torch.Generator().manual_seed(4))
    for ordered in (False, True):
        ours = sample_partitions(guide, x, 5, mask=mask, frames=frames, ordered=ordered,
                                 generator=torch.Generator().manual_seed(4))
        assert torch.equal(ours, reference)


# ---------------------------------------------------------------------------------------------- size caps
class FirstTwo(ACPS):
    """Overrides the whole round: the default cluster, cut to its two lowest-index points."""

    def sample_step(self, state, generator=None, sample_z=True, sample_joins=True):
        members = super().sample_step(state, generator=generator, sample_z=sample_z, sample_joins=sample_joins)
        return members & (members.cumsum(-1) <= 2)


class MostProbableTwo(ACPS):
    """Keeps the draws and caps through ``select_members``: the anchor and its most probable joiner."""

    def select_members(self, anchor, joins, logits, enc):
        return cap_cluster_size(anchor, joins, logits, torch.full((anchor.shape[0],), 2))


@pytest.mark.parametrize("cls", [FirstTwo, MostProbableTwo])
def test_a_guide_can_cap_cluster_sizes(cls):
    x, mask = _padded_data(2)
    uncapped = sample_partitions(_guide(ACPS, 2), x, 20, mask=mask, generator=torch.Generator().manual_seed(0))
    assert _cluster_sizes(uncapped).max() > 2  # the cap has work to do
    capped = sample_partitions(_guide(cls, 2), x, 20, mask=mask, generator=torch.Generator().manual_seed(0))
    sizes = _cluster_sizes(capped)
    assert sizes.max() <= 2
    assert torch.equal(sizes.sum(-1), mask.sum(-1).repeat_interleave(20))  # every point in one cluster
    assert (capped[1, :, 7:] == PAD_LABEL).all()


def test_cap_keeps_the_anchor_and_the_most_probable_joiners():
    anchor = torch.tensor([[True, False, False, False, False], [False, False, False, False, True]])
    joins = torch.tensor([[False, True, True, True, False], [True, False, True, False, False]])
    logits = torch.tensor([[9.0, 0.5, 2.0, 1.0, 7.0], [0.1, 5.0, 0.3, 0.0, 0.0]])
    capped = cap_cluster_size(anchor, joins, logits, torch.tensor([3, 5]))
    assert capped.tolist() == [[True, False, True, True, False], [True, False, True, False, True]]
    assert cap_cluster_size(anchor, joins, logits, 1).tolist() == anchor.tolist()  # just the anchor


def test_a_round_that_makes_no_progress_is_refused():
    class Empty(ACPS):
        def sample_step(self, state, generator=None, sample_z=True, sample_joins=True):
            return torch.zeros_like(state.unassigned)

    class Reassigns(ACPS):
        def sample_step(self, state, generator=None, sample_z=True, sample_joins=True):
            return torch.ones_like(state.unassigned)

    x, mask = _padded_data()
    for cls in (Empty, Reassigns):
        with pytest.raises(ValueError, match="sample_step returned a cluster"):
            sample_partitions(_guide(cls), x, 2, mask=mask)


# ---------------------------------------------------------------------------------------------- orders
class Reversed(ACPS):
    """Orders every thread's clusters last-built first."""

    def order_clusters(self, clusters, generator=None):
        k = clusters.summaries.shape[1]
        positions = torch.arange(k).expand(clusters.labels.shape[0], k)
        count = clusters.num_clusters.unsqueeze(-1)
        return torch.where(positions < count, count - 1 - positions, positions)


def test_order_clusters_sets_the_positions():
    x, mask = _padded_data(3)
    created = sample_partitions(_guide(Reversed, 3), x, 8, mask=mask, generator=torch.Generator().manual_seed(1))
    ordered = sample_partitions(_guide(Reversed, 3), x, 8, mask=mask, ordered=True,
                                generator=torch.Generator().manual_seed(1))
    count = created.max(-1, keepdim=True).values + 1
    assert torch.equal(ordered, torch.where(created >= 0, count - 1 - created, created))
    assert (count > 1).any()  # some samples really are reordered


def test_the_hook_sees_the_finished_clusters():
    seen = {}

    class Recorder(ACPS):
        def order_clusters(self, clusters, generator=None):
            seen["clusters"] = clusters
            return super().order_clusters(clusters, generator)

    guide = _guide(Recorder, 4)
    x, mask = _padded_data(4)
    labels = sample_partitions(guide, x, 3, mask=mask, ordered=True, generator=torch.Generator().manual_seed(0))
    clusters = seen["clusters"]
    assert torch.equal(clusters.labels, labels.reshape(6, 11))
    assert clusters.dataset.tolist() == [0, 0, 0, 1, 1, 1]
    assert torch.equal(clusters.num_clusters, labels.reshape(6, 11).max(-1).values + 1)
    k = clusters.summaries.shape[1]
    # each cluster's summary is g(PMA(h(enc), members)); zero past the thread's own clusters
    data = guide.encode_data(*padded_inputs(x, mask))
    for t in range(6):
        for c in range(k):
            members = clusters.labels[t] == c
            if c < int(clusters.num_clusters[t]):
                expected = guide.cluster_summaries(data.cluster_points, clusters.dataset[t:t + 1], members[None])[0]
                assert torch.allclose(clusters.summaries[t, c], expected, atol=1e-5)
            else:
                assert not clusters.summaries[t, c].any()


def test_a_bad_order_is_refused():
    class NotAPermutation(ACPS):
        def order_clusters(self, clusters, generator=None):
            return torch.zeros_like(super().order_clusters(clusters, generator))

    x, mask = _padded_data()
    with pytest.raises(ValueError, match="order_clusters must return"):
        sample_partitions(_guide(NotAPermutation), x, 3, mask=mask, ordered=True)
    # unordered sampling never asks for an order
    sample_partitions(_guide(NotAPermutation), x, 3, mask=mask)
