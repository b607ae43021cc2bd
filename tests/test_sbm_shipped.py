"""The shipped SBM() guide (ACP-S + GatedGCN, width 64): found by the registry for SBM() at its defaults only,
used by infer without guide=, and better than chance on a held-out graph of the baseline table."""

from __future__ import annotations

import networkx as nx
import pytest
import torch
from sklearn.metrics import adjusted_mutual_info_score

import pyro_acp
from pyro_acp.models import SBM
from pyro_acp.pretrained.registry import find_guide, is_complete
from tests.helpers import shipped_guide

SHIPPED = "sbm_acps_gatedgcn64"
TABLE_SEED = 9_000_000  # graph i of the baseline table: SBM().simulate(1, (50, 300), seed=TABLE_SEED + i)


def test_the_registry_serves_it_for_sbm_defaults_only():
    path, card = shipped_guide(SHIPPED)
    assert is_complete(card) and card["guide"]["encoder"] == "gatedgcn" and card["guide"]["hidden_dim"] == 64
    assert card["evaluation"]["mean_ami_of_map_first_6"] >= 0.745  # at least spectral clustering's 0.745
    assert find_guide(SBM()) == path
    assert find_guide(SBM(alpha=1.5)) != path  # another prior: another model, not served


@pytest.mark.slow
def test_infer_without_guide_uses_it_and_recovers_a_held_out_graph():
    batch = SBM().simulate(1, num_points=(50, 300), seed=TABLE_SEED + 3)  # N = 189, 3 communities
    n = int(batch.num_points[0])
    adjacency, truth = batch.adjacency[0, :n, :n], batch.labels[0, :n]
    options = {"num_samples": 20, "seed": 0, "progress_bar": False, "estimate_log_prob": False}
    found = pyro_acp.infer(SBM(), adjacency, train=False, **options)  # no guide=: the registry's, no training
    given = pyro_acp.infer(SBM(), adjacency, guide=shipped_guide(SHIPPED)[0], **options)
    assert torch.equal(found.samples, given.samples)
    assert adjusted_mutual_info_score(truth.numpy(), found.map.numpy()) > 0.8
    graph = nx.relabel_nodes(nx.from_numpy_array(adjacency.numpy()), {i: f"v{i}" for i in range(n)})
    by_node = pyro_acp.infer(SBM(), graph, train=False, **options).map_by_node
    assert set(by_node) == set(graph.nodes) and len(set(by_node.values())) >= 2
