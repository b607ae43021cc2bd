"""``pyro_acp.infer(model, x)``: posterior samples of a clustering from an amortized guide.

Which guide is used (the ``guide=`` argument, a shipped one, a cached one, or one trained on demand) is
decided in :mod:`pyro_acp.inference.on_demand`; a guide trained for another model is never used silently.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pyro_acp.data.partitions import canonicalize
from pyro_acp.diagnostics.importance import weight_diagnostics
from pyro_acp.diagnostics.prior_check import PriorPredictiveWarning, prior_predictive_check
from pyro_acp.diagnostics.stationarity import (
    StationarityWarning,
    check_stationarity,
    stationarity_applies,
    warn_if_impossible,
)
from pyro_acp.guides import ClusterwiseGuide
from pyro_acp.guides.noc import ordered_log_prob_estimate
from pyro_acp.inference.frames import drawn_frames, frames_for
from pyro_acp.inference.log_prob import AUTO, LogProbEstimate, log_prob_estimate, log_prob_settings
from pyro_acp.inference.on_demand import (  # noqa: F401  (re-exported: the names infer is known by)
    _UNORDERED_GUIDE,
    ON_DEMAND_GUIDE,
    ON_DEMAND_TRAINING,
    resolve_guide,
    train_for_model,
)
from pyro_acp.inference.reweighting import check_reweight_option, invariant_log_joint
from pyro_acp.inference.sampling import sample_partitions
from pyro_acp.models.graphs import PreparedGraph
from pyro_acp.models.program import as_clustering_model
from pyro_acp.posteriors.deferred import DeferredLogProb, defer_estimate
from pyro_acp.posteriors.graph import infer_graph
from pyro_acp.posteriors.ordered import OrderedClusteringPosterior
from pyro_acp.posteriors.posterior import ClusteringPosterior
from pyro_acp.protocols import ClusteringModel, exact_log_joint, has_exact_log_joint, has_invariant_likelihood
from pyro_acp.seeding import make_generator
from pyro_acp.user_warnings import warn_user
from pyro_acp.validation import check_device, check_positive_int, warn_about_data

#: ``estimate_log_prob=True``: the estimate is made on the first read of ``posterior.log_prob``
DEFERRED = "deferred"


def _estimate_log_q(guide: ClusterwiseGuide, x: Tensor, samples: Tensor, frames: Tensor | None,
                    settings: dict[str, Any], generator: torch.Generator,
                    weighed_by: ClusteringModel | None = None) -> LogProbEstimate:
    """log q of every sample (S,) with its standard error, one estimate per distinct partition.

    q is the density the samples were drawn from: with frames, the mixture q_F(c) = (1 / F) sum_f q(c | Q_f x)
    over the F sampling frames, stratified by the frames each partition was drawn in
    (:mod:`pyro_acp.inference.log_prob`). As an importance proposal, this marginal q_F gives weights
    p(c, x) / q_F(c) with less variance than per-frame weights p(c, x) / q(c | Q x) (the frame integrated out).
    ``weighed_by``: the model whose exact log joint the samples will be weighted by; the estimates are then
    refined where the weights need it (:func:`refine_target`).
    """
    unique, inverse = samples.unique(dim=0, return_inverse=True)
    target = None if weighed_by is None else refine_target(weighed_by, x, unique, inverse)
    estimate = log_prob_estimate(guide, x, unique, generator=generator, frames=frames,
                                 drawn_frames=drawn_frames(inverse, unique.shape[0], frames), refine_target=target,
                                 **settings)
    return per_sample(estimate, inverse)


def refine_target(model: ClusteringModel, x: Tensor, unique: Tensor, inverse: Tensor) -> Tensor:
    """log(count) + log p(c, x) of each distinct partition c (U, N) of ``x`` (``inverse`` (S,): each sample's
    distinct partition): the numerators of the importance weights p(c, x) / q(c) summed over its samples, which
    tell the log q estimator which partitions carry weight
    (:func:`pyro_acp.inference.log_prob.refinement_choice`)."""
    counts = torch.bincount(inverse, minlength=unique.shape[0]).to(x.dtype)
    return counts.log() + exact_log_joint(model, x, unique).to(x)


def estimates_orders(guide: ClusterwiseGuide) -> bool:
    """Whether an order-learning guide can also score an order (a pointer network's ``order_log_prob_of``): then
    an ordered posterior's ``log_prob`` is log q of the clustering and its order
    (:func:`pyro_acp.guides.noc.ordered_log_prob_estimate`); else it stays None."""
    return callable(getattr(guide, "order_log_prob_of", None))


def per_sample(estimate: LogProbEstimate, inverse: Tensor) -> LogProbEstimate:
    """Estimates (1, U) of the distinct partitions read back for every sample (S,) (``inverse`` (S,): each
    sample's distinct partition, from ``samples.unique(dim=0, return_inverse=True)``)."""
    return LogProbEstimate(estimate.log_prob[0][inverse], estimate.standard_error[0][inverse],
                           estimate.orders_enumerated[0][inverse])


def check_options(model: ClusteringModel, *, reweight: bool | str, estimate_log_prob: bool | str) -> bool | str:
    """The option checks :func:`infer` and ``infer_many`` share (before any work); returns ``estimate_log_prob``
    as :func:`infer` acts on it: False, ``"now"`` or :data:`DEFERRED` (True; ``"now"`` when reweighting)."""
    if estimate_log_prob not in (True, False, "now"):
        raise ValueError(f"estimate_log_prob must be True (estimated on first read), 'now' or False, "
                         f"got {estimate_log_prob!r}")
    reweight = check_reweight_option(reweight)
    if reweight and not estimate_log_prob:
        raise ValueError(f"reweight={reweight!r} needs the log-probability estimates; drop estimate_log_prob=False")
    if reweight == "invariant" and not has_invariant_likelihood(model):
        raise ValueError(f"reweight='invariant' needs a model of standardised data that declares "
                         f"invariant_log_likelihood and check_invariant_data (e.g. NIWGaussianMixture); "
                         f"{type(model).__name__} does not")
    if reweight is True and not has_exact_log_joint(model):
        raise ValueError(f"reweight=True needs a model with an exact log joint p(partition, x); "
                         f"{type(model).__name__} has none")
    if not estimate_log_prob:
        return False
    return "now" if reweight or estimate_log_prob == "now" else DEFERRED


def check_reweight(model: ClusteringModel, x: Tensor, reweight: bool | str = True) -> None:
    """ValueError unless the model can weigh samples of validated data ``x`` as ``reweight`` asks: the exact log
    joint of ``reweight=True`` (an ordered catalog's only up to its size cap), or the invariant likelihood (any
    size; not with a constant column)."""
    if reweight == "invariant":
        model.check_invariant_data(x)
        return
    num_points = model.num_points_of(x)
    if not has_exact_log_joint(model, num_points):
        raise ValueError(f"reweight=True needs the exact log joint, which {type(model).__name__} does not give for "
                         f"a data set of {num_points} points")


def check_reweight_guide(guide: ClusterwiseGuide, ordered: bool) -> None:
    """ValueError unless the guide gives the log q that reweighting needs: for an ordered model, of the order too."""
    if ordered and not estimates_orders(guide):
        raise ValueError("reweight=True needs the guide's log q of every sample; this guide does not score orders "
                         "(no order_log_prob_of)")


def check_guide_orders(model: ClusteringModel, guide: ClusterwiseGuide) -> bool:
    """Whether ``model`` is ordered; NotImplementedError when it is and ``guide`` does not learn an order."""
    ordered = bool(getattr(model, "ordered", False))
    if ordered and not guide.orders_clusters:
        raise NotImplementedError(_UNORDERED_GUIDE.format(model=type(model).__name__, guide=type(guide).__name__))
    return ordered


def posterior_of_samples(model: ClusteringModel, x: Tensor, labels: Tensor,
                         estimate: LogProbEstimate | DeferredLogProb | None, *,
                         ordered: bool, reweight: bool | str, wall_time: float,
                         generator: torch.Generator | None = None, check_samples: bool = False
                         ) -> ClusteringPosterior:
    """What :func:`infer` (and ``infer_many``, per data set) makes of sampled labels (S, N): canonical samples
    (ordered: the labels are positions, already canonical), the exact log joint where the model has one,
    self-normalised importance weights p(c, x) / q(c) and their diagnostics when reweighting (``estimate``:
    the guide's log q of every sample, made already (needed when reweighting) or deferred to its first read;
    or None), everything moved to the CPU. With ``reweight="invariant"`` the log joint is the invariant one,
    estimated from ``generator``'s stream (:mod:`pyro_acp.inference.reweighting`): the weights and the MAP then
    target the posterior of data drawn and then standardised. Unweighted samples of zero probability under the
    model (outside its declared support, or log p(c, x) = -inf for unordered models) are warned about
    (:class:`~pyro_acp.diagnostics.stationarity.ZeroProbabilityWarning`). ``check_samples``: the stationarity
    check of the raw samples where it applies (unweighted, unordered: :func:`check_samples_are_stationary`)."""
    samples = labels if ordered else canonicalize(labels)
    if reweight == "invariant":
        log_joint, _ = invariant_log_joint(model, x, samples, estimate.log_prob, generator)
    else:
        log_joint = exact_log_joint(model, x, samples)
    weights = diagnostics = None
    if reweight:
        weights = importance_weights(log_joint, estimate.log_prob)
        diagnostics = weight_diagnostics(log_joint - estimate.log_prob)  # warns when the weights have collapsed
    if isinstance(estimate, LogProbEstimate):
        scores = {"log_prob": estimate.log_prob.cpu(), "log_prob_error": estimate.standard_error.cpu()}
    else:
        scores = {"log_prob": estimate}
    posterior_type = OrderedClusteringPosterior if ordered else ClusteringPosterior
    posterior = posterior_type(
        samples.cpu(), **scores,
        weights=None if weights is None else weights.cpu(), weight_diagnostics=diagnostics,
        method={True: "acp+is", "invariant": "acp+is-invariant"}.get(reweight, "acp"), wall_time=wall_time,
        x=x.cpu(), model=model,
        log_joint=None if log_joint is None else log_joint.cpu(),
    )
    if not reweight:  # weights give impossible samples weight 0
        warn_if_impossible(posterior)
        if check_samples and not ordered:
            check_samples_are_stationary(model, posterior)
    return posterior


def check_samples_are_stationary(model: ClusteringModel, posterior: ClusteringPosterior) -> None:
    """Set ``posterior.stationarity`` to the check of its samples by a collapsed Gibbs sweep under what they were
    conditioned on (``posterior.conditioning()``), where the model allows it
    (:func:`~pyro_acp.diagnostics.stationarity.stationarity_applies`), and warn
    (:class:`~pyro_acp.diagnostics.stationarity.StationarityWarning`) when they fail it."""
    if not stationarity_applies(model, posterior.num_points):
        return
    check = check_stationarity(model, posterior.x, posterior.samples, log_joint=posterior.log_joint,
                               **posterior.conditioning())
    if check.num_samples == 0:  # every sample impossible: warn_if_impossible has said so
        return
    posterior.stationarity = check
    if not posterior.stationarity.passes:
        warn_user(posterior.stationarity.message(model), StationarityWarning)


def infer(
    model: ClusteringModel,
    x: Any,
    *,
    num_samples: int = 100,
    guide: ClusterwiseGuide | str | Path | None = None,
    train: bool = True,
    train_minutes: float | None = None,
    device: str | torch.device | None = None,
    seed: int | None = None,
    sample_z: bool = True,
    sample_joins: bool = True,
    num_anchors: int | None | str = AUTO,
    num_z: int | str = AUTO,
    num_orders: int | str = AUTO,
    reweight: bool | str = False,
    symmetrize: bool | None = None,
    estimate_log_prob: bool | str = True,
    check_prior: bool = True,
    check_samples: bool = True,
    progress_bar: bool = True,
    labelled: dict[Any, Any] | None = None,
    new_clusters: bool = True,
) -> ClusteringPosterior:
    """Posterior samples of the partition of ``x`` under ``model``.

    For an ordered model (``model.ordered``) the guide must learn an order (``guide.orders_clusters``): the
    result is an :class:`~pyro_acp.posteriors.OrderedClusteringPosterior` whose labels are the clusters'
    positions (0 = first), with ``log_prob`` the estimate of log q(clustering, order) when the guide scores
    orders (NOC's pointer network), else None.

    Args:
        model: a generative model from :mod:`pyro_acp.models` (a :class:`~pyro_acp.protocols.ClusteringModel`).
        x: one data set, (N, D) array or tensor; for a graph model (``data_kind == "graph"``) a networkx
            graph, a scipy sparse matrix or a dense (N, N) adjacency, and the result is a
            :class:`~pyro_acp.posteriors.GraphClusteringPosterior` readable by node
            (:mod:`pyro_acp.posteriors.graph`).
        num_samples: number of partitions drawn (in parallel).
        guide: a trained guide or a checkpoint path; by default a matching pretrained or cached one.
        train: train (and cache) a guide when none matches; with False, raise instead.
        train_minutes: a wall-clock budget for that training (its schedule is planned for the steps that fit,
            measured first; :func:`pyro_acp.inference.on_demand.train_for_model`); None: the default schedule.
        seed: an integer makes the call reproducible and leaves torch's global RNG as it was; None draws a
            fresh seed from the global RNG.
        sample_z, sample_joins: draw z from the learned prior / joins by Bernoulli (True), or use the
            prior mean / threshold 0.5 (False: fewer distinct samples, closer to a MAP search).
        num_anchors, num_z, num_orders: the log-probability estimator (:mod:`pyro_acp.inference.log_prob`):
            anchors per cluster (None: all), z draws per anchor, and the cluster-order budget (all orders are
            summed exactly when 2^(K-1) fits in it, else that many random orders are averaged). "auto" picks
            by N (``pyro_acp.inference.log_prob.LOG_PROB_SETTINGS``: exact anchors and orders for small data
            sets, cheaper estimates as N grows). ``posterior.log_prob_error`` holds each estimate's standard
            error in nats, and ``summary()`` says when the MAP's probability is not reliable. The MAP is
            ranked by the exact log joint when the model has one, so it does not depend on these.
        reweight: use the guide as an importance proposal: weight each sample by p(partition, x) / q(partition)
            (self-normalised; needs a model with an exact log joint: a collapsed likelihood, or for an
            ordered catalog ``log_ordered_joint``, up to its size cap). Repairs the guide where it is off on
            small data sets; check ``posterior.effective_sample_size`` and ``posterior.weight_diagnostics``
            (ESS and Pareto k), which collapse on large ones. Beyond N = 12 the estimates of q are then more
            precise than by default (``pyro_acp.inference.log_prob.REWEIGHT_SETTINGS``: at least 10 anchors
            per cluster, 8 z draws and an order budget of 16), and at any N the estimates noisier than 0.25 nats
            that carry weight are made again with 8x the z draws (``log_prob.refinement_choice``).
            ``"invariant"``, for a model of standardised data (``NIWGaussianMixture``): weight by p(partition)
            L(partition | z), the likelihood integrated over each column's location and scale - the posterior of data
            drawn and then standardised, which the guides are trained for and which is calibrated on small tables where
            the plain one over-counts clusters (:mod:`pyro_acp.inference.reweighting`; method "acp+is-invariant";
            ``log_joint`` and the MAP are then that posterior's, estimated with 8,192 fitting and 8,192 final
            importance draws, and ``refined_map`` is refused; about 2-15 s at N = 7). A constant column is refused up
            front.
        symmetrize: for models whose posterior is unchanged by rotating the data (the isotropic Gaussian
            mixtures; default None: whenever the model says so), draw the samples in up to 16 random
            rotated / reflected frames of the data, sample s in frame s % F, within a budget of 4,096 encoded
            points (16 frames up to N = 256, 4 at N = 1,000; :mod:`pyro_acp.inference.frames`). This removes
            the network's orientation bias (gained on close clusters; level on typical data). False: data as
            given.
            ``log_prob`` (and the importance weights of ``reweight``) then estimate the density of that
            mixture over the frames, summing over the frames.
        check_prior: compare summary statistics of ``x`` with data sets simulated from the model (its prior
            predictive, which is all the guide was trained on) and warn (:class:`PriorPredictiveWarning`) when
            the data lie beyond them (:mod:`pyro_acp.diagnostics.prior_check`; about 40 ms at N = 200 on first
            use, cached per model and N). With ``reweight``, collapsed weights (low effective sample size or
            a large Pareto k) always warn (:class:`~pyro_acp.diagnostics.importance.ImportanceWeightWarning`).
        check_samples: for a model with collapsed Gibbs statistics (points or graphs), start one symmetric Gibbs
            sweep at 16-32 of the samples and warn (:class:`~pyro_acp.diagnostics.stationarity.StationarityWarning`)
            when it moves their log p(c, x) systematically: from posterior samples the change is zero on average
            and symmetric, from a guide that is off it is not (``posterior.stationarity``, the summary's last
            line; :mod:`pyro_acp.diagnostics.stationarity`). Not made with ``reweight`` (the weights have their
            own checks) or for ordered models; one to a few times the sampling (the NIW sweep grows with the
            samples checked). The cure: ``pyro_acp.mcmc.gibbs(model, x, init=posterior, ...)``.
        estimate_log_prob: False skips the guide's log-probability estimates (``posterior.log_prob`` is
            then None). With True (default) they are made on the first read of ``posterior.log_prob`` (or of
            what reads it: ``log_prob_error``, ``summary()``, ``to_arviz()``, pickling, and the MAP of a
            model without an exact log joint), from the random stream they would have had here, so the
            numbers do not depend on when they are read; ``"now"`` (and ``reweight``) makes them in the call.
            The samples, co-clustering, K and the MAP by the exact log joint do not need them, and they cost
            many times the sampling (seconds at N = 100). ``posterior.wall_time`` counts the sampling, and
            the estimate when made in the call; ``posterior.log_prob_seconds`` a deferred estimate once
            made. A deferred estimate needs the guide as it sampled: after further training, new weights
            or a move to another device (a later ``infer(..., device=...)`` with the same guide object moves
            it) reading ``log_prob`` raises :class:`~pyro_acp.posteriors.deferred.GuideChangedError`
            (``summary()`` warns and leaves the MAP's probability out); use ``"now"`` when you will change
            the guide. Until read, it holds the data, the samples and the frames on the guide's device.
        labelled: graph models: {node: label} of nodes whose community is known; they anchor the clusters
            of their labels (in a random order per sample) and the other nodes are clustered around them.
        new_clusters: with ``labelled``, whether nodes may also form clusters that hold no labelled node.
    """
    model = as_clustering_model(model, x)  # a plain Pyro program becomes a model (pyro_acp.models.program)
    if getattr(model, "data_kind", "vector") == "graph" and not isinstance(x, PreparedGraph):
        options = {key: value for key, value in locals().items() if key not in ("model", "x")}
        return infer_graph(infer, model, x, **options)
    if labelled is not None:
        raise ValueError(f"labelled= is for graph models; {type(model).__name__} is not one")
    num_samples = check_positive_int(num_samples, "num_samples")
    device = check_device(device)  # before any work: a missing CUDA is a one-line error, not a load failure
    estimate_log_prob = check_options(model, reweight=reweight, estimate_log_prob=estimate_log_prob)
    reweight = check_reweight_option(reweight)
    x = model.check_data(x)
    num_points = model.num_points_of(x)
    if num_points < 2:
        raise ValueError(f"data has {num_points} point(s); clustering needs at least 2")
    if reweight:
        check_reweight(model, x, reweight)
    if reweight != "invariant":  # a model's data warnings are about its plain posterior, which this one replaces
        warn_about_data(model, x)
    if check_prior:
        check = prior_predictive_check(model, x)
        if check is not None and check.outside:
            warn_user(check.message(model), PriorPredictiveWarning)
    guide = resolve_guide(model, guide, train=train, device=device, seed=seed, progress_bar=progress_bar,
                          train_minutes=train_minutes, num_points=num_points)
    ordered = check_guide_orders(model, guide)
    if reweight:
        check_reweight_guide(guide, ordered)
    device = next(guide.parameters()).device
    generator = make_generator(seed, device)
    x = x.to(device=device, dtype=torch.get_default_dtype())
    began = time.perf_counter()
    frames = frames_for(model, num_points, num_samples, generator, device, symmetrize)
    labels = sample_partitions(guide, x, num_samples, sample_z=sample_z, sample_joins=sample_joins,
                               generator=generator, frames=frames, ordered=ordered)[0]
    estimate = None
    if estimate_log_prob and (not ordered or estimates_orders(guide)):
        settings = log_prob_settings(num_points, reweight=reweight, num_anchors=num_anchors, num_z=num_z,
                                     num_orders=num_orders)

        kept = x.clone() if estimate_log_prob == DEFERRED else x  # x may be the caller's tensor, changed later

        def estimate_with(stream: torch.Generator) -> LogProbEstimate:
            return (ordered_log_prob_estimate(guide, kept, labels, frames, settings, stream) if ordered
                    else _estimate_log_q(guide, kept, canonicalize(labels), frames, settings, stream,
                                         weighed_by=model if reweight is True else None))

        # estimated on first read (posteriors/deferred.py), or now: asked for, or for the importance weights
        estimate = (defer_estimate(guide, lambda stream: estimate_with(stream).pair(), generator)
                    if estimate_log_prob == DEFERRED else estimate_with(generator))
    return posterior_of_samples(model, x, labels, estimate, ordered=ordered, reweight=reweight,
                                wall_time=time.perf_counter() - began, generator=generator,
                                check_samples=check_samples)


def importance_weights(log_joint: Tensor, log_proposal: Tensor) -> Tensor:
    """Self-normalised weights p(c, x) / q(c) (float64, summing to one) of samples drawn from q."""
    log_w = log_joint.double() - log_proposal.double()
    return torch.softmax(log_w, 0)
