"""pyro_acp: fast amortized Bayesian clustering with Attentive Clustering Processes, on Pyro.

The data flow: a generative model (:mod:`pyro_acp.models`) -> simulated batches (:mod:`pyro_acp.data`)
-> a guide (:mod:`pyro_acp.guides`) -> training (:func:`train`) -> posterior samples (:func:`infer`)
-> checks against exact enumeration and MCMC (:func:`exact_posterior`, :mod:`pyro_acp.mcmc`, :func:`compare`).

The public names below are imported on first use (PEP 562), so ``import pyro_acp`` and the command line
start without loading what a given job does not need (scikit-learn, SciPy's stats, ArviZ, matplotlib).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> (module, attribute in it; None for the module itself)
_PUBLIC: dict[str, tuple[str, str | None]] = {
    "CRP": ("pyro_acp.distributions", "CRP"),
    "PitmanYor": ("pyro_acp.distributions", "PitmanYor"),
    "MixtureOfFiniteMixtures": ("pyro_acp.distributions", "MixtureOfFiniteMixtures"),
    "ClusteringPosterior": ("pyro_acp.posteriors.posterior", "ClusteringPosterior"),
    "ExactPosterior": ("pyro_acp.posteriors.enumerated", "ExactPosterior"),
    "infer": ("pyro_acp.inference.infer", "infer"),
    "infer_many": ("pyro_acp.inference.many", "infer_many"),
    "train": ("pyro_acp.inference.training", "train"),
    "load": ("pyro_acp.pretrained.checkpoint", "load_guide"),
    "load_guide": ("pyro_acp.pretrained.checkpoint", "load_guide"),
    "exact_posterior": ("pyro_acp.reference.exact", "exact_posterior"),
    "exact_ordered_posterior": ("pyro_acp.reference.exact_ordered", "exact_ordered_posterior"),
    "compare": ("pyro_acp.diagnostics.compare", "compare"),
    "sbc": ("pyro_acp.diagnostics.calibration", "sbc"),
    "heldout_ami": ("pyro_acp.diagnostics.evaluation", "heldout_ami"),
    "mcmc": ("pyro_acp.mcmc", None),
    "metrics": ("pyro_acp.diagnostics.metrics", None),
}

__all__ = [  # the keys of _PUBLIC (tests/test_imports.py checks it), spelt out for linters and IDEs
    "CRP", "ClusteringPosterior", "ExactPosterior", "MixtureOfFiniteMixtures", "PitmanYor", "compare",
    "exact_ordered_posterior", "exact_posterior", "heldout_ami", "infer", "infer_many", "load", "load_guide",
    "mcmc", "metrics", "sbc", "train",
]


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'pyro_acp' has no attribute {name!r}")
    module_name, attribute = _PUBLIC[name]
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from pyro_acp import mcmc
    from pyro_acp.diagnostics import metrics
    from pyro_acp.diagnostics.calibration import sbc
    from pyro_acp.diagnostics.compare import compare
    from pyro_acp.diagnostics.evaluation import heldout_ami
    from pyro_acp.distributions import CRP, MixtureOfFiniteMixtures, PitmanYor
    from pyro_acp.inference.infer import infer
    from pyro_acp.inference.many import infer_many
    from pyro_acp.inference.training import train
    from pyro_acp.posteriors.enumerated import ExactPosterior
    from pyro_acp.posteriors.posterior import ClusteringPosterior
    from pyro_acp.pretrained.checkpoint import load_guide
    from pyro_acp.pretrained.checkpoint import load_guide as load
    from pyro_acp.reference.exact import exact_posterior
    from pyro_acp.reference.exact_ordered import exact_ordered_posterior
