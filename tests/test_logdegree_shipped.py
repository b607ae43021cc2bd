"""The shipped log-degree guide: served for LogDegreeSBM over the ACP paper's range only, and above the
exact-recovery threshold it recovers a fresh graph whose K and (a, b) it is not told."""

from __future__ import annotations

import pytest
from sklearn.metrics import adjusted_mutual_info_score

import pyro_acp
from pyro_acp.models import LogDegreeSBM
from pyro_acp.pretrained.registry import find_guide, is_complete
from tests.helpers import shipped_guide

SHIPPED = "logdegree_acps_gatedgcn64"
RANGE = LogDegreeSBM(num_blocks=(2, 3, 4), a=(1, 30), b=(1, 10))


def test_the_registry_serves_it_for_the_range_model_only():
    path, card = shipped_guide(SHIPPED)
    assert is_complete(card) and card["guide"]["encoder"] == "gatedgcn"
    assert find_guide(RANGE) == path
    assert find_guide(LogDegreeSBM(num_blocks=2, a=20.0, b=2.0)) != path  # fixed (a, b): another model


@pytest.mark.slow
def test_above_the_threshold_it_recovers_a_fresh_graph():
    graph = LogDegreeSBM(num_blocks=3, a=25.0, b=3.0).simulate(1, num_points=400, seed=123)  # (5 - 1.73)^2 > 3
    post = pyro_acp.infer(RANGE, graph.adjacency[0], num_samples=20, seed=0, estimate_log_prob=False,
                          progress_bar=False, train=False)
    assert adjusted_mutual_info_score(graph.labels[0].numpy(), post.map.numpy()) > 0.9
