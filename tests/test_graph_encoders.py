"""Graph encoders (GatedGCN, GraphSAGE over a block-diagonal edge list) and the guides that use them."""

from __future__ import annotations

import pyro
import pytest
import torch

from pyro_acp.guides import ACP, ACPS, CCP
from pyro_acp.inference.elbo import ClusterwiseIWAE
from pyro_acp.models import SBM, CRPGaussianMixture
from pyro_acp.nn.graph import BlockDiagonalGraph, GraphEncoder
from pyro_acp.pretrained.checkpoint import build_guide


def _graph(n: int, p: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    upper = (torch.rand(n, n, generator=gen) < p).triu(1)
    return (upper | upper.T).float()


def _padded(graphs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(len(g) for g in graphs)
    adj = torch.zeros(len(graphs), n, n)
    mask = torch.zeros(len(graphs), n, dtype=torch.bool)
    for b, g in enumerate(graphs):
        adj[b, : len(g), : len(g)] = g
        mask[b, : len(g)] = True
    return adj, mask


def _trained_norms(encoder: GraphEncoder, seed: int = 0) -> GraphEncoder:
    """Give every batch norm non-trivial running statistics and affine parameters (as after training)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in encoder.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.running_mean.copy_(torch.randn(module.num_features, generator=gen) * 0.3)
                module.running_var.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
                module.weight.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
                module.bias.copy_(torch.randn(module.num_features, generator=gen) * 0.1)
        if encoder.edge_init is not None:
            encoder.edge_init.copy_(torch.randn(encoder.edge_init.shape, generator=gen))
    return encoder


def test_block_diagonal_edge_list_holds_every_real_edge_once_per_direction():
    graphs = [_graph(7, 0.4, 0), _graph(4, 0.6, 1), _graph(9, 0.3, 2)]
    adj, mask = _padded(graphs)
    graph = BlockDiagonalGraph(adj, mask)
    assert graph.num_nodes == 20 and graph.dst.numel() == int(sum(g.sum() for g in graphs))
    offsets = [0, 7, 11]
    for b, g in enumerate(graphs):
        lo, hi = offsets[b], offsets[b] + len(g)
        inside = (graph.dst >= lo) & (graph.dst < hi)
        assert ((graph.src[inside] >= lo) & (graph.src[inside] < hi)).all(), "no edge crosses graphs"
        dense = torch.zeros(len(g), len(g))
        dense[graph.dst[inside] - lo, graph.src[inside] - lo] = 1
        assert torch.equal(dense, g)
    assert torch.equal(graph.degree, torch.cat([g.sum(1) for g in graphs]))


def _gatedgcn_reference(encoder: GraphEncoder, adj: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """The GatedGCN equations of Dwivedi et al. node by node, edge by edge, with running-statistics batch norm."""
    n = adj.shape[0]

    def bn(norm, v):
        return (v - norm.running_mean) / torch.sqrt(norm.running_var + norm.eps) * norm.weight + norm.bias

    h = [encoder.embed(features[i]) for i in range(n)]
    e = {(i, j): encoder.edge_init for i in range(n) for j in range(n) if adj[i, j]}
    for layer in encoder.layers:
        hat = {(i, j): layer.edge_own(e[i, j]) + layer.edge_dst(h[i]) + layer.edge_src(h[j]) for (i, j) in e}
        new_h = []
        for i in range(n):
            neighbours = [j for j in range(n) if adj[i, j]]
            gates = [torch.sigmoid(hat[i, j]) for j in neighbours]
            total = sum(gates, torch.zeros_like(h[i]))
            message = sum((g * layer.node_message(h[j]) for g, j in zip(gates, neighbours, strict=True)),
                          torch.zeros_like(h[i]))
            new_h.append(h[i] + torch.relu(bn(layer.node_norm, layer.node_self(h[i]) + message / (total + 1e-6))))
        if layer.edge_norm is not None:  # the last layer's edge features are never read
            e = {key: e[key] + torch.relu(bn(layer.edge_norm, hat[key])) for key in e}
        h = new_h
    return torch.stack(h)


def _graphsage_reference(encoder: GraphEncoder, adj: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    def bn(norm, v):
        return (v - norm.running_mean) / torch.sqrt(norm.running_var + norm.eps) * norm.weight + norm.bias

    h = encoder.embed(features)
    for layer in encoder.layers:
        mean = adj @ h / adj.sum(1, keepdim=True).clamp(min=1)
        h = h + torch.relu(bn(layer.norm, layer.linear(torch.cat([h, mean], -1))))
    return h


@pytest.mark.parametrize("conv,reference", [("gatedgcn", _gatedgcn_reference), ("graphsage", _graphsage_reference)])
def test_encoder_matches_the_layer_equations_node_by_node(conv, reference):
    torch.manual_seed(0)
    encoder = _trained_norms(GraphEncoder(5, 8, num_layers=2, conv=conv))
    adj = _graph(6, 0.5, 3)
    adj[5] = adj[:, 5] = 0  # an isolated node
    features = torch.randn(6, 5)
    with torch.no_grad():
        ours = encoder(adj.unsqueeze(0), torch.ones(1, 6, dtype=torch.bool), features.unsqueeze(0))[0]
        ref = reference(encoder, adj, features)
    assert torch.allclose(ours, ref, atol=1e-5)


@pytest.mark.parametrize("conv", ["gatedgcn", "graphsage"])
def test_batched_padded_graphs_encode_as_each_graph_alone(conv):
    torch.manual_seed(1)
    encoder = _trained_norms(GraphEncoder(20, 16, conv=conv))
    graphs = [_graph(12, 0.4, 4), _graph(5, 0.5, 5), _graph(9, 0.3, 6)]
    adj, mask = _padded(graphs)
    with torch.no_grad():
        together = encoder(adj, mask)  # Laplacian encodings computed inside, per graph
        for b, g in enumerate(graphs):
            alone = encoder(g.unsqueeze(0), torch.ones(1, len(g), dtype=torch.bool))[0]
            assert torch.allclose(together[b, : len(g)], alone, atol=1e-5)
            assert (together[b, len(g):] == 0).all()


def test_training_mode_batch_norm_ignores_padding_and_the_encoding_is_equivariant():
    torch.manual_seed(2)
    encoder = GraphEncoder(20, 16)
    g = _graph(10, 0.4, 7)
    features = torch.randn(1, 10, 20)
    mask = torch.ones(1, 10, dtype=torch.bool)
    plain = encoder(g.unsqueeze(0), mask, features)  # gradients on: batch statistics
    padded_adj = torch.zeros(1, 14, 14)
    padded_adj[0, :10, :10] = g
    padded_features = torch.cat([features, torch.randn(1, 4, 20)], 1)
    padded = encoder(padded_adj, torch.arange(14).unsqueeze(0) < 10, padded_features)
    assert torch.allclose(plain, padded[:, :10], atol=1e-5)
    perm = torch.randperm(10)
    permuted = encoder(g[perm][:, perm].unsqueeze(0), mask, features[:, perm])
    assert torch.allclose(permuted, plain[:, perm], atol=1e-5)


def test_random_node_features_are_fixed_at_inference_and_fresh_in_training():
    encoder = GraphEncoder(20, 16, node_features="random")
    adj, mask = _graph(8, 0.5, 8).unsqueeze(0), torch.ones(1, 8, dtype=torch.bool)
    state = torch.get_rng_state()
    with torch.no_grad():
        first, second = encoder(adj, mask), encoder(adj, mask)
    assert torch.equal(first, second) and torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(0)
    a = encoder.node_inputs(adj, mask)
    b = encoder.node_inputs(adj, mask)
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("cls", [ACP, ACPS, CCP])
@pytest.mark.parametrize("conv", ["gatedgcn", "graphsage"])
def test_graph_guides_give_a_finite_bound_with_gradients_for_every_block(cls, conv):
    torch.manual_seed(3)
    guide = cls(20, hidden_dim=16, encoder=conv)
    batch = SBM().simulate(3, num_points=(6, 12), seed=4)
    with pyro.get_param_store().scope():
        loss = ClusterwiseIWAE(num_particles=2).differentiable_loss(guide.model, guide.guide, batch)
        loss.backward()
    assert torch.isfinite(loss)
    layer = guide.encoder.layers[0]
    first = layer.node_message if conv == "gatedgcn" else layer.linear
    assert first.weight.grad is not None and first.weight.grad.abs().sum() > 0


def test_graph_guide_config_round_trips_and_point_guides_are_unchanged():
    guide = ACP(20, hidden_dim=16, encoder="graphsage", node_features="random")
    rebuilt = build_guide(guide.config)
    assert rebuilt.config == guide.config and rebuilt.encodes_graphs
    assert rebuilt.encoder.conv == "graphsage" and rebuilt.encoder.node_features == "random"
    assert "encoder" not in ACPS(2, hidden_dim=16).config and not ACPS(2, hidden_dim=16).encodes_graphs


def test_graph_guides_refuse_point_data_and_unknown_encoders():
    guide = ACPS(2, hidden_dim=16, encoder="gatedgcn")
    points = CRPGaussianMixture().simulate(2, num_points=(5, 8), seed=0)
    with pytest.raises(ValueError, match="no adjacency"):
        guide.encode(points)
    with pytest.raises(ValueError, match="adjacencies"):
        guide.encode_data(torch.zeros(1, 5, 2), torch.ones(1, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="encoder"):
        ACPS(20, encoder="gcn")
    with pytest.raises(ValueError, match="node_features"):
        ACPS(20, encoder="gatedgcn", node_features="degree")
