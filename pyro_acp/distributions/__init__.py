"""Partition-valued Pyro distributions: exchangeable Gibbs-type priors over partitions (CRP, Pitman-Yor,
Mixture of Finite Mixtures) with exact EPPFs and Gibbs seating weights in closed form, and the amortized posterior
of one data set (``AmortizedPartition``), which can stand as the guide of a program's partition site."""

from pyro_acp.distributions.amortized import AmortizedPartition
from pyro_acp.distributions.gibbs_type import GibbsPartition, canonical_partition_labels, partition_labels
from pyro_acp.distributions.mfm import MixtureOfFiniteMixtures
from pyro_acp.distributions.pitman_yor import CRP, PitmanYor

__all__ = [
    "AmortizedPartition",
    "CRP",
    "GibbsPartition",
    "MixtureOfFiniteMixtures",
    "PitmanYor",
    "canonical_partition_labels",
    "partition_labels",
]
