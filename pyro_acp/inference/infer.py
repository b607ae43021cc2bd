"""``pyro_acp.infer(model, x)``: posterior samples of a clustering from an amortized guide.

Guide resolution, in order: the ``guide=`` argument (a guide object or a checkpoint path); a pretrained
guide shipped with the package whose recorded model config equals ``model.config()`` and whose data
dimension matches; a guide trained earlier for this exact model in the user cache; else (``train=True``)
a new guide trained on simulations of the model, then cached. A guide trained for another model or data
dimension is never used silently.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pyro_acp.data.partitions import canonicalize
from pyro_acp.diagnostics.importance import weight_diagnostics
from pyro_acp.diagnostics.prior_check import PriorPredictiveWarning, prior_predictive_check
from pyro_acp.guides import ACPS, ClusterwiseGuide
from pyro_acp.inference.frames import frames_for
from pyro_acp.inference.log_prob import AUTO, LogProbEstimate, log_prob_estimate, log_prob_settings
from pyro_acp.inference.sampling import sample_partitions
from pyro_acp.models.graphs import PreparedGraph
from pyro_acp.models.program import as_clustering_model
from pyro_acp.posteriors.graph import infer_graph
from pyro_acp.posteriors.ordered import OrderedClusteringPosterior
from pyro_acp.posteriors.posterior import ClusteringPosterior
from pyro_acp.pretrained.checkpoint import build_guide, load_guide
from pyro_acp.pretrained.registry import (
    check_guide_matches,
    find_guide,
    find_incomplete_guide,
    on_demand_path,
    training_progress,
    warn_if_incomplete,
)
from pyro_acp.protocols import ClusteringModel, exact_log_joint, has_collapsed_likelihood
from pyro_acp.seeding import forked_rng, make_generator
from pyro_acp.validation import check_device, check_positive_int

#: Architecture and schedule of guides trained on demand (sized for a CPU in minutes, not hours).
ON_DEMAND_GUIDE = {"hidden_dim": 64}
ON_DEMAND_TRAINING = {"steps": 3000, "batch_size": 32, "num_particles": 8, "lr": 1e-3}

_UNORDERED_GUIDE = ("{model} orders its clusters, so its posterior needs a guide that learns the order (a pointer "
                    "network, NOC); {guide} only finds the clusters. Pass such a guide with guide=")


def resolve_guide(model: ClusteringModel, guide: ClusterwiseGuide | str | Path | None = None, *, train: bool = True,
                  device: str | torch.device | None = None, seed: int | None = None,
                  progress_bar: bool = True) -> ClusterwiseGuide:
    """The guide ``infer`` will use (see the module docstring for the order).

    A guide object must have been trained for this model (its ``trained_for``, set by ``pyro_acp.train`` and
    ``load_guide``, equals ``model.config()``): one trained for another model raises, and one with no record (a
    fresh, untrained guide) is used with a ``UserWarning``. From the cache only complete guides are served: one
    whose training was interrupted is resumed and finished when ``train`` is True, else a ValueError says so.
    """
    if isinstance(guide, ClusterwiseGuide):
        check_guide_matches(model, guide)
        return guide.to(device or "cpu").eval()
    if guide is not None:
        loaded, card = load_guide(guide, map_location=device or "cpu")
        check_guide_matches(model, loaded, card)
        warn_if_incomplete(guide, card, stacklevel=3)
        return loaded.eval()
    found = find_guide(model)
    if found is not None:
        return load_guide(found, map_location=device or "cpu")[0].eval()
    incomplete = find_incomplete_guide(model)
    if incomplete is not None:
        path, card = incomplete
        done, planned = training_progress(card)
        if not train:
            raise ValueError(
                f"the cached guide for {model!r} at {path} is incomplete ({done} of {planned} training steps: its "
                f"training was interrupted); call infer(..., train=True) to resume and finish it (from step "
                f"{done}), or delete {path} and its .json to start over"
            )
        return train_for_model(model, device=device, progress_bar=progress_bar, resume_card=card).eval()
    if not train:
        raise ValueError(
            f"no pretrained guide matches {model!r}; call infer(..., train=True), pass guide=, or run "
            f"`pyro-acp train` (or pyro_acp.train) for this model first"
        )
    return train_for_model(model, device=device, seed=seed, progress_bar=progress_bar).eval()


def train_for_model(model: ClusteringModel, *, device: str | torch.device | None = None, seed: int | None = None,
                    progress_bar: bool = True, resume: bool = False, resume_card: dict[str, Any] | None = None,
                    **overrides: Any) -> ClusterwiseGuide:
    """Train an on-demand guide for ``model`` (with an up-front time estimate) and cache it.

    The cached checkpoint's card records ``training.completed_steps`` of ``training.steps``; ``resume=True``
    continues an interrupted run from its last checkpoint, with the settings (and seed) its card records, so
    it ends where the uninterrupted run would have (``resume_card``: that card, when the caller has read it).
    The initial weights are drawn from ``seed`` (0 when None).
    """
    from pyro_acp.inference.training import train

    if getattr(model, "ordered", False):
        raise NotImplementedError(_UNORDERED_GUIDE.format(model=type(model).__name__, guide="ACPS (trained on demand)"))

    settings = {**ON_DEMAND_TRAINING, **overrides}
    seed = 0 if seed is None else seed
    path = on_demand_path(model)
    resume = resume or resume_card is not None
    if resume:
        card = resume_card
        if card is None:
            incomplete = find_incomplete_guide(model)
            if incomplete is None:
                raise ValueError(f"no interrupted training of a guide for {model!r} to resume at {path}")
            card = incomplete[1]
        recorded = card["training"]
        for key in ("steps", "batch_size", "num_particles", "lr", "loss", "dreg", "num_points", "clip_norm"):
            if key in recorded:
                settings[key] = recorded[key]
        if settings.get("num_points") is not None:
            settings["num_points"] = tuple(settings["num_points"])
        seed = recorded.get("seed", seed)
        guide = build_guide(card["guide"])
        done, planned = recorded["completed_steps"], settings["steps"]
        per_step = (recorded.get("wall_time_s") or 0.0) / max(1, done)
        print(f"pyro_acp: resuming the interrupted training of the cached guide for {model!r} ({done} of {planned} "
              f"steps done, about {per_step * (planned - done) / 60:.0f} min left), at {path}")
    else:
        timing = {key: settings[key] for key in ("batch_size", "num_particles", "num_points") if key in settings}
        with forked_rng(seed):
            guide = ACPS(model.data_dim, **ON_DEMAND_GUIDE)
        began = time.perf_counter()
        train(model, guide, steps=3, device=device, seed=0, progress_bar=False, validate_every=0, **timing)
        per_step = (time.perf_counter() - began) / 3
        print(f"pyro_acp: no guide for {model!r} yet; training one ({settings['steps']} steps, "
              f"about {per_step * settings['steps'] / 60:.0f} min on this machine), cached at {path}")
        with forked_rng(seed):
            guide = ACPS(model.data_dim, **ON_DEMAND_GUIDE)
    train(model, guide, device=device, seed=seed, checkpoint=path, checkpoint_every=max(1, settings["steps"] // 10),
          progress_bar=progress_bar, resume=resume, **settings)
    return guide


def _estimate_log_q(guide: ClusterwiseGuide, x: Tensor, samples: Tensor, frames: Tensor | None,
                    settings: dict[str, Any], generator: torch.Generator) -> LogProbEstimate:
    """log q of every sample (S,) with its standard error, one estimate per distinct partition.

    q is the density the samples were drawn from: with frames, the mixture q_F(c) = (1 / F) sum_f q(c | Q_f x)
    over the F sampling frames, estimated frame by frame (:mod:`pyro_acp.inference.log_prob`). As an
    importance proposal, this marginal q_F gives weights p(c, x) / q_F(c) with less variance than per-frame
    weights p(c, x) / q(c | Q x) (the frame integrated out), one estimate per distinct partition.
    """
    unique, inverse = samples.unique(dim=0, return_inverse=True)
    estimate = log_prob_estimate(guide, x, unique, generator=generator, frames=frames, **settings)
    return LogProbEstimate(estimate.log_prob[0][inverse], estimate.standard_error[0][inverse],
                           estimate.orders_enumerated[0][inverse])


def infer(
    model: ClusteringModel,
    x: Any,
    *,
    num_samples: int = 100,
    guide: ClusterwiseGuide | str | Path | None = None,
    train: bool = True,
    device: str | torch.device | None = None,
    seed: int | None = None,
    sample_z: bool = True,
    sample_joins: bool = True,
    num_anchors: int | None | str = AUTO,
    num_z: int | str = AUTO,
    num_orders: int | str = AUTO,
    reweight: bool = False,
    symmetrize: bool | None = None,
    estimate_log_prob: bool = True,
    check_prior: bool = True,
    progress_bar: bool = True,
    labelled: dict[Any, Any] | None = None,
    new_clusters: bool = True,
) -> ClusteringPosterior:
    """Posterior samples of the partition of ``x`` under ``model``.

    For an ordered model (``model.ordered``) the guide must learn an order (``guide.orders_clusters``): the
    result is an :class:`~pyro_acp.posteriors.OrderedClusteringPosterior` whose labels are the clusters'
    positions (0 = first), with ``log_prob`` None until the guide estimates the order's probability too.

    Args:
        model: a generative model from :mod:`pyro_acp.models` (a :class:`~pyro_acp.protocols.ClusteringModel`).
        x: one data set, (N, D) array or tensor; for a graph model (``data_kind == "graph"``) a networkx
            graph, a scipy sparse matrix or a dense (N, N) adjacency, and the result is a
            :class:`~pyro_acp.posteriors.GraphClusteringPosterior` readable by node
            (:mod:`pyro_acp.posteriors.graph`).
        num_samples: number of partitions drawn (in parallel).
        guide: a trained guide or a checkpoint path; by default a matching pretrained or cached one.
        train: train (and cache) a guide when none matches; with False, raise instead.
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
            (self-normalised; needs a model with an exact log joint). Repairs the guide where it is off on
            small data sets; check ``posterior.effective_sample_size`` and ``posterior.weight_diagnostics``
            (ESS and Pareto k), which collapse on large ones. Beyond N = 12 the estimates of q are then more
            precise than by default (``pyro_acp.inference.log_prob.REWEIGHT_SETTINGS``: at least 10 anchors
            per cluster, 8 z draws and an order budget of 16).
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
        estimate_log_prob: False skips the guide's log-probability estimates (``posterior.log_prob`` is
            then None): the samples, co-clustering, K and the MAP (by the exact log joint) do not need them,
            and at N = 1,000 they are most of the cost.
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
    x = model.check_data(x)
    if model.num_points_of(x) < 2:
        raise ValueError(f"data has {model.num_points_of(x)} point(s); clustering needs at least 2")
    ordered = bool(getattr(model, "ordered", False))
    if reweight and not estimate_log_prob:
        raise ValueError("reweight=True needs the log-probability estimates; drop estimate_log_prob=False")
    if reweight and not has_collapsed_likelihood(model):
        raise ValueError(f"reweight=True needs a model with an exact log joint p(partition, x); "
                         f"{type(model).__name__} has none")
    if check_prior:
        check = prior_predictive_check(model, x)
        if check is not None and check.outside:
            warnings.warn(check.message(model), PriorPredictiveWarning, stacklevel=2)
    guide = resolve_guide(model, guide, train=train, device=device, seed=seed, progress_bar=progress_bar)
    if ordered and not guide.orders_clusters:
        raise NotImplementedError(_UNORDERED_GUIDE.format(model=type(model).__name__, guide=type(guide).__name__))
    device = next(guide.parameters()).device
    generator = make_generator(seed, device)
    x = x.to(device=device, dtype=torch.get_default_dtype())
    began = time.perf_counter()
    num_points = x.shape[0]
    frames = frames_for(model, num_points, num_samples, generator, device, symmetrize)
    labels = sample_partitions(guide, x, num_samples, sample_z=sample_z, sample_joins=sample_joins,
                               generator=generator, frames=frames, ordered=ordered)[0]
    samples = labels if ordered else canonicalize(labels)  # ordered: labels are positions, already canonical
    estimate = None
    if estimate_log_prob and not ordered:  # the estimate is of the partition alone: an order needs its own term
        settings = log_prob_settings(num_points, reweight=reweight, num_anchors=num_anchors, num_z=num_z,
                                     num_orders=num_orders)
        estimate = _estimate_log_q(guide, x, samples, frames, settings, generator)
    log_joint = exact_log_joint(model, x, samples)
    weights = diagnostics = None
    if reweight:
        weights = importance_weights(log_joint, estimate.log_prob)
        diagnostics = weight_diagnostics(log_joint - estimate.log_prob)  # warns when the weights have collapsed
    wall_time = time.perf_counter() - began
    posterior_type = OrderedClusteringPosterior if ordered else ClusteringPosterior
    return posterior_type(
        samples.cpu(), log_prob=None if estimate is None else estimate.log_prob.cpu(),
        log_prob_error=None if estimate is None else estimate.standard_error.cpu(),
        weights=None if weights is None else weights.cpu(), weight_diagnostics=diagnostics,
        method="acp+is" if reweight else "acp", wall_time=wall_time, x=x.cpu(), model=model,
        log_joint=None if log_joint is None else log_joint.cpu(),
    )


def importance_weights(log_joint: Tensor, log_proposal: Tensor) -> Tensor:
    """Self-normalised weights p(c, x) / q(c) (float64, summing to one) of samples drawn from q."""
    log_w = log_joint.double() - log_proposal.double()
    return torch.softmax(log_w, 0)
