import json
import warnings

import numpy as np
import pytest
import torch

from pyro_acp.cli import main


def test_infer_command_writes_labels_summary_and_figure(tmp_path):
    points = np.concatenate([np.random.default_rng(0).normal(c, 1.0, size=(15, 2)) for c in (-10, 0, 10)])
    np.savetxt(tmp_path / "points.csv", points, delimiter=",", header="a,b", comments="")
    assert main(["infer", str(tmp_path / "points.csv"), "--num-samples", "10", "--no-train",
                 "--output", str(tmp_path / "out")]) == 0
    table = tmp_path / "out" / "labels.csv"
    labels = np.loadtxt(table, delimiter=",", skiprows=1).astype(int)
    assert table.read_text().splitlines()[0] == "map,point_estimate,refined_map"  # NIW: a conjugate model
    assert labels.shape == (45, 3)
    assert len(np.unique(labels[:, 0])) == 3
    from pyro_acp.pretrained.registry import default_model_for_width

    model = default_model_for_width(2)
    z = model.check_data(points)
    map_joint, refined_joint = (float(model.log_joint(z, torch.as_tensor(labels[:, [c]].T))) for c in (0, 2))
    assert refined_joint >= map_joint - 1e-6  # the ascent never lowers the exact log joint
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["num_points"] == 45
    assert (tmp_path / "out" / "posterior.png").stat().st_size > 0


def test_a_table_of_a_width_without_a_shipped_guide_gets_the_niw_model_of_that_width(tmp_path, capsys):
    """Three columns, and one value per point: NIWGaussianMixture(dim=3 / 1), whose guide is not
    shipped, so --no-train says there is none for that model (it was CRPGaussianMixture(dim=2): 'x must have
    shape (N, 2)')."""
    rng = np.random.default_rng(0)
    points = np.concatenate([rng.normal(c, 1.0, size=(10, 3)) for c in (0, 8)]) * [1.0, 100.0, 0.01]
    for name, table in (("three", points), ("one", points[:, 0])):
        np.savetxt(tmp_path / f"{name}.csv", table, delimiter=",")
        assert main(["infer", str(tmp_path / f"{name}.csv"), "--no-train", "--output", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert f"no pretrained guide matches NIWGaussianMixture(dim={3 if name == 'three' else 1}," in err, err
    # --model-option without --model applies to that default, not to CRPGaussianMixture
    assert main(["infer", str(tmp_path / "three.csv"), "--model-option", "grid_size=4", "--no-train",
                 "--output", str(tmp_path / "opt")]) == 2
    assert "NIWGaussianMixture(dim=3, " in capsys.readouterr().err


def test_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "bad.csv").write_text("a,b\nx,y\n")
    assert main(["infer", str(tmp_path / "bad.csv"), "--no-train"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pyro-acp infer: error:") and "numeric" in err and "\n" not in err
    np.save(tmp_path / "flat.npy", np.zeros(5))
    assert main(["infer", str(tmp_path / "flat.npy"), "--no-train"]) == 2
    assert "shape" in capsys.readouterr().err
    assert main(["train", "--model-option", "nonsense=1", "--steps", "1"]) == 2
    assert "no hyperparameter 'nonsense'" in capsys.readouterr().err


def test_train_init_fine_tunes_another_guide_and_never_writes_it(tmp_path, capsys):
    import torch

    from pyro_acp.pretrained.checkpoint import load_guide

    small = ["--hidden-dim", "16", "--batch-size", "4", "--num-particles", "2", "--num-points", "3", "10",
             "--validate-every", "0"]
    assert main(["train", "--steps", "2", "--output", str(tmp_path / "base.pt"), *small]) == 0
    before = (tmp_path / "base.pt").read_bytes()
    assert main(["train", "--steps", "2", "--init", str(tmp_path / "base.pt"), "--output",
                 str(tmp_path / "tuned.pt"), "--guide", "CCP", *small]) == 0
    base, _ = load_guide(tmp_path / "base.pt")
    tuned, card = load_guide(tmp_path / "tuned.pt")
    assert type(tuned) is type(base) and card["guide"] == base.config  # architecture from --init, not --guide
    pairs = zip(base.state_dict().values(), tuned.state_dict().values(), strict=True)
    assert any(not torch.equal(a, b) for a, b in pairs)
    assert (tmp_path / "base.pt").read_bytes() == before
    capsys.readouterr()
    assert main(["train", "--steps", "1", "--init", str(tmp_path / "base.pt"), "--output",
                 str(tmp_path / "base.pt")]) == 2
    assert "--init checkpoint" in capsys.readouterr().err and (tmp_path / "base.pt").read_bytes() == before
    assert main(["train", "--steps", "1", "--init", str(tmp_path / "base.pt"), "--model-option", "alpha=2.0",
                 "--output", str(tmp_path / "other.pt")]) == 2
    assert "trained for" in capsys.readouterr().err


def test_infer_without_a_model_uses_the_registry_default_for_the_width(tmp_path, monkeypatch):
    from pyro_acp import cli_models as cli
    from pyro_acp.models import CRPGaussianMixture, NIWGaussianMixture
    from pyro_acp.pretrained import registry

    widths = []

    def chooser(width):
        widths.append(width)
        return CRPGaussianMixture() if width == 2 else None

    monkeypatch.setattr(registry, "default_model_for_width", chooser, raising=False)
    points = np.concatenate([np.random.default_rng(1).normal(c, 1.0, size=(10, 2)) for c in (-10, 10)])
    np.save(tmp_path / "points.npy", points)
    assert main(["infer", str(tmp_path / "points.npy"), "--num-samples", "4", "--no-train", "--output",
                 str(tmp_path / "out")]) == 0
    assert widths == [2]
    # none from the registry: the default model for real data of that width, its guide trained on demand
    assert cli.default_model(3).config() == NIWGaussianMixture(dim=3).config()
    monkeypatch.delattr(registry, "default_model_for_width")
    assert cli.default_model(2).config() == NIWGaussianMixture(dim=2).config()  # a registry without the function


@pytest.mark.parametrize("folder", [False, True])
def test_infer_with_a_guide_and_no_model_uses_the_model_the_guide_was_trained_for(tmp_path, capsys, folder):
    """--guide without --model: the model the guide's card records (here NIWGaussianMixture(dim=3), which no
    width default gives), for a file and for a folder; a card without a model asks for --model."""
    from pyro_acp.guides import ACPS
    from pyro_acp.models import NIWGaussianMixture
    from pyro_acp.pretrained.checkpoint import save_checkpoint
    from pyro_acp.seeding import forked_rng

    model = NIWGaussianMixture(dim=3)
    with forked_rng(0):
        guide = ACPS(3, hidden_dim=16, num_heads=2, num_inducing=4)
    save_checkpoint(tmp_path / "niw3.pt", guide, {"model": model.config()})
    save_checkpoint(tmp_path / "bare.pt", guide, {})
    table = tmp_path / "tables" / "t.csv"
    table.parent.mkdir()
    np.savetxt(table, np.random.default_rng(2).normal(size=(12, 3)) * [1.0, 30.0, 0.1], delimiter=",")
    source = str(table.parent if folder else table)
    out = tmp_path / "out"
    assert main(["infer", source, "--guide", str(tmp_path / "niw3.pt"), "--num-samples", "4", "--no-train",
                 "--output", str(out)]) == 0
    recorded = json.loads((out / ("infer_many.json" if folder else "summary.json")).read_text())["model"]
    assert recorded == model.config(), recorded
    capsys.readouterr()
    assert main(["infer", source, "--guide", str(tmp_path / "bare.pt"), "--num-samples", "4", "--no-train",
                 "--output", str(tmp_path / "out2")]) == 2
    assert "records no model; name it with --model" in capsys.readouterr().err
    # --model-option alone changes the guide's recorded model: here into one it was not trained for
    assert main(["infer", source, "--guide", str(tmp_path / "niw3.pt"), "--model-option", "grid_size=4",
                 "--num-samples", "4", "--no-train", "--output", str(tmp_path / "out3")]) == 2
    assert "the guide was trained for" in capsys.readouterr().err  # the mismatch, named


PROGRAM = """
import pyro, pyro.distributions as dist, torch
from pyro.ops.indexing import Vindex

def mixture(num_points, x=None):
    weights = pyro.sample("w", dist.Dirichlet(torch.ones(2)))
    with pyro.plate("components", 2):
        loc = pyro.sample("loc", dist.Normal(0.0, 3.0))
    with pyro.plate("points", num_points):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("y", dist.Normal(Vindex(loc.unsqueeze(-2))[..., z], 1.0), obs=x)
"""


@pytest.mark.slow
def test_train_a_program_named_module_function_within_a_budget(tmp_path, capsys):
    from pyro_acp.pretrained.checkpoint import read_card

    (tmp_path / "mine.py").write_text(PROGRAM)
    spec = f"{tmp_path / 'mine.py'}:mixture"
    small = ["--hidden-dim", "8", "--batch-size", "4", "--num-particles", "2", "--num-points", "3", "8",
             "--validate-every", "0", "--labels-site", "z", "--obs-site", "y"]
    out = tmp_path / "g.pt"
    assert main(["train", "--program", spec, "--steps", "3", "--train-minutes", "5", "--output", str(out),
                 *small]) == 0
    assert "a budget of 5 min fits 3 of 3 steps" in capsys.readouterr().out
    card = read_card(out)
    assert card["model"]["type"] == "ProgramModel" and card["model"]["program"] == "mixture"
    assert card["model"]["labels_site"] == "z" and card["model"]["num_points_range"] == [3, 8]
    assert card["training"]["max_minutes"] == 5 and card["training"]["completed_steps"] == 3
    for extra, message in ((["--data-dim", "2"], "data_dim=2 but the program's site 'y' draws one value"),
                           (["--model", "CRPGaussianMixture"], "--program names the model"),
                           (["--train-minutes", "0"], "--train-minutes must be a positive number")):
        assert main(["train", "--program", spec, "--steps", "1", "--output", str(tmp_path / "h.pt"), *small,
                     *extra]) == 2
        assert message in capsys.readouterr().err
    assert main(["train", "--data-dim", "2", "--steps", "1", "--output", str(tmp_path / "h.pt")]) == 2
    assert "configure a --program" in capsys.readouterr().err


@pytest.mark.slow
def test_infer_command_reweights_a_small_table_towards_the_invariant_posterior(tmp_path):
    """``--reweight invariant`` on a 7-row table: the weighted posterior of data drawn and then standardised,
    its MAP and point estimate written, no ascent column (the ascent climbs the plain log joint)."""
    points = np.random.default_rng(3).normal(size=(7, 2)) * [1.0, 100.0] + [0.0, 5.0]
    np.savetxt(tmp_path / "small.csv", points, delimiter=",")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the small-table warning is about the plain posterior, not this one
        assert main(["infer", str(tmp_path / "small.csv"), "--num-samples", "200", "--no-train", "--reweight",
                     "invariant", "--output", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "labels.csv").read_text().splitlines()[0] == "map,point_estimate"
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["method"] == "acp+is-invariant" and summary["weighted"] is True
    assert 1 <= summary["effective_sample_size"] <= 200


@pytest.mark.slow
def test_infer_command_on_a_folder_gets_the_model_for_its_width_as_a_file_would(tmp_path):
    """No --model: a folder of 2-column tables gets NIWGaussianMixture(dim=2), as one such table does, so
    ``--reweight invariant`` works on it too (it had CRPGaussianMixture, which refuses it)."""
    folder = tmp_path / "tables"
    folder.mkdir()
    rng = np.random.default_rng(4)
    for name in ("a", "b"):
        np.savetxt(folder / f"{name}.csv", rng.normal(size=(6, 2)) * [1.0, 50.0], delimiter=",")
    assert main(["infer", str(folder), "--num-samples", "32", "--no-train", "--reweight", "invariant",
                 "--output", str(tmp_path / "out")]) == 0
    for name in ("a", "b"):
        summary = json.loads((tmp_path / "out" / name / "summary.json").read_text())["summary"]
        assert summary["method"] == "acp+is-invariant"


def test_infer_command_runs_gibbs_chains_on_from_the_samples(tmp_path, capsys):
    """``--gibbs-sweeps K``: the labels and the summary are those of Gibbs chains started at the guide's samples
    (method "gibbs", one chain per sample), checked for stationarity as infer's samples are; refused for a
    folder, with --reweight, and for a model without collapsed Gibbs statistics, before any work."""
    points = np.concatenate([np.random.default_rng(1).normal(c, 1.0, size=(12, 2)) for c in (-8, 0, 8)])
    np.savetxt(tmp_path / "points.csv", points, delimiter=",")
    out = tmp_path / "out"
    assert main(["infer", str(tmp_path / "points.csv"), "--num-samples", "16", "--gibbs-sweeps", "3", "--no-train",
                 "--output", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "gibbs" and summary["num_samples"] == 16 and summary["stationary"] is not None
    assert np.loadtxt(out / "labels.csv", delimiter=",", skiprows=1).shape == (36, 3)
    capsys.readouterr()
    for extra, message in ((["--reweight", "exact"], "one of --gibbs-sweeps and --reweight"),
                           (["--gibbs-sweeps", "-1"], "--gibbs-sweeps must be")):
        assert main(["infer", str(tmp_path / "points.csv"), "--gibbs-sweeps", "2", *extra, "--output",
                     str(tmp_path / "other")]) == 2
        assert message in capsys.readouterr().err
    folder = tmp_path / "sets"
    folder.mkdir()
    np.savetxt(folder / "a.csv", points, delimiter=",")
    assert main(["infer", str(folder), "--gibbs-sweeps", "2", "--output", str(tmp_path / "many")]) == 2
    assert "single input file" in capsys.readouterr().err
    assert not (tmp_path / "other").exists() and not (tmp_path / "many").exists()
