"""``pyro_acp.infer`` for graph models: reading graphs, node-keyed posteriors, semi-supervised anchors, plots.

The guides here are untrained (the structure of the answer is what is tested); tests/test_graph_accuracy.py
checks a trained guide against the exact posterior.
"""

from __future__ import annotations

import warnings

import networkx as nx
import numpy as np
import pytest
import scipy.sparse
import torch

import pyro_acp
from pyro_acp.guides import ACPS
from pyro_acp.models import SBM, CRPGaussianMixture, as_adjacency, to_networkx
from pyro_acp.posteriors import GraphClusteringPosterior
from pyro_acp.posteriors.graph import labelled_classes


@pytest.fixture(scope="module")
def guide() -> ACPS:
    torch.manual_seed(0)
    g = ACPS(20, hidden_dim=16, encoder="gatedgcn").eval()
    g.trained_for = SBM().config()
    return g


@pytest.fixture(scope="module")
def graph() -> nx.Graph:
    adjacency = SBM().simulate(1, num_points=14, seed=3).adjacency[0]
    return nx.relabel_nodes(to_networkx(adjacency), {i: f"v{i}" for i in range(14)})


def _infer(graph, guide, **kwargs):
    kwargs.setdefault("estimate_log_prob", False)  # the guide's probability estimates are not tested here
    return pyro_acp.infer(SBM(), graph, guide=guide, num_samples=kwargs.pop("num_samples", 12), seed=0,
                          progress_bar=False, **kwargs)


# ---------------------------------------------------------------------------------------------- reading graphs


def test_networkx_scipy_and_dense_inputs_give_the_same_samples(graph, guide):
    dense = torch.as_tensor(nx.to_numpy_array(graph))
    by_graph = _infer(graph, guide)
    assert isinstance(by_graph, GraphClusteringPosterior) and by_graph.nodes == list(graph.nodes)
    assert torch.equal(by_graph.samples, _infer(dense, guide).samples)
    assert torch.equal(by_graph.samples, _infer(scipy.sparse.csr_matrix(dense.numpy()), guide).samples)
    assert _infer(dense, guide).nodes == list(range(14))


def test_posterior_reads_by_node(graph, guide):
    post = _infer(graph, guide)
    assert post.map_by_node == {f"v{i}": int(post.map[i]) for i in range(14)}
    by_node = post.samples_by_node()
    assert torch.equal(by_node["v3"], post.samples[:, 3]) and post.node_index("v13") == 13
    with pytest.raises(KeyError, match="'nope' is not in the graph"):
        post.node_index("nope")


def test_weights_parallel_edges_isolated_nodes_and_components_are_handled():
    weighted = nx.Graph()
    weighted.add_weighted_edges_from([(0, 1, 3.5), (1, 2, 0.2)])
    weighted.add_node(3)  # isolated
    assert torch.equal(as_adjacency(weighted).adjacency, torch.tensor(
        [[0, 1, 0, 0], [1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.get_default_dtype()))
    multi = nx.MultiGraph([(0, 1), (0, 1), (1, 2)])
    assert as_adjacency(multi).adjacency.max() == 1
    two_components = nx.disjoint_union(nx.complete_graph(4), nx.complete_graph(3))
    assert as_adjacency(two_components).adjacency.shape == (7, 7)


@pytest.mark.parametrize("bad,message", [
    (nx.DiGraph([(0, 1), (1, 2)]), "directed: pass graph.to_undirected"),
    (nx.Graph([(0, 0), (0, 1)]), "self loops"),
    (np.array([[0, 2], [2, 0]]), "0/1 entries"),
    (np.array([[0, 1, 0], [0, 0, 1], [0, 0, 0]]), "symmetric"),
    (np.eye(3), "zero diagonal"),
    (np.zeros((2, 3)), "square"),
    (scipy.sparse.csr_matrix(np.zeros((2, 3))), "square"),
    (np.array([[0.0, np.nan], [np.nan, 0.0]]), "NaN"),
    (np.zeros((0, 0)), "empty"),
    (nx.Graph(), "no nodes"),
])
def test_bad_graphs_are_refused_naming_the_problem(bad, message, guide):
    with pytest.raises(ValueError, match=message):
        _infer(bad, guide)


def test_one_node_and_a_point_guide_are_refused(guide):
    lonely = nx.Graph()
    lonely.add_node("a")
    with pytest.raises(ValueError, match="at least 2"):
        _infer(lonely, guide)
    point_guide = ACPS(20, hidden_dim=16)
    point_guide.trained_for = SBM().config()
    with pytest.raises(ValueError, match="encodes points.*graph encoder"):
        _infer(nx.path_graph(5), point_guide)


# ---------------------------------------------------------------------------------------------- anchors


@pytest.mark.parametrize("new_clusters", [True, False])
def test_labelled_nodes_anchor_their_clusters_in_every_sample(graph, guide, new_clusters):
    labelled = {"v0": "red", "v5": "blue", "v7": "red", "v9": "green"}
    post = _infer(graph, guide, labelled=labelled, new_clusters=new_clusters, num_samples=40)
    s = post.samples
    i = {node: post.node_index(node) for node in labelled}
    assert (s[:, i["v0"]] == s[:, i["v7"]]).all(), "same label, same cluster"
    for a, b in [("v0", "v5"), ("v0", "v9"), ("v5", "v9")]:
        assert (s[:, i[a]] != s[:, i[b]]).all(), "different labels, different clusters"
    if new_clusters:
        assert (post.num_clusters >= 3).all() and (post.num_clusters > 3).any()
    else:
        assert (post.num_clusters == 3).all()
    assert post.log_prob is None and post.labelled == labelled
    classes = labelled_classes(post)
    assert all(classes[node] == label for node, label in labelled.items())
    if not new_clusters:
        assert set(classes.values()) == {"red", "blue", "green"}


def test_labelled_classes_are_visited_in_random_order(guide):
    labels = torch.tensor([0, 1, 2, -1, -1, -1])
    anchored = guide.with_anchors(labels)
    from pyro_acp.inference.sampling import sample_partitions

    adjacency = SBM().simulate(1, num_points=6, seed=1).adjacency
    sample_partitions(anchored, adjacency, 300, generator=torch.Generator().manual_seed(0))
    order = anchored._anchors["order"]
    firsts = torch.bincount(order[:, 0], minlength=3)
    assert (firsts > 70).all(), firsts  # each class first about 100 times in 300
    assert not hasattr(guide, "_anchors") or guide._anchors is None, "the guide itself is unchanged"


def test_bad_labelled_arguments(graph, guide):
    with pytest.raises(ValueError, match="labelled node 'zed' is not in the graph"):
        _infer(graph, guide, labelled={"zed": 1})
    with pytest.raises(ValueError, match="reweight"):
        _infer(graph, guide, labelled={"v0": 1}, reweight=True)
    with pytest.raises(ValueError, match="non-empty dict"):
        _infer(graph, guide, labelled={})
    with pytest.raises(ValueError, match="for graph models"):
        pyro_acp.infer(CRPGaussianMixture(), torch.zeros(5, 2), labelled={0: 1}, train=False)


# ---------------------------------------------------------------------------------------------- plot


def test_plot_shows_the_sorted_adjacency_and_the_coclustering(graph, guide, tmp_path):
    post = _infer(graph, guide)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = post.plot(path=tmp_path / "graph.png")
    assert (tmp_path / "graph.png").stat().st_size > 0
    axes = fig.axes
    shown = axes[0].images[0].get_array()
    estimate = post.point_estimate("vi").numpy()
    order = np.lexsort((np.arange(14), estimate))
    assert np.array_equal(np.asarray(shown), nx.to_numpy_array(graph)[np.ix_(order, order)])
    assert "co-clustering" in axes[1].get_title() and "K" in axes[2].get_xlabel()
