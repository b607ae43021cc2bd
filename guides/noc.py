"""NOC (Neural Ordered Clusters): ACP clustering, a cardinality head and a pointer network over the clusters.

The catalog problem: group the points, then order the groups. NOC is an :class:`~pyro_acp.guides.acp.ACP`
with two more heads, trained jointly with it on simulated ordered partitions:

- **cardinality head**: at every cluster step, from the step's context cat(D, U, G) (anchor, available
  points, finished clusters) and its number of candidates |A_k|, a regression t_k in [0, |A_k|] of the
  number of *other* points that join the anchor.
  At sampling time the cluster keeps the anchor and at most ceil(t_k) of its joiners, the most probable
  ones (:func:`~pyro_acp.guides.clusterwise.cap_cluster_size`), and never more than ``max_cluster_size``.
- **pointer network** over the K finished clusters: a cluster embedding c_k = MLP(mean of a point network
  over its members, the mean and mean square of its (scaled) inputs, log |s_k|), set attention over the
  clusters (MAB(C, C)), a GRU decoder started from the pooled set (PMA) and fed the previously placed
  cluster, and additive pointer attention a_{p,k} = v^T tanh(W_1 c_k + W_2 h_p) over the clusters not yet
  placed: p(order | clusters) = prod_p softmax_k(a_{p,k})[order_p]. Teacher-forced in training (the decoder is
  fed the true previous cluster); at sampling the order is drawn from it (``sample_order``) or taken greedily.

Training objective (one Pyro model/guide pair, trained with :func:`pyro_acp.train`): the clusterwise IWAE
bound of ACP plus two ``pyro.factor`` sites in the same steps plate (each data set has as many order
positions as cluster steps), so the bound maximised is

    clustering bound + ordering_weight * log p(true order | true clusters) - cardinality_weight * sum_k (t_k - n_k)^2,

i.e. loss = clustering + lambda_o * ordering + lambda_k * cardinality, with the defaults lambda_o = 4 and
lambda_k = 0.003 of the NOC paper for ordered Gaussians (15 and 0.1 for procedural catalogs). The factors do
not depend on z, so they add to the per-step IWAE bound exactly.

Cluster steps in training follow the clusters' first appearance in the batch's (uniformly shuffled) point
order, the size-biased order the sampler's uniform anchors produce, not the catalog order (an ordered
batch numbers its clusters by position); each cluster keeps the batch's anchor. Points are not centred
(``center=False``): an order by distance from the origin needs absolute positions.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import pyro
import torch
from pyro import poutine
from torch import Tensor, nn

from pyro_acp.data.batch import Batch
from pyro_acp.data.partitions import canonicalize
from pyro_acp.guides import GUIDES
from pyro_acp.guides.acp import ACP, ACPS
from pyro_acp.guides.clusterwise import DataEncoding, FinishedClusters, StepEncoding, cap_cluster_size
from pyro_acp.inference.frame_strata import frame_mixture, sample_frames_to_score
from pyro_acp.inference.frames import drawn_frames
from pyro_acp.nn.attention import MAB, PMA, pooled
from pyro_acp.nn.encoders import mlp
from pyro_acp.posteriors.ordered import check_ordered_labels
from pyro_acp.validation import check_choice, check_positive_int, check_scalar

if TYPE_CHECKING:  # the estimator imports the guides: imported where it runs
    from pyro_acp.inference.log_prob import LogProbEstimate

__all__ = ["NOC", "NOCS", "OrderedHeads", "creation_order", "ordered_log_prob_estimate"]

#: a join logit standing for -inf in scoring: its Bernoulli log factor is exactly 0 for target 0 and
#: SCORING_FLOOR (probability zero in any sum) for target 1; -inf itself would make 0 * inf = NaN
SCORING_FLOOR = -1e4
#: where the sampler's size cap comes from (OrderedHeads ``size_cap``)
SIZE_CAPS = ("predicted", "model")


def creation_order(batch: Batch) -> tuple[Batch, Tensor]:
    """The batch's cluster steps renumbered by first appearance in its point order, and (B, K) the order
    position of each renumbered cluster (-1 beyond K_b). Anchors stay those of the batch."""
    labels = canonicalize(batch.labels)
    num_sets, num_points = labels.shape
    k = batch.max_clusters
    valid = labels >= 0
    slot = labels.masked_fill(~valid, k)
    position = torch.full((num_sets, k + 1), -1, dtype=torch.long, device=labels.device).scatter_reduce(
        1, slot, batch.labels.masked_fill(~valid, -1), "amax")[:, :k]
    step_mask = position >= 0
    members = labels.unsqueeze(1) == torch.arange(k, device=labels.device).view(1, -1, 1)
    anchor = batch.anchor.gather(1, position.clamp(min=0).unsqueeze(-1).expand(-1, -1, num_points))
    anchor = anchor & step_mask.unsqueeze(-1)
    counts = members.long()
    assigned = (counts.cumsum(1) - counts).bool() & step_mask.unsqueeze(-1)
    available = batch.mask.unsqueeze(1) & ~assigned & ~anchor & step_mask.unsqueeze(-1)
    steps = replace(batch, anchor=anchor, available=available, members=members, assigned=assigned,
                    step_mask=step_mask)
    return steps, position


class OrderedHeads:
    """The cardinality head, the pointer network and the joint objective of NOC, over any clusterwise guide
    (a mixin placed before :class:`~pyro_acp.guides.acp.ACP` or :class:`~pyro_acp.guides.acp.ACPS`).

    Args (besides the clustering guide's): ``ordering_weight`` (lambda_o), ``cardinality_weight`` (lambda_k),
    ``max_cluster_size`` (a hard cap at sampling time, e.g. the model's; None: the predicted sizes only),
    ``sample_order`` (draw the order from the pointer network at sampling time; False: greedy),
    ``size_cap`` ("predicted": a cluster keeps at most ceil(t_k) + 1 members, and never more than
    ``max_cluster_size``; "model": at most ``max_cluster_size``, the cardinality head trained but unused at
    sampling).
    ``center``: the clustering encoder's median centring (off by default); the pointer network always reads
    the uncentred, scaled inputs, so an order by distance from the origin is learnable either way.
    """

    orders_clusters = True

    def __init__(self, data_dim: int, hidden_dim: int = 128, *, ordering_weight: float = 4.0,
                 cardinality_weight: float = 0.003, max_cluster_size: int | None = None,
                 sample_order: bool = True, size_cap: str = "predicted", center: bool = False, **kwargs):
        super().__init__(data_dim, hidden_dim, center=center, **kwargs)
        self.size_cap = check_choice(size_cap, "size_cap", SIZE_CAPS)
        self.ordering_weight = check_scalar(ordering_weight, "ordering_weight")
        self.cardinality_weight = check_scalar(cardinality_weight, "cardinality_weight")
        if self.ordering_weight < 0 or self.cardinality_weight < 0:
            raise ValueError("ordering_weight and cardinality_weight must be non-negative")
        self.max_cluster_size = None if max_cluster_size is None else check_positive_int(
            max_cluster_size, "max_cluster_size")
        self.sample_order = bool(sample_order)
        self.config.update(ordering_weight=self.ordering_weight, cardinality_weight=self.cardinality_weight,
                           max_cluster_size=self.max_cluster_size, sample_order=self.sample_order,
                           size_cap=self.size_cap)
        h, heads, d = hidden_dim, self.config["num_heads"], data_dim
        self.cardinality_net = mlp(3 * h + 1, h, 1, 2)
        self.order_point_net = mlp(h + 2 * d, h, h, 2)
        self.order_cluster_net = mlp(h + 2 * d + 1, h, h, 2)
        self.order_attention = MAB(h, h, h, heads)
        self.order_pool = PMA(h, h, 1, heads)
        self.order_start = nn.Parameter(torch.zeros(h))
        self.order_init = nn.Linear(h, h)
        self.order_decoder = nn.GRU(h, h, batch_first=True)
        self.pointer_cluster = nn.Linear(h, h, bias=False)
        self.pointer_query = nn.Linear(h, h)
        self.pointer_score = nn.Linear(h, 1, bias=False)

    #: parameters of the heads (everything else belongs to the clustering guide)
    HEAD_PREFIXES = ("cardinality_net.", "order_", "pointer_")

    def load_clustering(self, source: nn.Module) -> None:
        """Copy the clustering weights of a trained guide of the base class (e.g. an ACP-S checkpoint for
        :class:`NOCS`) into this one; the heads keep their weights. ValueError when the architectures differ
        (a missing or surplus clustering parameter, or another shape)."""
        own = self.state_dict()
        theirs = source.state_dict()
        clustering = {k for k in own if not k.startswith(self.HEAD_PREFIXES)}
        if set(theirs) != clustering or any(theirs[k].shape != own[k].shape for k in clustering):
            raise ValueError(f"{type(source).__name__}'s weights do not fit the clustering part of "
                             f"{type(self).__name__} (different parameters or shapes: build it with the source's "
                             "hidden_dim, z_dim and layer counts)")
        self.load_state_dict({**own, **theirs})

    # ------------------------------------------------------------------ encodings
    def encode_data(self, x: Tensor, mask: Tensor, *args, **kwargs) -> DataEncoding:
        """ACP's encodings, with the scaled inputs [x / r, (x / r)^2] (B, N, 2D) appended to ``feats``, r the
        data set's root mean square norm (the pointer's input; the order by norm is scale-free)."""
        data = super().encode_data(x, mask, *args, **kwargs)
        weights = mask.unsqueeze(-1).to(x.dtype)
        rms = ((x.square().sum(-1, keepdim=True) * weights).sum(-2, keepdim=True)
               / weights.sum(-2, keepdim=True).clamp(min=1.0)).sqrt().clamp(min=1e-6)
        scaled = x / rms
        raw = torch.cat([scaled, scaled.square()], -1) * weights
        return data._replace(feats=torch.cat([data.feats, raw], -1))

    def step_encodings(self, enc, feats, dataset, anchor, available) -> tuple[Tensor, Tensor, Tensor]:
        """The clustering guide's, on its own features (the pointer's inputs stripped)."""
        return super().step_encodings(enc, feats[..., : -2 * self.data_dim], dataset, anchor, available)

    def encode(self, batch: Batch) -> StepEncoding:
        """ACP's teacher-forced encodings, with cluster steps in first-appearance order (:func:`creation_order`)."""
        if self._cache is not None and id(batch) in self._cache:
            return self._cache[id(batch)]
        self.check_batch(batch)
        saved, self._cache = self._cache, None  # the renumbered batch is a temporary: cache by the batch given
        try:
            encoding = super().encode(creation_order(batch)[0])
        finally:
            self._cache = saved
        if self._cache is not None:
            self._cache[id(batch)] = encoding
        return encoding

    def cardinality(self, enc: StepEncoding) -> Tensor:
        """Predicted number of other members t_k (S,) of each step: t_k = |A_k| sigmoid(MLP(cat(D, U, G),
        log(1 + |A_k|))), a share of the step's |A_k| join candidates (the pooled context is a weighted mean, so
        it does not carry the count itself)."""
        count = enc.available.sum(-1, keepdim=True).to(enc.context.dtype)
        share = torch.sigmoid(self.cardinality_net(torch.cat([enc.context, count.log1p()], -1)))
        return (count * share).squeeze(-1)

    def cluster_embeddings(self, data: DataEncoding, dataset: Tensor, members: Tensor) -> Tensor:
        """Pointer inputs c_k (T, K, H) of clusters given by member masks (T, K, N) of data sets ``dataset`` (T,)."""
        raw = data.feats[..., -2 * self.data_dim:]  # (B, N, 2D)
        points = self.order_point_net(torch.cat([data.enc, raw], -1))  # (B, N, H)
        weights = members.to(points.dtype)
        size = weights.sum(-1, keepdim=True)  # (T, K, 1)
        mean = torch.einsum("tkn,tnh->tkh", weights, torch.cat([points, raw], -1)[dataset]) / size.clamp(min=1.0)
        features = torch.cat([mean, size.clamp(min=1.0).log()], -1)
        return self.order_cluster_net(features) * (size > 0).to(points.dtype)

    def pointer_context(self, clusters: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        """(clusters in context (T, K, H), the decoder's initial state (1, T, H)) from embeddings and (T, K) mask."""
        context = self.order_attention(clusters, clusters, valid)
        start = torch.tanh(self.order_init(pooled(self.order_pool, context, valid)))
        return context, start.unsqueeze(0)

    def pointer_logits(self, context: Tensor, queries: Tensor) -> Tensor:
        """Additive pointer attention (T, P, K) of decoder states (T, P, H) over clusters (T, K, H)."""
        hidden = self.pointer_cluster(context).unsqueeze(-3) + self.pointer_query(queries).unsqueeze(-2)
        return self.pointer_score(torch.tanh(hidden)).squeeze(-1)

    def order_log_prob(self, batch: Batch) -> Tensor:
        """log p(true order | true clusters) per order position (B, K): the teacher-forced pointer network
        (0 beyond K_b), clusters numbered as in :func:`creation_order`."""
        steps, position = creation_order(batch)
        data = self.encode_data(steps.x, steps.mask)
        return self._order_log_prob(data, torch.arange(batch.batch_size, device=position.device), steps.members,
                                    position)

    def _order_log_prob(self, data: DataEncoding, dataset: Tensor, members: Tensor, position: Tensor) -> Tensor:
        """log p(order | clusters) per position (T, K) of clusters ``members`` (T, K, N) (-free slots empty)
        of data sets ``dataset`` (T,) whose cluster k sits at position ``position[t, k]`` (-1 beyond K_t)."""
        valid = position >= 0
        context, start = self.pointer_context(self.cluster_embeddings(data, dataset, members), valid)
        k = valid.shape[1]
        target = position.masked_fill(~valid, k).argsort(-1)  # (B, K): the cluster at position p
        placed = context.gather(1, target.unsqueeze(-1).expand_as(context))
        inputs = torch.cat([self.order_start.expand(position.shape[0], 1, -1), placed[:, :-1]], 1)
        queries, _ = self.order_decoder(inputs, start)
        logits = self.pointer_logits(context, queries)  # (B, P, K)
        later = position.unsqueeze(1) >= torch.arange(k, device=valid.device).view(1, -1, 1)  # not yet placed
        open_ = later & valid.unsqueeze(1)
        open_ = open_ | ~open_.any(-1, keepdim=True)  # positions beyond K_b: anything finite (masked below)
        logits = logits.masked_fill(~open_, -math.inf)
        chosen = logits.log_softmax(-1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
        return chosen.masked_fill(~valid, 0.0)

    @torch.no_grad()
    def order_log_prob_of(self, x: Tensor, positions: Tensor) -> Tensor:
        """log p(order | clusters, x) (S,) under the pointer network of ordered partitions ``positions`` (S, N)
        (labels = cluster positions) of one data set ``x`` (N, D): exact for the guide (no estimation), the
        order's part of log q(ordered partition) = log q(partition) + log p(order | partition)."""
        positions = torch.as_tensor(positions, dtype=torch.long, device=x.device)
        positions = positions.unsqueeze(0) if positions.dim() == 1 else positions
        check_ordered_labels(positions.cpu(), "positions")
        data = self.encode_data(x.unsqueeze(0), torch.ones(1, x.shape[0], dtype=torch.bool, device=x.device))
        k = int(positions.max()) + 1
        slots = torch.arange(k, device=x.device)
        members = positions.unsqueeze(1) == slots.view(1, -1, 1)  # (S, K, N): cluster k = position k
        position = torch.where(members.any(-1), slots, -1).expand(positions.shape[0], k)
        dataset = torch.zeros(positions.shape[0], dtype=torch.long, device=x.device)
        return self._order_log_prob(data, dataset, members, position).sum(-1)

    # ------------------------------------------------------------------ Pyro model
    def model(self, batch: Batch) -> None:
        """ACP's model plus the ordering and cardinality terms as ``pyro.factor`` sites in the steps plate."""
        shared = self.reuse_encoding() if self._cache is None else contextlib.nullcontext()
        with shared:
            super().model(batch)
            enc = self.encode(batch)
        order = self.order_log_prob(batch)[creation_order(batch)[0].step_mask]  # (S,), data set by data set
        squared = (self.cardinality(enc) - enc.targets.sum(-1).to(enc.context.dtype)).square()
        # a plate of its own over the same steps (a plate name is used once per trace), on the steps' dim
        with poutine.scale(scale=1.0 / batch.batch_size), pyro.plate("head_steps", enc.available.shape[0], dim=-1):
            pyro.factor("ordering", self.ordering_weight * order)
            pyro.factor("cardinality", -self.cardinality_weight * squared)

    # ------------------------------------------------------------------ the size cap in scoring
    def join_size_cap(self, enc: StepEncoding) -> Tensor:
        """(S,) the most members a step's cluster keeps at sampling time: ceil(t_k) + 1, at most
        ``max_cluster_size`` (``size_cap="model"``: ``max_cluster_size``; with neither, every point)."""
        if self.size_cap == "model":
            bound = enc.available.shape[-1] if self.max_cluster_size is None else self.max_cluster_size
            return torch.full(enc.available.shape[:1], bound, dtype=torch.long, device=enc.available.device)
        size = self.cardinality(enc).ceil().long() + 1
        return size if self.max_cluster_size is None else size.clamp(max=self.max_cluster_size)

    @contextlib.contextmanager
    def capped_scoring(self):
        """Within the block, :meth:`join_logits` of steps with known joins (``enc.targets``) score the capped
        sampler's clusters, so that the clusterwise log-probability estimator
        (:func:`pyro_acp.inference.log_prob.log_prob_estimate`) estimates the density NOC samples from.

        With cap m = :meth:`join_size_cap` - 1 joiners and the sampler keeping the m joiners of largest
        logit, a step builds the joiner set J with probability
        prod_{i in J} p_i prod_{i not in J} (1 - p_i) when |J| < m (the cap did not act);
        prod_{i in J} p_i prod_{i not in J, rho_i > min_J rho} (1 - p_i) when |J| = m (a point ranked below
        every member would have been cut had it joined, so it may do either); 0 when |J| > m. In logit form
        (a Bernoulli factor of target 0 is 1 at logit -inf; of target 1, 0): the logits of the points below
        the members' minimum, and of every member of an over-cap set, become :data:`SCORING_FLOOR`.
        """
        saved, self._capped_scoring = getattr(self, "_capped_scoring", False), True
        try:
            yield self
        finally:
            self._capped_scoring = saved

    def join_logits(self, z: Tensor, enc: StepEncoding) -> Tensor:
        """The clustering guide's logits; inside :meth:`capped_scoring`, those of the capped sampler."""
        logits = super().join_logits(z, enc)
        if not getattr(self, "_capped_scoring", False) or enc.targets is None:
            return logits
        joins = enc.targets & enc.available
        count, cap = joins.sum(-1), self.join_size_cap(enc) - 1  # (S,)
        lowest = logits.masked_fill(~joins, math.inf).amin(-1, keepdim=True)
        below = (~joins & (logits < lowest) & (count == cap).unsqueeze(-1)) | (joins & (count > cap).unsqueeze(-1))
        return logits.masked_fill(below, SCORING_FLOOR)

    # ------------------------------------------------------------------ sampling hooks
    def select_members(self, anchor: Tensor, joins: Tensor, logits: Tensor, enc: StepEncoding) -> Tensor:
        """The anchor and at most ceil(t_k) of the joiners (the most probable ones), capped at ``max_cluster_size``.

        Rounded up, not to the nearest integer (the NOC paper): t_k regresses the *mean* number of joiners, so a
        cap below it would cut clusters the posterior allows (measured: more clusters than the exact posterior
        at N <= 6 after a short training)."""
        return cap_cluster_size(anchor, joins, logits, self.join_size_cap(enc))

    def order_clusters(self, clusters: FinishedClusters, generator: torch.Generator | None = None,
                       greedy: bool | None = None) -> Tensor:
        """(T, K) the pointer network's order of every thread's clusters, position by position: drawn from its
        softmax (Gumbel-max with ``generator``) or greedy (``greedy=True``; None: greedy unless
        ``sample_order``); each thread's empty slots K_t..K-1 come last."""
        draw = self.sample_order if greedy is None else not greedy
        num_threads, k = clusters.summaries.shape[:2]
        device = clusters.labels.device
        slots = torch.arange(k, device=device)
        members = clusters.labels.unsqueeze(1) == slots.view(1, -1, 1)  # (T, K, N)
        valid = slots < clusters.num_clusters.unsqueeze(-1)
        context, state = self.pointer_context(self.cluster_embeddings(clusters.data, clusters.dataset, members),
                                              valid)
        placed = torch.zeros_like(valid)
        order = torch.empty(num_threads, k, dtype=torch.long, device=device)
        feed = self.order_start.expand(num_threads, 1, -1)
        rows = torch.arange(num_threads, device=device)
        for p in range(k):
            query, state = self.order_decoder(feed, state)
            logits = self.pointer_logits(context, query).squeeze(-2)  # (T, K)
            if draw:
                uniform = torch.rand(logits.shape, generator=generator, device=device, dtype=logits.dtype)
                logits = logits - (-uniform.clamp(min=1e-12).log()).log()
            open_ = valid & ~placed
            pick = logits.masked_fill(~open_, -math.inf).argmax(-1)
            pick = torch.where(open_.any(-1), pick, (~placed).to(torch.int8).argmax(-1))  # empty slots in order
            order[:, p] = pick
            placed[rows, pick] = True
            feed = context[rows, pick].unsqueeze(1)
        return order


def ordered_log_prob_estimate(guide: OrderedHeads, x: Tensor, samples: Tensor, frames: Tensor | None,
                              settings: dict[str, Any], generator: torch.Generator | None,
                              all_frames: bool = False) -> LogProbEstimate:
    """log q of every ordered partition ``samples`` (S, N) (labels = positions) of one data set ``x`` (N, D),
    with its standard error: the density NOC's sampler draws ordered partitions from,

        q(c, sigma | x) = q_cap(c | x) p(sigma | c, x),

    q_cap the clusterwise estimate of the partition under the cardinality cap (:meth:`OrderedHeads.
    capped_scoring`, estimator options ``settings`` as :func:`pyro_acp.inference.log_prob.log_prob_settings`
    gives them) and p(sigma | c, x) the pointer network's exact order probability
    (:meth:`OrderedHeads.order_log_prob_of`); the error is that of the first term. With sampling frames
    Q_1..Q_F (F, D, D) the samples come from the mixture (1 / F) sum_f q(c, sigma | Q_f x): both terms are
    computed in every frame a partition was drawn in and in two of the others, combined without bias
    (:mod:`pyro_acp.inference.frame_strata`; ``all_frames=True`` scores every frame, F times one estimate:
    the reference the stratified form is checked against). One estimate per
    distinct ordered partition; returns (S,) tensors (``orders_enumerated``: all cluster orders of the
    partition summed exactly by the estimator in every frame scored)."""
    from pyro_acp.inference.log_prob import LogProbEstimate, log_prob_estimate  # (it imports the guides)

    unique, inverse = samples.unique(dim=0, return_inverse=True)
    views = x.unsqueeze(0) if frames is None else torch.einsum("nd,fed->fne", x, frames.to(x))  # x_f = x Q_f^T
    drawn = drawn_frames(inverse, unique.shape[0], frames)
    if drawn is not None and all_frames:
        drawn = torch.ones_like(drawn)
    picked = sample_frames_to_score(torch.ones(unique.shape[0], 1, dtype=torch.bool, device=x.device)
                                    if drawn is None else drawn, generator)
    with guide.capped_scoring():
        estimate = log_prob_estimate(guide, x, unique[picked.partition], generator=generator, frames=frames,
                                     sample_frames=None if frames is None else picked.frame, **settings)
    order = torch.stack([guide.order_log_prob_of(view, unique) for view in views])  # (F, U)
    per_pair = estimate.log_prob[0] + order[picked.frame, picked.partition]
    log_prob, error = frame_mixture(per_pair, estimate.standard_error[0], picked)
    partial = torch.zeros(unique.shape[0], dtype=torch.bool, device=x.device).index_fill(
        0, picked.partition[~estimate.orders_enumerated[0]], True)
    return LogProbEstimate(log_prob.to(x.dtype)[inverse], error.to(x.dtype)[inverse], (~partial)[inverse])


class NOC(OrderedHeads, ACP):
    """Neural Ordered Clusters on ACP (anchor-dependent attention at every step): module docstring."""

    variant = "noc"


class NOCS(OrderedHeads, ACPS):
    """Neural Ordered Clusters on ACP-S (one set attention over all points, shared by the steps): the same
    heads and objective as :class:`NOC`; its clustering weights can start from a trained ACP-S
    (:meth:`OrderedHeads.load_clustering`)."""

    variant = "nocs"


for _guide in (NOC, NOCS):
    GUIDES[_guide.__name__] = _guide  # build_guide / load_guide rebuild NOC checkpoints from their cards
