"""Partition-valued Pyro distributions: exchangeable Gibbs-type priors over partitions (CRP, Pitman-Yor,
Mixture of Finite Mixtures) with exact EPPFs and Gibbs seating weights in closed form."""

from pyro_acp.distributions.gibbs_type import (
    CRP,
    GibbsPartition,
    MixtureOfFiniteMixtures,
    PitmanYor,
    canonical_partition_labels,
    partition_labels,
)

__all__ = [
    "CRP",
    "GibbsPartition",
    "MixtureOfFiniteMixtures",
    "PitmanYor",
    "canonical_partition_labels",
    "partition_labels",
]
