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
    (np.array([[0.0, np.inf], [np.inf, 0.0]]), "NaN or inf"),
    (np.array([[0.0, 0.5], [0.5, 0.0]]), "0/1 entries"),
    (np.zeros((2, 2, 2)), "square"),
    (np.zeros((0, 0)), "empty"),
    (nx.Graph(), "no nodes"),
])
def test_bad_graphs_are_refused_naming_the_problem(bad, message, guide):
    with pytest.raises(ValueError, match=message):
        _infer(bad, guide)


def test_what_is_not_a_graph_is_refused_by_type(guide):
    with pytest.raises(TypeError, match="tensor, array or networkx graph"):
        _infer("edges.csv", guide)
    with pytest.raises(TypeError, match="tensor, array or networkx graph"):
        _infer([[0, {1}], [1, 0]], guide)


def test_node_attributes_edgeless_and_two_node_graphs_are_inferred(guide):
    attributed = nx.cycle_graph(8)
    nx.set_edge_attributes(attributed, 2.5, "weight")
    attributed.nodes[0]["label"] = "only this node has one"  # read by from_networkx, ignored by infer
    post = _infer(attributed, guide, num_samples=4)
    assert post.nodes == list(range(8)) and post.samples.shape == (4, 8)
    for graph in (nx.empty_graph(6), nx.path_graph(2)):
        post = _infer(graph, guide, num_samples=4)
        assert post.samples.shape == (4, graph.number_of_nodes())
        assert torch.isfinite(post.log_joint).all()


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
    with pytest.raises(TypeError, match="label of node 'v0' must be hashable"):
        _infer(graph, guide, labelled={"v0": ["red"]})
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


# -------------------------------------------------------------------------------------- semi-supervised training


def test_labelled_view_visits_labelled_clusters_first_in_uniform_order():
    from pyro_acp.models import PlantedPartition

    guide = ACPS(20, hidden_dim=16, encoder="gatedgcn", label_slots=4)
    batch = PlantedPartition(num_blocks=6, block_sizes=(2, 12)).simulate(400, seed=5)
    view, node_labels = guide.labelled_view(batch)
    again = guide.labelled_view(batch)
    assert torch.equal(view.members, again[0].members) and torch.equal(node_labels, again[1]), "deterministic"
    # the view is a valid teacher-forced batch: step k's members are the points labelled k
    steps = torch.arange(view.max_clusters)
    assert torch.equal(view.members, view.labels.unsqueeze(1) == steps.view(1, -1, 1))
    assert torch.equal(view.anchor.sum(-1), view.step_mask.long()) and not (view.anchor & ~view.members).any()
    assigned = view.members.long().cumsum(1) - view.members.long() > 0
    assert torch.equal(view.available, view.mask.unsqueeze(1) & ~assigned & ~view.anchor)
    # four labelled nodes per graph, each the anchor of one of the first four steps, slots a permutation
    labelled = node_labels >= 0
    assert (labelled.sum(-1) == 4).all()
    assert torch.equal(labelled, view.anchor[:, :4].any(1))
    assert (node_labels.sort(-1).values[:, -4:] == torch.arange(4)).all()
    # the first cluster is a uniformly random one, not size-biased: it is a largest one with probability
    # (number of largest clusters) / 6, here 0.22 (measured 0.24, sd 0.02 over 400 graphs); the simulator's
    # size-biased order puts a largest cluster first in 0.36
    sizes = view.members.sum(-1)
    largest = sizes == sizes.max(-1, keepdim=True).values
    uniform = largest.sum(-1).double().mean().item() / 6
    assert abs(largest[:, 0].double().mean().item() - uniform) < 0.06
    original = batch.members.sum(-1)
    assert (original[:, 0] == original.max(-1).values).double().mean().item() > uniform + 0.08


def test_semi_supervised_guides_train_and_read_the_labels_at_inference(graph):
    from pyro_acp.inference.elbo import ClusterwiseIWAE
    from pyro_acp.models import PlantedPartition

    torch.manual_seed(1)
    guide = ACPS(20, hidden_dim=16, encoder="gatedgcn", label_slots=3)
    batch = PlantedPartition(num_blocks=3, block_sizes=(3, 8)).simulate(4, seed=6)
    loss = ClusterwiseIWAE(num_particles=2).differentiable_loss(guide.model, guide.guide, batch)
    loss.backward()
    assert torch.isfinite(loss) and guide.encoder.label_embedding.weight.grad.abs().sum() > 0
    guide.eval()
    adjacency = torch.as_tensor(nx.to_numpy_array(graph), dtype=torch.get_default_dtype()).unsqueeze(0)
    mask = torch.ones(1, 14, dtype=torch.bool)
    labels = torch.full((14,), -1)
    labels[[0, 5]] = torch.tensor([0, 1])
    with torch.no_grad():
        plain = guide.encode_data(adjacency, mask).enc
        anchored = guide.with_anchors(labels).encode_data(adjacency, mask).enc
    assert not torch.allclose(plain, anchored)
    with pytest.raises(ValueError, match="at most 3"):
        guide.with_anchors(torch.arange(14) % 4)
    with pytest.raises(ValueError, match="graph encoder"):
        ACPS(20, label_slots=2)


def test_balanced_accuracy_is_the_mean_recall_of_the_true_classes():
    from pyro_acp.posteriors.graph import balanced_accuracy

    nodes = ["a", "b", "c", "d", "e", "f"]
    # clusters {a, b, c}, {d, e}, {f}; labelled: a is "x", d is "y"; f's cluster holds no labelled node
    post = GraphClusteringPosterior(torch.tensor([[0, 0, 0, 1, 1, 2]]), nodes=nodes, labelled={"a": "x", "d": "y"})
    truth = {"a": "x", "b": "x", "c": "y", "d": "y", "e": "y", "f": "x"}
    # class x: a, b right, f wrong -> 2/3; class y: c wrong, d, e right -> 2/3
    assert balanced_accuracy(post, truth) == pytest.approx(2 / 3)
    assert balanced_accuracy(post, [truth[n] for n in nodes]) == pytest.approx(2 / 3)
    truth["f"] = "z"  # a class no cluster carries: recall 0
    assert balanced_accuracy(post, truth) == pytest.approx((1 + 2 / 3 + 0) / 3)
    with pytest.raises(ValueError, match="no label for node 'f'"):
        balanced_accuracy(post, {n: "x" for n in nodes[:5]})
