"""The shipped CLUSTER guides (ACP-S + GatedGCN, width 64, for PlantedPartition() at its defaults): the registry
serves the semi-supervised one when labels are given and the unsupervised one otherwise, and on a held-out
CLUSTER graph each, with refined_map, recovers the communities far above chance (1/6)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_mutual_info_score

import pyro_acp
from pyro_acp.models import PlantedPartition
from pyro_acp.posteriors.graph import balanced_accuracy, labelled_classes
from pyro_acp.pretrained.registry import find_guide, is_complete
from tests.helpers import shipped_guide

SEMI, UNSUPERVISED = "cluster_acps_gatedgcn64", "cluster_unsupervised_acps_gatedgcn64"
EVAL_SEED = 9_000_000  # the evaluation graphs of benchmarks/train_graph_guides.py; training never draws them


def _held_out(seed: int):
    batch = PlantedPartition().simulate(1, seed=seed)
    n = int(batch.num_points[0])
    return batch.adjacency[0, :n, :n], batch.labels[0, :n].numpy()


def test_the_registry_serves_each_for_its_use():
    semi, semi_card = shipped_guide(SEMI)
    unsupervised, unsupervised_card = shipped_guide(UNSUPERVISED)
    assert is_complete(semi_card) and semi_card["guide"]["label_slots"] == 6
    assert is_complete(unsupervised_card) and unsupervised_card["guide"].get("label_slots", 0) == 0
    assert find_guide(PlantedPartition(), semi_supervised=True) == semi
    assert find_guide(PlantedPartition()) == unsupervised
    assert find_guide(PlantedPartition(p_in=0.6)) not in (semi, unsupervised)  # another model: not served
    assert semi_card["evaluation"]["balanced_accuracy_of_refined_map"] > 0.5
    assert unsupervised_card["evaluation"]["mean_ami_of_refined_map"] > 0.5


@pytest.mark.slow
def test_both_recover_a_held_out_graph_with_refined_map():
    adjacency, truth = _held_out(EVAL_SEED + 1)  # N = 128
    rng = np.random.default_rng(0)
    labelled = {int(rng.choice(np.flatnonzero(truth == c))): int(c) for c in np.unique(truth)}
    options = {"num_samples": 50, "seed": 0, "progress_bar": False, "train": False}
    semi = pyro_acp.infer(PlantedPartition(), adjacency, labelled=labelled, new_clusters=False, **options)
    refined = semi.refined_map()
    classes = labelled_classes(semi, refined)
    assert all(classes[node] == label for node, label in labelled.items())  # the labelled nodes kept in place
    assert balanced_accuracy(semi, truth.tolist(), refined) > 0.7
    unsupervised = pyro_acp.infer(PlantedPartition(), adjacency, estimate_log_prob=False, **options)
    assert adjusted_mutual_info_score(truth, unsupervised.refined_map().numpy()) > 0.6
