"""Generative models as Pyro programs, with fast batched simulators (installed as ``pyro_acp.models``).

Every model has ``model(num_points=N, obs=None)`` (sites "labels" and "x"), ``simulate(batch_size,
num_points=(lo, hi), seed=None, device=None) -> Batch``, ``config()``, ``check_data(x)`` and the attributes
``data_kind``, ``ordered``, ``data_dim``; conjugate ones add ``log_marginal_likelihood``, ``log_joint`` and
``log_predictive`` (see :mod:`pyro_acp.models.conjugate`).
"""

from .base import GenerativeModel, model_from_config, registered_models
from .block_priors import BalancedPartition, SizedBlocksPartition
from .catalogs import CatalogGrammar, OrderedGaussianCatalog, ProceduralCatalog, load_rules
from .graphs import (
    PreparedGraph,
    SymmetricAdjacency,
    as_adjacency,
    check_adjacency,
    from_networkx,
    laplacian_positional_encoding,
    to_networkx,
)
from .labelled import LabelledDatasets
from .mixtures import CRPGaussianMixture, GaussianMixture, MFMGaussianMixture, PitmanYorGaussianMixture
from .niw import NIWGaussianMixture
from .program import ProgramModel, as_clustering_model
from .sbm import SBM, GraphModel, LogDegreeSBM, PlantedPartition

__all__ = [
    "BalancedPartition",
    "CRPGaussianMixture",
    "CatalogGrammar",
    "GaussianMixture",
    "GenerativeModel",
    "GraphModel",
    "LabelledDatasets",
    "LogDegreeSBM",
    "MFMGaussianMixture",
    "NIWGaussianMixture",
    "OrderedGaussianCatalog",
    "PitmanYorGaussianMixture",
    "PlantedPartition",
    "PreparedGraph",
    "ProceduralCatalog",
    "ProgramModel",
    "SBM",
    "SizedBlocksPartition",
    "SymmetricAdjacency",
    "as_adjacency",
    "as_clustering_model",
    "check_adjacency",
    "from_networkx",
    "laplacian_positional_encoding",
    "load_rules",
    "model_from_config",
    "registered_models",
    "to_networkx",
]
