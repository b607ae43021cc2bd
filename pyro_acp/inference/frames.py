"""Random orthogonal frames: averaging a guide over rotations and reflections of the data.

For a model whose posterior does not change when the data are rotated or reflected (isotropic Gaussian
mixtures with means centred at the origin: p(c | Qx) = p(c | x) for every orthogonal Q), a trained network
is only approximately invariant: the shipped guide gives 44 % to one cluster for three clusters 3 sd apart
on a horizontal line, 3 % for the same points on a vertical one, where the exact posterior gives 0.1 %.
Drawing each sample in its own random frame Q ~ Haar(O(D)) samples from the frame-averaged guide
    q_sym(c | x) = E_Q q(c | Q x),
which has the model's invariance and, by convexity, is at least as close to the posterior as the average
frame (benchmarks/evaluate_shipped_guide.py: mean N = 7 TV 0.169 -> 0.124, the gain coming from close
clusters, where single orientations disagree most; on typical simulated data it is level with the data as
given). Each frame costs one more encoding of the data set, so the number of frames is bounded by a budget
of encoded points.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

#: frames are used while (frames x points) stays within this many encoded points per data set
FRAME_POINT_BUDGET = 4096
#: and at most this many: the sampling distribution is then the exact mixture of the guide over these frames,
#: q_F(c) = (1 / F) sum_f q(c | Q_f x), whose probabilities the estimator can sum frame by frame
#: (:mod:`pyro_acp.inference.log_prob`); 16 random frames already average out the orientation bias
MAX_FRAMES = 16


def is_rotation_invariant(model: Any) -> bool:
    """Whether ``model`` declares p(c | Q x) = p(c | x) for every orthogonal Q (``rotation_invariant``)."""
    return bool(getattr(model, "rotation_invariant", False))


def num_frames(num_points: int, num_threads: int, budget: int = FRAME_POINT_BUDGET) -> int:
    """Frames for ``num_threads`` samples (or estimates) of a data set of ``num_points`` points: one each
    while the budget lasts and up to :data:`MAX_FRAMES`, at least 1 (a single frame means the data as given)."""
    return max(1, min(num_threads, budget // max(num_points, 1), MAX_FRAMES))


def random_frames(count: int, dim: int, generator: torch.Generator | None = None,
                  device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Tensor:
    """``count`` Haar-distributed orthogonal matrices (count, dim, dim), reflections included.

    QR of a Gaussian matrix with the signs of R's diagonal moved into Q (Mezzadri 2007).
    """
    gaussian = torch.randn(count, dim, dim, generator=generator, device=device, dtype=dtype)
    q, r = torch.linalg.qr(gaussian)
    return q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)


def sample_frames(num_samples: int, frames: Tensor | None, device: torch.device | str | None = None) -> Tensor:
    """The frame each of ``num_samples`` samples is drawn in by ``sample_partitions(..., frames=frames)``:
    sample s in frame s % F (all zero without frames)."""
    count = 1 if frames is None else frames.shape[0]
    return torch.arange(num_samples, device=device) % count


def drawn_frames(inverse: Tensor, num_distinct: int, frames: Tensor | None) -> Tensor | None:
    """(U, F) bool: the frames each of ``num_distinct`` distinct partitions was drawn in, from ``inverse`` (S,),
    each sample's distinct partition (``samples.unique(dim=0, return_inverse=True)``), sample s drawn in frame
    s % F (:func:`sample_frames`); None without frames."""
    if frames is None:
        return None
    drawn = torch.zeros(num_distinct, frames.shape[0], dtype=torch.bool, device=inverse.device)
    return drawn.index_put_((inverse, sample_frames(inverse.shape[0], frames, inverse.device)),
                            torch.tensor(True, device=inverse.device))


def framed(x: Tensor, mask: Tensor, frames: Tensor | None, dataset: Tensor, frame: Tensor
           ) -> tuple[Tensor, Tensor, Tensor]:
    """Data sets (B, N, D) copied into every frame (B * F, N, D) with their masks, and the row each thread
    reads: data set ``dataset[t]`` seen in frame ``frame[t]`` (from :func:`sample_frames`). Without frames,
    everything unchanged."""
    if frames is None:
        return x, mask, dataset
    if frames.dim() != 3 or frames.shape[-1] != x.shape[-1] or frames.shape[-2] != x.shape[-1]:
        raise ValueError(f"frames must have shape (F, {x.shape[-1]}, {x.shape[-1]}), got {tuple(frames.shape)}")
    count = frames.shape[0]
    rotated = torch.einsum("bnd,fed->bfne", x, frames.to(x)).flatten(0, 1)
    return rotated, mask.repeat_interleave(count, 0), dataset * count + frame


def frames_for(model: Any, num_points: int, num_threads: int, generator: torch.Generator | None = None,
               device: torch.device | str | None = None, symmetrize: bool | None = None) -> Tensor | None:
    """The frames :func:`pyro_acp.infer` uses for ``num_threads`` samples of an N-point data set of ``model``.

    ``symmetrize``: None averages over frames when the model is rotation invariant, True insists (an error
    for other models), False never. Returns None (the data as given) when off or when one frame fits.
    """
    invariant = is_rotation_invariant(model)
    if symmetrize and not invariant:
        raise ValueError(f"symmetrize=True needs a rotation-invariant model (isotropic mixtures); "
                         f"{type(model).__name__} is not")
    count = num_frames(num_points, num_threads)
    if symmetrize is False or not invariant or count == 1:
        return None
    return random_frames(count, model.data_dim, generator=generator, device=device)
