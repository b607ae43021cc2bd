"""Semi-supervised anchors (the CLUSTER setting of the ACP paper): training on batches whose first clusters are
labelled through one node each, and sampling with some points' labels known (:meth:`with_anchors`).

A mixin of :class:`~pyro_acp.guides.clusterwise.ClusterwiseGuide`: it reads the guide's ``label_slots`` and its
sampling rounds (:class:`~pyro_acp.guides.steps.SamplingRound`), and the guide's sampling hooks call
:meth:`_anchor_round` and :meth:`_constrain_to_anchors`.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from pyro_acp.data.batch import Batch
from pyro_acp.guides.steps import SamplingRound

if TYPE_CHECKING:
    from pyro_acp.guides.clusterwise import ClusterwiseGuide


class SemiSupervisedAnchors:
    """Labelled anchors for a clusterwise guide (module docstring); ``label_slots`` 0 means unsupervised."""

    label_slots: int

    def labelled_view(self, batch: Batch) -> tuple[Batch, Tensor]:
        """The batch as a semi-supervised guide trains on it, and the label slots (B, N) of its labelled nodes.

        As in the semi-supervised setting of the ACP paper (CLUSTER), up to ``label_slots`` clusters of each
        data set are labelled through one node each, their anchor (uniform among the members): those
        clusters come first, in a uniformly random order, the others after them in the batch's order, and
        the labelled anchors carry label slots in a random permutation (so a slot says which nodes share a
        label, not when the cluster is visited). The randomness comes from a generator seeded by the
        batch's own anchors, so the model and the guide of one SVI step see the same view.
        """
        device = batch.mask.device
        anchors = batch.anchor.flatten().nonzero().flatten()
        generator = torch.Generator(device).manual_seed(int((anchors * 2654435761).sum()) % 2**62)
        num_sets, num_steps = batch.step_mask.shape
        keys = torch.rand(num_sets, num_steps, generator=generator, device=device)
        chosen = (keys.masked_fill(~batch.step_mask, 2.0).argsort(-1).argsort(-1) < self.label_slots)
        chosen &= batch.step_mask
        index = torch.arange(num_steps, device=device, dtype=keys.dtype)
        order = torch.where(chosen, keys, 1.0 + index).argsort(-1)  # order[b, k]: old step now visited k-th

        def reordered(masks: Tensor) -> Tensor:
            return masks.gather(1, order.unsqueeze(-1).expand_as(masks))

        members, anchor, step_mask = reordered(batch.members), reordered(batch.anchor), batch.step_mask.gather(1, order)
        counts = members.long()
        assigned = (counts.cumsum(1) - counts).bool() & step_mask.unsqueeze(-1)
        available = batch.mask.unsqueeze(1) & ~assigned & ~anchor & step_mask.unsqueeze(-1)
        position = order.argsort(-1)
        labels = torch.where(batch.labels >= 0, position.gather(1, batch.labels.clamp(min=0)), batch.labels)
        slots = torch.rand(num_sets, self.label_slots, generator=generator, device=device).argsort(-1)
        width = min(self.label_slots, num_steps)
        step_slot = torch.full((num_sets, num_steps), -1, dtype=torch.long, device=device)
        step_slot[:, :width] = torch.where(chosen.sum(-1, keepdim=True) > torch.arange(width, device=device),
                                           slots[:, :width], -1)
        node_labels = ((step_slot + 1).unsqueeze(-1) * anchor).sum(1) - 1
        view = replace(batch, labels=labels, anchor=anchor, available=available, members=members,
                       assigned=assigned, step_mask=step_mask)
        return view, node_labels

    def with_anchors(self, labels: Tensor, new_clusters: bool = True) -> ClusterwiseGuide:
        """This guide (a shallow copy sharing its weights) sampling with some points' labels known.

        ``labels`` (N,) or (B, N): a class 0..L-1 for every labelled point, -1 for the others. Each sample
        visits the L classes in a uniformly random order; round k anchors its cluster at a uniformly drawn
        labelled point of its class, puts the class's other labelled points in it and keeps every other
        labelled point out; the unlabelled points join as the guide decides. Afterwards, with
        ``new_clusters`` the remaining points form further clusters as usual; without, the last labelled
        round takes every point still unassigned (the partition then has exactly L clusters: given the
        first L - 1, the last is determined). Sampling only: training and log-probability estimates use the
        guide as it is.
        """
        labels = torch.as_tensor(labels, dtype=torch.long)
        if labels.dim() not in (1, 2) or labels.numel() == 0 or (labels < -1).any():
            raise ValueError("anchor labels must be (N,) or (B, N) integers, a class >= 0 or -1 for unlabelled")
        if not (labels >= 0).any():
            raise ValueError("anchor labels mark no labelled point")
        classes = int(labels.max()) + 1
        rows = labels.reshape(-1, labels.shape[-1])
        present = (rows.unsqueeze(-1) == torch.arange(classes, device=rows.device)).any(-2)  # (B, L)
        if not present.all():
            raise ValueError(f"anchor classes must be numbered 0..{classes - 1} with a labelled point each")
        if self.label_slots and classes > self.label_slots:
            raise ValueError(f"{classes} labelled classes, but this guide tells apart at most {self.label_slots} "
                             f"(its label_slots)")
        anchored = copy.copy(self)
        anchored._anchors = {"labels": labels.reshape(-1, labels.shape[-1]), "new_clusters": bool(new_clusters),
                             "order": None}
        return anchored

    def _anchor_round(self, state: SamplingRound, generator: torch.Generator | None = None,
                      draw_order: bool = False) -> tuple[Tensor, Tensor] | None:
        """(labels of the running threads (T, N), the class (T,) of this round) in a labelled round, else None.

        ``draw_order`` (round 0, where every thread runs): first draw each thread's order of the classes.
        """
        anchors = getattr(self, "_anchors", None)
        if anchors is None:
            return None
        labels = anchors["labels"].to(state.unassigned.device)
        classes = int(labels.max()) + 1
        if draw_order and state.step == 0:
            keys = torch.rand(state.thread.shape[0], classes, generator=generator, device=labels.device)
            anchors["order"] = keys.argsort(-1)
        if state.step >= classes:
            return None
        if labels.shape[0] == 1:
            labels = labels.expand(state.dataset.max() + 1, -1)
        return labels[state.dataset], anchors["order"][state.thread, state.step]

    def _constrain_to_anchors(self, state: SamplingRound, members: Tensor, labelled) -> Tensor:
        """Members of a labelled round: the class's labelled points in, other labelled points out; without
        new clusters, everything left in the last labelled round."""
        labels, current = labelled
        anchors = self._anchors
        if not anchors["new_clusters"] and state.step == int(anchors["labels"].max()):
            return state.unassigned.clone()
        same = labels == current.unsqueeze(-1)
        return (members & (labels < 0)) | (same & state.unassigned)
