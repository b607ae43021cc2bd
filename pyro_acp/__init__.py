"""pyro_acp: fast amortized Bayesian clustering with Attentive Clustering Processes, on Pyro.

The data flow: a generative model (:mod:`pyro_acp.models`) -> simulated batches (:mod:`pyro_acp.data`)
-> a guide (:mod:`pyro_acp.guides`) -> training (:func:`train`) -> posterior samples (:func:`infer`)
-> checks against exact enumeration and MCMC (:func:`exact_posterior`, :mod:`pyro_acp.mcmc`, :func:`compare`).
"""

from pyro_acp import mcmc
from pyro_acp.diagnostics import metrics
from pyro_acp.diagnostics.calibration import sbc
from pyro_acp.diagnostics.compare import compare
from pyro_acp.diagnostics.evaluation import heldout_ami
from pyro_acp.distributions import CRP, MixtureOfFiniteMixtures, PitmanYor
from pyro_acp.inference.infer import infer
from pyro_acp.inference.training import train
from pyro_acp.posteriors.posterior import ClusteringPosterior, ExactPosterior
from pyro_acp.pretrained.checkpoint import load_guide
from pyro_acp.reference.exact import exact_posterior

load = load_guide

__version__ = "0.1.0"

__all__ = [
    "CRP", "PitmanYor", "MixtureOfFiniteMixtures", "ClusteringPosterior", "ExactPosterior",
    "infer", "train", "load", "load_guide", "exact_posterior", "compare", "sbc", "heldout_ami",
    "mcmc", "metrics",
]
