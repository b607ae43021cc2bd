"""Labelled data sets as a training distribution: :class:`LabelledDatasets`.

"All we need for training are labeled datasets" (the ACP paper's SNAP experiment): a collection of
(graph or point set, labels) pairs stands in for a simulator, for graphs and point sets alike, with a
held-out split for evaluation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from pyro_acp.data.batch import Batch, random_point_order
from pyro_acp.seeding import make_generator
from pyro_acp.validation import check_choice, check_int, check_positive_int, check_scalar, check_vectors

from .base import GenerativeModel
from .graphs import POSITIONAL_ENCODING_DIM, as_adjacency, check_adjacency, laplacian_positional_encoding


def label_ids(labels: Any, nodes: list | None, n: int, name: str) -> Tensor:
    """(N,) integer labels 0..K-1 (by first appearance) from a sequence of hashable labels, or for a
    networkx graph a dict {node: label} covering every node."""
    if isinstance(labels, dict):
        if nodes is None:
            raise ValueError(f"{name}: a dict of labels needs a networkx graph (whose nodes it names)")
        missing = [node for node in nodes if node not in labels]
        if missing:
            raise ValueError(f"{name}: node {missing[0]!r} has no label")
        labels = [labels[node] for node in nodes]
    elif torch.is_tensor(labels) or isinstance(labels, np.ndarray):
        labels = labels.tolist()
    labels = list(labels)
    if len(labels) != n:
        raise ValueError(f"{name}: {len(labels)} labels for {n} points")
    ids: dict[Any, int] = {}
    try:
        return torch.tensor([ids.setdefault(label, len(ids)) for label in labels], dtype=torch.long)
    except TypeError as err:
        raise TypeError(f"{name}: labels must be hashable (e.g. ints or strings)") from err


def data_fingerprint(tensors: list[Tensor]) -> str:
    """A short SHA-256 of the data sets' values and shapes: which collection a guide was trained on."""
    import hashlib

    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


class LabelledDatasets(GenerativeModel):
    """A collection of labelled data sets used as the training distribution instead of a simulator.

    "All we need for training are labeled datasets" (the ACP paper's SNAP experiment): ``datasets`` is a
    sequence of ``(x, labels)`` pairs, all graphs (networkx graphs, scipy sparse or dense adjacencies, read
    by :func:`~pyro_acp.models.graphs.as_adjacency`) or all point sets (N, D). ``labels`` are any hashable
    values, one per node / point in order (for a networkx graph also a dict {node: label}); only which
    nodes share a label matters.

    A fraction ``held_out`` of the data sets (at least one when there are two or more), drawn with
    ``seed``, is kept out of training: :meth:`simulate` draws training batches uniformly with replacement
    from the others, and :attr:`held_out_datasets` returns the held-out ones for evaluation. Graph batches
    get their nodes in a random order and Laplacian encodings with random sign flips, as simulated graphs
    do; point batches a random point order.

    There is no generative program (no prior, no likelihood): ``model()``, ``partition_prior`` and the
    exact references are not available, and ``infer`` uses the guide alone. ``config()`` identifies the
    collection by a fingerprint of its data, so a cached guide is matched to the same collection only.
    """

    ordered = False

    def __init__(self, datasets: Any, *, kind: str | None = None, held_out: float = 0.2, seed: int = 0):
        pairs = list(datasets)
        if not pairs:
            raise ValueError("datasets is empty: give a sequence of (x, labels) pairs")
        for i, pair in enumerate(pairs):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise ValueError(f"datasets[{i}] must be an (x, labels) pair")
        if kind is None:
            first = pairs[0][0]
            kind = "graph" if hasattr(first, "number_of_nodes") or hasattr(first, "tocoo") else "vector"
        self.data_kind = check_choice(kind, "kind", ("graph", "vector"))
        held_out = check_scalar(held_out, "held_out")
        if not 0.0 <= held_out < 1.0:
            raise ValueError(f"held_out must be a fraction in [0, 1), got {held_out}")
        xs, labels = [], []
        dim = None if self.data_kind == "graph" else int(np.shape(pairs[0][0])[-1])
        for i, (x, y) in enumerate(pairs):
            if self.data_kind == "graph":
                graph = as_adjacency(x, f"datasets[{i}] graph")
                xs.append(graph.adjacency.to(torch.get_default_dtype()))
                labels.append(label_ids(y, graph.nodes, xs[-1].shape[0], f"datasets[{i}]"))
            else:
                xs.append(check_vectors(x, dim, f"datasets[{i}] x").to(torch.get_default_dtype()))
                labels.append(label_ids(y, None, xs[-1].shape[0], f"datasets[{i}]"))
        self._xs, self._labels = xs, labels
        count = len(pairs)
        num_held = min(count - 1, max(1, round(held_out * count))) if held_out > 0 and count > 1 else 0
        order = torch.randperm(count, generator=torch.Generator().manual_seed(check_int(seed, "seed")))
        self._held, self._train = sorted(order[:num_held].tolist()), sorted(order[num_held:].tolist())
        self._dim = POSITIONAL_ENCODING_DIM if dim is None else dim
        sizes = [int(x.shape[0]) for x in xs]
        self.default_num_points = (min(sizes), max(sizes) + 1)
        super().__init__(kind=self.data_kind, num_datasets=count, held_out=held_out, seed=seed,
                         fingerprint=data_fingerprint(xs + labels))

    @property
    def data_dim(self) -> int:
        return self._dim

    @property
    def held_out_datasets(self) -> list[tuple[Tensor, Tensor]]:
        """The held-out (x, labels) pairs: adjacencies or points as tensors, labels 0..K-1."""
        return [(self._xs[i], self._labels[i]) for i in self._held]

    @property
    def training_datasets(self) -> list[tuple[Tensor, Tensor]]:
        """The (x, labels) pairs training batches are drawn from."""
        return [(self._xs[i], self._labels[i]) for i in self._train]

    def check_data(self, x: Any) -> Tensor:
        if self.data_kind == "graph":
            return check_adjacency(x, "graph")
        return check_vectors(x, self._dim)

    def partition_prior(self, num_points: int):
        raise NotImplementedError("a collection of labelled data sets has no prior over partitions")

    def _program(self, num_points: int, obs: Tensor | None) -> Tensor:
        raise NotImplementedError("a collection of labelled data sets has no generative program; it serves "
                                  "training batches (simulate) only")

    def simulate(self, batch_size: int, num_points: int | tuple[int, int] | None = None, seed: int | None = None,
                 device: str | torch.device | None = None, size_law: str = "uniform", *,
                 split: str = "train") -> Batch:
        """``batch_size`` data sets drawn uniformly with replacement from the training part (``split="held_out"``:
        from the held-out part, for evaluation), those with N in ``num_points`` when given; padded, in random
        point order, with teacher-forcing masks. ``size_law`` must be ``"uniform"``: the data sets are drawn as
        they are, whatever their sizes."""
        batch_size = check_positive_int(batch_size, "batch_size")
        if size_law != "uniform":
            raise ValueError(f"size_law={size_law!r}: a collection of labelled data sets is drawn uniformly, data "
                             "set by data set (their sizes are what they are); leave size_law='uniform'")
        lo, hi = self.check_num_points_range(num_points)
        part = self._train if check_choice(split, "split", ("train", "held_out")) == "train" else self._held
        pool = [i for i in part if lo <= self._xs[i].shape[0] < hi]
        if not pool:
            raise ValueError(f"no {split.replace('_', '-')} data set has N in [{lo}, {hi})")
        device = torch.device("cpu" if device is None else device)
        generator = make_generator(seed, device)
        picks = torch.randint(len(pool), (batch_size,), generator=generator, device=device).tolist()
        chosen = [pool[p] for p in picks]
        sizes = torch.tensor([self._xs[i].shape[0] for i in chosen], device=device)
        n = int(sizes.max())
        mask = torch.arange(n, device=device) < sizes.unsqueeze(-1)
        labels = torch.full((batch_size, n), -1, dtype=torch.long, device=device)
        width = n if self.data_kind == "graph" else self._dim
        data = torch.zeros(batch_size, n, width, device=device)
        for row, i in enumerate(chosen):  # copying B tensors of different shapes into one padded block
            m = self._xs[i].shape[0]
            data[row, :m, : self._xs[i].shape[1]] = self._xs[i].to(device)
            labels[row, :m] = self._labels[i].to(device)
        if self.data_kind == "vector":
            return Batch.from_labels(data, labels, mask=mask, generator=generator)
        perm = random_point_order(mask, generator)
        labels = labels.gather(1, perm)
        data = data.gather(1, perm.unsqueeze(-1).expand_as(data)).gather(2, perm.unsqueeze(1).expand_as(data))
        pe = laplacian_positional_encoding(data, mask, POSITIONAL_ENCODING_DIM, sign_flip_generator=generator)
        return Batch.from_labels(pe, labels, mask=mask, adjacency=data, shuffle=False, generator=generator)
