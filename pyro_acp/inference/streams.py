"""Random streams per data set: a batch of data sets whose draws do not depend on each other.

No torch sampler takes one generator per row, so a batch that must give every data set what it would get alone
draws each data set's rows from that data set's own generator, in the shapes the computation on that data set
alone draws them in, and assembles the batch's tensor from the parts. Two users:

- the batched sampler of :mod:`pyro_acp.inference.many_batch`, which routes the guide's own draws
  (:class:`PerDataSetDraws`, a torch function mode: the guide's code is unchanged);
- the log-probability estimator (:mod:`pyro_acp.inference.log_prob`), which asks :class:`EstimatorDraws` for
  its uniforms and its z noise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode


def owner_runs(owner: Tensor) -> list[tuple[int, int]]:
    """(data set, row count) of each run of equal entries of ``owner`` (R,), in order."""
    present, counts = torch.unique_consecutive(owner, return_counts=True)
    return list(zip(present.tolist(), counts.tolist(), strict=True))


def _check_grouped(runs: list[tuple[int, int]]) -> None:
    owners = [b for b, _ in runs]
    if len(set(owners)) != len(owners):
        raise ValueError("per-data-set draws need each data set's rows contiguous (rows sorted by data set)")


class EstimatorDraws:
    """The log-probability estimator's random numbers.

    ``generators`` None: every draw comes from ``generator`` for the whole batch at once (one data set, or a
    batch that shares one stream). A list (one generator per data set): a draw's rows owned by data set b
    (contiguous, in the order an estimate of b alone has them) come from ``generators[b]`` with the point
    dimension cut to ``sizes[b]``, so b's estimate does not depend on its batch-mates.
    """

    def __init__(self, generator: torch.Generator | None = None, generators: list[torch.Generator] | None = None,
                 sizes: list[int] | None = None):
        if generators is not None and (sizes is None or len(sizes) != len(generators)):
            raise ValueError("per-data-set draws need one size per generator")
        self.generator, self.generators, self.sizes = generator, generators, sizes

    def uniform(self, owner: Tensor, shape: tuple[int, int], fill: float, device: torch.device) -> Tensor:
        """U(0, 1) draws (R, N); per data set, its rows' points beyond its size hold ``fill``."""
        if self.generators is None:
            return torch.rand(shape, generator=self.generator, device=device)
        out = torch.full(shape, fill, device=device)
        start = 0
        runs = owner_runs(owner)
        _check_grouped(runs)
        for b, count in runs:
            out[start : start + count, : self.sizes[b]] = torch.rand(
                (count, self.sizes[b]), generator=self.generators[b], device=device)
            start += count
        return out

    def row_uniforms(self, owner: Tensor, width: int, device: torch.device) -> Tensor:
        """U(0, 1) draws (R, ``width``), ``width`` per row whatever the data set's size; rows grouped by data set."""
        if self.generators is None:
            return torch.rand((owner.shape[0], width), generator=self.generator, device=device)
        runs = owner_runs(owner)
        _check_grouped(runs)
        parts = [torch.rand((count, width), generator=self.generators[b], device=device) for b, count in runs]
        return torch.cat(parts) if parts else torch.empty((0, width), device=device)

    def normal_stream(self, owner: Tensor, num_z: int, dim: int, piece: int, device: torch.device) -> NormalStream:
        """z noise (num_z, rows, dim) for rows owned by ``owner`` (A,), drawn ``piece`` rows at a time per stream."""
        if self.generators is None:
            runs = [(self.generator, int(owner.shape[0]))]
        else:
            grouped = owner_runs(owner)
            _check_grouped(grouped)
            runs = [(self.generators[b], count) for b, count in grouped]
        return NormalStream(runs, num_z, dim, piece, device)


class NormalStream:
    """Standard normal draws (num_z, rows, dim), taken in any row counts from (generator, rows) runs, each run
    drawn in pieces of ``piece`` rows (the last one shorter): what a loop over ``piece``-row chunks of that run
    alone draws, whichever chunks the consumer takes."""

    def __init__(self, runs: list[tuple[torch.Generator | None, int]], num_z: int, dim: int, piece: int,
                 device: torch.device):
        self._runs: Iterator[tuple[torch.Generator | None, int]] = iter(runs)
        self.num_z, self.dim, self.piece, self.device = num_z, dim, max(1, piece), device
        self._generator, self._remaining = None, 0
        self._buffer: Tensor | None = None

    def take(self, count: int) -> Tensor:
        parts = []
        while count > 0:
            if self._buffer is None or self._buffer.shape[1] == 0:
                self._buffer = self._next_piece()
            part, self._buffer = self._buffer[:, :count], self._buffer[:, count:]
            parts.append(part)
            count -= part.shape[1]
        return parts[0] if len(parts) == 1 else torch.cat(parts, 1)

    def _next_piece(self) -> Tensor:
        while self._remaining == 0:
            try:
                self._generator, self._remaining = next(self._runs)
            except StopIteration:
                raise RuntimeError("the z noise stream ran out of rows") from None
        rows = min(self.piece, self._remaining)
        self._remaining -= rows
        return torch.randn((self.num_z, rows, self.dim), generator=self._generator, device=self.device)


class PerDataSetDraws(TorchFunctionMode):
    """Serve every draw on ``shared`` (the generator the sampler hands the guide) from each data set's own
    generator, in the shape the sampler would draw it in for that data set alone.

    The guide draws with ``torch.rand`` / ``randn`` / ``multinomial`` / ``bernoulli``, one row per running
    thread. Before each round :meth:`rows` says which data set each row belongs to (rows of one data set are
    contiguous and in sample order, as ``infer`` runs them); the rows of data set b are drawn from b's generator
    with the point dimension (the chunk's padded width ``width``, chosen unlike every other dimension a draw
    has) cut to b's N, then padded back. One shared generator would make each data set's answer depend on its
    batch-mates.
    """

    _SHAPED = (torch.rand, torch.randn)
    _MULTINOMIAL = (torch.multinomial, Tensor.multinomial)
    _ELEMENTWISE = (torch.bernoulli, Tensor.bernoulli)

    def __init__(self, shared: torch.Generator, generators: list[torch.Generator], sizes: list[int], width: int):
        super().__init__()
        self.shared, self.generators, self.sizes, self.width = shared, generators, sizes, width
        self.owner: list[tuple[int, int]] = []  # (data set, row count) runs of the next draws' rows
        self.points = True  # draws have a point dimension (sampling rounds), or none (ordering clusters)

    def rows(self, owner: Tensor, points: bool = True) -> PerDataSetDraws:
        self.owner, self.points = owner_runs(owner), points
        return self

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if kwargs.get("generator") is not self.shared:
            if any(arg is self.shared for arg in args):
                raise NotImplementedError(f"the guide passed the generator to {func.__name__} positionally; "
                                          "infer_many routes only generator= keywords")
            return func(*args, **kwargs)
        if func in self._SHAPED:
            size = kwargs.pop("size", None)
            if size is None:
                size = args[0] if len(args) == 1 and not isinstance(args[0], int) else args
            size = tuple(size)
            return self._route(size, size, lambda gen, rows, cut, shape: func(shape, **{**kwargs, "generator": gen}),
                               pad=1.0 if func is torch.rand else 0.0)  # padding: a uniform that never joins
        if func in self._MULTINOMIAL or func in self._ELEMENTWISE:
            source, rest = args[0], args[1:]
            out = None if func in self._MULTINOMIAL else tuple(source.shape)
            return self._route(tuple(source.shape), out, lambda gen, rows, cut, shape: func(
                source[rows][cut], *rest, **{**kwargs, "generator": gen}))
        raise NotImplementedError(
            f"infer_many gives each data set its own random stream, but the guide drew with {func.__name__}, which "
            "it cannot route (torch.rand, randn, multinomial and bernoulli only); call pyro_acp.infer per data set")

    def _route(self, shape: tuple[int, ...], out_shape: tuple[int, ...] | None,
               draw: Callable[..., Tensor], pad: float = 0.0) -> Tensor:
        """``draw(generator, rows, cut, shape)`` per data set, assembled into one (T, ...) tensor: ``out_shape``
        with the cut dimensions padded with ``pad``, or (None) the parts' own trailing shape."""
        total = sum(count for _, count in self.owner)
        if shape[0] != total:
            raise NotImplementedError(f"infer_many routes draws with one row per running thread ({total} rows), but "
                                      f"the guide drew {shape}; call pyro_acp.infer per data set")
        out, start = None, 0
        for b, count in self.owner:
            rows = slice(start, start + count)
            cut = tuple(slice(0, self.sizes[b]) if self.points and d == self.width else slice(None) for d in shape[1:])
            own = (count, *(self.sizes[b] if self.points and d == self.width else d for d in shape[1:]))
            part = draw(self.generators[b], rows, (slice(None), *cut), own)
            if out is None:
                out = part.new_full(out_shape if out_shape is not None else (total, *part.shape[1:]), pad)
            if out_shape is not None:
                out[(rows, *cut)] = part
            else:
                out[rows] = part
            start += count
        return out
