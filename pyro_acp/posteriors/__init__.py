"""Posterior distributions over partitions (the object every inference method returns), ordered partitions,
decision-theoretic point estimates and plots."""

from pyro_acp.posteriors.deferred import GuideChangedError
from pyro_acp.posteriors.enumerated import ExactPosterior
from pyro_acp.posteriors.graph import GraphClusteringPosterior
from pyro_acp.posteriors.ordered import OrderedClusteringPosterior, OrderedExactPosterior
from pyro_acp.posteriors.posterior import ClusteringPosterior, PosteriorSummary

__all__ = [
    "ClusteringPosterior",
    "ExactPosterior",
    "GraphClusteringPosterior",
    "GuideChangedError",
    "OrderedClusteringPosterior",
    "OrderedExactPosterior",
    "PosteriorSummary",
]
