"""Posterior distributions over partitions (the object every inference method returns), decision-theoretic
point estimates and plots."""

from pyro_acp.posteriors.posterior import ClusteringPosterior, ExactPosterior, PosteriorSummary

__all__ = ["ClusteringPosterior", "ExactPosterior", "PosteriorSummary"]
