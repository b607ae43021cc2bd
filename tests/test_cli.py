import json

import numpy as np

from pyro_acp.cli import main


def test_infer_command_writes_labels_summary_and_figure(tmp_path):
    points = np.concatenate([np.random.default_rng(0).normal(c, 1.0, size=(15, 2)) for c in (-10, 0, 10)])
    np.savetxt(tmp_path / "points.csv", points, delimiter=",", header="a,b", comments="")
    assert main(["infer", str(tmp_path / "points.csv"), "--num-samples", "10", "--no-train",
                 "--output", str(tmp_path / "out")]) == 0
    labels = np.loadtxt(tmp_path / "out" / "labels.csv", delimiter=",", skiprows=1)
    assert labels.shape == (45, 2)
    assert len(np.unique(labels[:, 0])) == 3
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["num_points"] == 45
    assert (tmp_path / "out" / "posterior.png").stat().st_size > 0


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
