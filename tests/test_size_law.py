"""How training data sets' sizes are drawn: the uniform law (the default, unchanged) and the log-uniform law
that gives small tables as much of the loss as large ones."""

import json
import math

import pytest
import torch

from pyro_acp.guides import ACPS
from pyro_acp.inference.training import train
from pyro_acp.models import CRPGaussianMixture, NIWGaussianMixture, PlantedPartition
from pyro_acp.models.base import draw_sizes
from pyro_acp.seeding import make_generator


def log_uniform_law(n, lo, hi):
    return torch.log((n + 1) / n) / math.log(hi / lo)


LAWS = {"log-uniform": log_uniform_law,
        "mixed": lambda n, lo, hi: 0.5 * log_uniform_law(n, lo, hi) + 0.5 / (hi - lo)}


@pytest.mark.parametrize("law", sorted(LAWS))
def test_sizes_follow_their_law(law):
    """log-uniform: P(N = n) = log((n + 1) / n) / log(hi / lo) on [lo, hi); mixed: half that, half uniform.
    Every frequency within 4 standard errors."""
    lo, hi, draws = 2, 12, 60_000
    sizes = draw_sizes(lo, hi, draws, law, make_generator(0))
    assert sizes.dtype == torch.long and int(sizes.min()) >= lo and int(sizes.max()) < hi
    frequency = torch.bincount(sizes, minlength=hi)[lo:].double() / draws
    n = torch.arange(lo, hi, dtype=torch.float64)
    expected = LAWS[law](n, lo, hi)
    error = (expected * (1 - expected) / draws).sqrt()
    assert ((frequency - expected).abs() < 4 * error).all(), (frequency, expected)
    if law == "log-uniform":  # the point of the law: each size contributes about as many points (n P(N = n)
        points = n * expected  # within a factor 1.2)
        assert float(points.max() / points.min()) < 1.2


def test_uniform_is_the_default_and_unchanged():
    """The default draws N exactly as torch.randint on the generator did before the law existed."""
    model = CRPGaussianMixture()
    batch = model.simulate(64, num_points=(2, 50), seed=3)
    expected = torch.randint(2, 50, (64,), generator=make_generator(3))
    assert torch.equal(batch.mask.sum(-1), expected)
    assert torch.equal(model.simulate(64, num_points=(2, 50), seed=3, size_law="uniform").x, batch.x)


def test_log_uniform_simulation_is_seeded_and_favours_small_tables():
    model = NIWGaussianMixture(dim=2)
    a = model.simulate(400, num_points=(2, 200), seed=1, size_law="log-uniform")
    b = model.simulate(400, num_points=(2, 200), seed=1, size_law="log-uniform")
    assert torch.equal(a.x, b.x) and torch.equal(a.labels, b.labels)
    small = float((a.mask.sum(-1) < 10).double().mean())  # log(5) / log(100) = 0.35, against 8 / 198 uniform
    assert abs(small - math.log(5) / math.log(100)) < 4 * math.sqrt(0.35 * 0.65 / 400)


def test_training_records_the_law_and_checks_it(tmp_path):
    model = CRPGaussianMixture()
    small = dict(batch_size=4, num_particles=2, num_points=(3, 30), validate_every=0, progress_bar=False, seed=0)
    train(model, ACPS(2, 16), steps=2, checkpoint=tmp_path / "log.pt", size_law="log-uniform", **small)
    assert json.loads((tmp_path / "log.json").read_text())["training"]["size_law"] == "log-uniform"
    train(model, ACPS(2, 16), steps=2, checkpoint=tmp_path / "uni.pt", **small)
    assert "size_law" not in json.loads((tmp_path / "uni.json").read_text())["training"]  # cards as before
    with pytest.raises(ValueError, match="size_law"):
        train(model, ACPS(2, 16), steps=1, size_law="loguniform", **small)


def test_a_law_that_does_not_apply_is_refused():
    """Without a num_points range a planted partition's N is the sum of its block sizes: no law to apply."""
    sbm = PlantedPartition()
    with pytest.raises(ValueError, match="size_law"):
        sbm.simulate(2, seed=0, size_law="log-uniform")
    low, high = sbm.default_num_points
    batch = sbm.simulate(50, num_points=(low, high), seed=0, size_law="log-uniform")
    assert int(batch.mask.sum(-1).min()) >= low and int(batch.mask.sum(-1).max()) < high


def test_cli_train_takes_the_law(tmp_path):
    from pyro_acp.cli import SIZE_LAWS as CLI_LAWS
    from pyro_acp.cli import main
    from pyro_acp.models.base import SIZE_LAWS

    assert CLI_LAWS == SIZE_LAWS  # the CLI names them without importing torch
    small = ["--hidden-dim", "16", "--batch-size", "4", "--num-particles", "2", "--num-points", "3", "10",
             "--validate-every", "0", "--steps", "2"]
    assert main(["train", "--output", str(tmp_path / "g.pt"), "--size-law", "log-uniform", *small]) == 0
    assert json.loads((tmp_path / "g.json").read_text())["training"]["size_law"] == "log-uniform"
    with pytest.raises(SystemExit):  # argparse names the choices
        main(["train", "--output", str(tmp_path / "h.pt"), "--size-law", "1/n", *small])
    assert not (tmp_path / "h.pt").exists()
