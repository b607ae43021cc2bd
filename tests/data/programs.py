"""Two models written only as Pyro code (no subclass), whose guides are trained by
``benchmarks/train_program_guides.py`` and shipped as test fixtures beside this file.

The fixtures' cards record each program's fingerprint (its code, the values it closes over, the globals it
reads, and this module's name), so a fixture serves only the program defined here: edit a program and its
fixture is refused until the benchmark is run again. Import this module as ``tests.data.programs``
everywhere (the module name is part of the fingerprint).

- :func:`finite_mixture`: a finite mixture with a ``Categorical`` partition site in a plate (three
  components, Dirichlet(1) weights, 2-D means N(0, 4² I), unit noise). NUTS runs it with the labels
  enumerated (``pyro_acp.mcmc.nuts``).
- :func:`studentt_crp`: the Student-t program of issue 18 (a CRP(0.5) partition, a LogNormal(0, 0.5) scale
  shared by the clusters, 2-D means N(0, 5² I), Student-t(4) points), with the cluster means gathered by a
  one-hot product instead of ``loc[labels]`` so that it broadcasts over copies of the program: simulation
  and importance sampling then run vectorised (``loc[labels]`` would index the copy dimension, and the
  enumerated posterior would run the program once per particle).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.ops.indexing import Vindex

from pyro_acp.distributions import CRP

#: the training range of N of both fixtures: ``pyro_acp.models.program.training_range(6)``, the range
#: ``infer`` picks for data of six points
NUM_POINTS_RANGE = (2, 9)


def finite_mixture(num_points, x=None):
    """Three 2-D Gaussian components with Dirichlet(1) weights and N(0, 4² I) means, unit noise."""
    weights = pyro.sample("weights", dist.Dirichlet(torch.ones(3)))
    with pyro.plate("components", 3):
        loc = pyro.sample("loc", dist.Normal(0.0, 4.0).expand([2]).to_event(1))
    with pyro.plate("points", num_points):
        labels = pyro.sample("labels", dist.Categorical(weights))
        pyro.sample("x", dist.Normal(Vindex(loc.unsqueeze(-3))[..., labels, :], 1.0).to_event(1), obs=x)


def studentt_crp(num_points, x=None):
    """CRP(0.5) clusters of 2-D Student-t(4) points: means N(0, 5² I), one LogNormal(0, 0.5) scale."""
    labels = pyro.sample("labels", CRP(0.5, num_points))
    scale = pyro.sample("scale", dist.LogNormal(0.0, 0.5))
    with pyro.plate("clusters", num_points):
        loc = pyro.sample("loc", dist.Normal(0.0, 5.0).expand([2]).to_event(1))
    one_hot = torch.nn.functional.one_hot(labels, num_points).to(loc.dtype)
    mean = (one_hot @ loc.unsqueeze(-3)).squeeze(-3)  # loc[labels], broadcasting over copies of the program
    with pyro.plate("points", num_points):
        pyro.sample("x", dist.StudentT(4.0, mean, scale.unsqueeze(-1)).to_event(1), obs=x)
