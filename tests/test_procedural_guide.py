"""The shipped NOC guide for ProceduralCatalog(): the registry finds it by its card, infer uses it, and its
samples follow the rules far more often than those of the same guide at its initial weights."""

import copy
import warnings

import pytest
import torch

import pyro_acp
from pyro_acp.diagnostics.ordered_metrics import catalog_scores
from pyro_acp.models import ProceduralCatalog
from pyro_acp.posteriors import OrderedClusteringPosterior
from pyro_acp.pretrained.checkpoint import load_guide
from pyro_acp.pretrained.registry import find_guide
from tests.helpers import shipped_guide

SHIPPED = "procedural_catalog"
SEED = 4242  # fresh catalogs: training batches come from the 63-bit seed stream of train(seed=0)


def test_the_registry_serves_the_shipped_guide_for_the_default_rules():
    path, card = shipped_guide(SHIPPED)
    assert find_guide(ProceduralCatalog()) == path
    other = {**copy.deepcopy(ProceduralCatalog().rules.raw), "num_tokens": [35, 45]}
    assert find_guide(ProceduralCatalog(other)) != path  # other rules: another model, not served
    assert card["guide"]["type"] == "NOC" and card["model"] == {"type": "ProceduralCatalog", "rules": None}
    assert card["training"]["completed_steps"] == card["training"]["steps"]
    table = card["evaluation"]["table"]
    assert {"NOC (one sample)", "ACP + pointer (one sample)", "rule-aware heuristic"} <= set(table)
    assert all(0 <= row["compositional"] <= 1 and 0 <= row["structural"] <= 1 for row in table.values())


def _mean_scores(model, guide, catalogs) -> torch.Tensor:
    """(compositional, structural) averaged over 20 posterior samples of each catalog."""
    scores = []
    for x in catalogs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the untrained guide is served with a warning
            post = pyro_acp.infer(model, x, guide=guide, num_samples=20, seed=0, progress_bar=False,
                                  estimate_log_prob=False)
        s = catalog_scores(x, post.samples, model)
        scores.append(torch.stack([s.compositional.mean(), s.structural.mean()]))
    return torch.stack(scores).mean(0)


@pytest.mark.slow
def test_infer_uses_the_shipped_guide_and_beats_its_initial_weights():
    model = ProceduralCatalog()
    path, _ = shipped_guide(SHIPPED)
    batch = model.simulate(4, seed=SEED)
    catalogs = [batch.unpadded(b)[0] for b in range(batch.batch_size)]
    found = pyro_acp.infer(model, catalogs[0], num_samples=20, seed=0, progress_bar=False, estimate_log_prob=False)
    assert isinstance(found, OrderedClusteringPosterior)
    guide = load_guide(path)[0]
    given = pyro_acp.infer(model, catalogs[0], guide=guide, num_samples=20, seed=0, progress_bar=False,
                           estimate_log_prob=False)
    assert torch.equal(found.samples, given.samples)  # infer found this very guide
    options = {k: v for k, v in guide.config.items() if k not in ("type", "data_dim")}
    with torch.random.fork_rng():
        torch.manual_seed(0)
        untrained = type(guide)(guide.data_dim, **options).eval()
    trained, initial = _mean_scores(model, guide, catalogs), _mean_scores(model, untrained, catalogs)
    # measured: trained (0.62, 0.60) against initial (0.09, 0.08)
    assert (trained > initial + 0.3).all(), (trained, initial)
