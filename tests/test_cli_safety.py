"""The command line never overwrites without asking and refuses bad requests with one line, before any work.

Each refusal is checked to happen before training / inference starts: ``pyro_acp.train`` and ``pyro_acp.infer``
are replaced by stubs that fail the test when they are reached.
"""

import json

import numpy as np
import pytest
import torch

import pyro_acp
from pyro_acp.cli import main

SMALL = ["--hidden-dim", "16", "--batch-size", "4", "--num-particles", "2", "--num-points", "3", "10",
         "--validate-every", "0"]


@pytest.fixture
def no_work(monkeypatch):
    """Any training or inference reached is a test failure."""

    def reached(*args, **kwargs):
        raise AssertionError("the command started work it should have refused")

    monkeypatch.setattr(pyro_acp, "train", reached)
    monkeypatch.setattr(pyro_acp, "infer", reached)


def one_line_error(capsys, command: str, out: str = "") -> str:
    captured = capsys.readouterr()
    assert captured.out == out, captured.out  # nothing reported as done
    err = captured.err.strip()
    assert err.startswith(f"pyro-acp {command}: error:"), err
    assert "\n" not in err and "Traceback" not in err, err
    return err


def write_points(path):
    points = np.concatenate([np.random.default_rng(0).normal(c, 1.0, size=(10, 2)) for c in (-10, 10)])
    np.savetxt(path, points, delimiter=",")
    return path


def write_checkpoint(path, completed_steps: int):
    """A real (small) checkpoint whose card records ``completed_steps``."""
    from pyro_acp.guides import ACPS
    from pyro_acp.models import CRPGaussianMixture
    from pyro_acp.pretrained.checkpoint import save_checkpoint

    save_checkpoint(path, ACPS(2, hidden_dim=16), {"model": CRPGaussianMixture().config(),
                                                   "training": {"completed_steps": completed_steps}})
    return path


# ---------------------------------------------------------------------- item 6: nothing overwritten silently


def test_train_refuses_to_overwrite_a_checkpoint_without_overwrite(tmp_path, capsys, no_work):
    weights, card = tmp_path / "g.pt", tmp_path / "g.json"
    weights.write_bytes(b"old weights")
    card.write_text("{}")
    assert main(["train", "--steps", "1", "--output", str(weights), *SMALL]) == 2
    err = one_line_error(capsys, "train")
    assert "already exist" in err and "--overwrite" in err and "--resume" in err
    assert weights.read_bytes() == b"old weights" and card.read_text() == "{}"
    weights.unlink()  # the card alone is protected too: it would be replaced
    assert main(["train", "--steps", "1", "--output", str(weights), *SMALL]) == 2
    assert "g.json" in one_line_error(capsys, "train") and card.read_text() == "{}"


def test_train_overwrite_flag_replaces_the_checkpoint(tmp_path, capsys):
    from pyro_acp.pretrained.checkpoint import read_card

    weights = tmp_path / "g.pt"
    weights.write_bytes(b"old weights")
    assert main(["train", "--steps", "1", "--output", str(weights), "--overwrite", *SMALL]) == 0
    assert read_card(weights)["training"]["completed_steps"] == 1
    capsys.readouterr()
    assert main(["train", "--steps", "1", "--output", str(weights), "--overwrite", "--resume", *SMALL]) == 2
    assert "pick one" in one_line_error(capsys, "train")


def test_resume_refuses_when_the_checkpoint_already_has_the_steps(tmp_path, capsys, no_work):
    weights = write_checkpoint(tmp_path / "g.pt", completed_steps=40)
    before = weights.read_bytes()
    for steps in ("10", "40"):
        assert main(["train", "--resume", "--steps", steps, "--output", str(weights), *SMALL]) == 2
        err = one_line_error(capsys, "train")  # and no "trained 10 steps" on stdout
        assert "already has 40" in err and "--steps" in err
    assert weights.read_bytes() == before
    assert main(["train", "--resume", "--steps", "50", "--output", str(tmp_path / "missing.pt"), *SMALL]) == 2
    assert "does not exist" in one_line_error(capsys, "train")


def test_resume_reports_the_steps_it_actually_trained(tmp_path, capsys):
    weights = tmp_path / "g.pt"
    assert main(["train", "--steps", "2", "--output", str(weights), *SMALL]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", "--steps", "3", "--output", str(weights), *SMALL]) == 0
    out = capsys.readouterr().out
    assert "trained 1 more step" in out and "3 in all" in out


def test_infer_refuses_to_replace_files_in_the_output_folder(tmp_path, capsys, no_work):
    points = write_points(tmp_path / "points.csv")
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text("keep")
    (out / "notes.txt").write_text("mine")
    assert main(["infer", str(points), "--no-train", "--output", str(out)]) == 2
    err = one_line_error(capsys, "infer")
    assert "summary.json" in err and "--overwrite" in err and "notes.txt" not in err
    assert (out / "summary.json").read_text() == "keep" and sorted(p.name for p in out.iterdir()) == [
        "notes.txt", "summary.json"]


def test_infer_overwrite_flag_replaces_only_its_own_files(tmp_path):
    points = write_points(tmp_path / "points.csv")
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text("keep")
    (out / "notes.txt").write_text("mine")
    assert main(["infer", str(points), "--no-train", "--num-samples", "4", "--output", str(out),
                 "--overwrite"]) == 0
    assert json.loads((out / "summary.json").read_text())["num_points"] == 20
    assert (out / "notes.txt").read_text() == "mine" and (out / "labels.csv").exists()


# ---------------------------------------------------------------------- item 8: one line, before any work


def test_infer_output_naming_a_file_is_refused_before_inference(tmp_path, capsys, no_work):
    points = write_points(tmp_path / "points.csv")
    target = tmp_path / "result.txt"
    target.write_text("keep")
    assert main(["infer", str(points), "--no-train", "--output", str(target)]) == 2
    assert "is a file" in one_line_error(capsys, "infer") and target.read_text() == "keep"
    assert main(["infer", str(points), "--no-train", "--output", str(target / "sub")]) == 2
    assert "is a file" in one_line_error(capsys, "infer")


def test_train_output_that_cannot_be_written_is_refused_before_training(tmp_path, capsys, no_work):
    assert main(["train", "--steps", "1", "--output", str(tmp_path), *SMALL]) == 2
    assert "folder" in one_line_error(capsys, "train")
    (tmp_path / "file").write_text("x")
    assert main(["train", "--steps", "1", "--output", str(tmp_path / "file" / "g.pt"), *SMALL]) == 2
    assert "is a file" in one_line_error(capsys, "train")
    assert main(["train", "--steps", "1", "--output", str(tmp_path / "g.json"), *SMALL]) == 2
    assert ".json" in one_line_error(capsys, "train")


def test_input_path_that_is_a_directory(tmp_path, capsys, no_work):
    assert main(["infer", str(tmp_path), "--no-train", "--output", str(tmp_path / "out")]) == 2
    assert "is a folder" in one_line_error(capsys, "infer")
    points = write_points(tmp_path / "points.csv")
    assert main(["infer", str(points), "--guide", str(tmp_path), "--output", str(tmp_path / "out")]) == 2
    assert "is a folder" in one_line_error(capsys, "infer")
    assert main(["train", "--steps", "1", "--init", str(tmp_path), "--output", str(tmp_path / "g.pt")]) == 2
    assert "is a folder" in one_line_error(capsys, "train")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_cuda_is_one_line_before_any_work(tmp_path, capsys, no_work):
    points = write_points(tmp_path / "points.csv")
    assert main(["train", "--device", "cuda", "--steps", "1", "--output", str(tmp_path / "g.pt"), *SMALL]) == 2
    assert "no CUDA device" in one_line_error(capsys, "train")
    assert main(["infer", str(points), "--device", "cuda", "--output", str(tmp_path / "out")]) == 2
    assert "no CUDA device" in one_line_error(capsys, "infer")
    assert main(["infer", str(points), "--device", "banana", "--output", str(tmp_path / "out")]) == 2
    assert "banana" in one_line_error(capsys, "infer")
    assert not (tmp_path / "g.pt").exists() and not (tmp_path / "out").exists()


def test_check_device(monkeypatch):
    from pyro_acp.validation import check_device

    assert check_device(None) == torch.device("cpu")
    assert check_device("cpu") == torch.device("cpu")
    assert check_device(torch.device("cpu")) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for asked in ("cuda", "cuda:0", torch.device("cuda")):
        with pytest.raises(ValueError, match=r"device 'cuda(:0)?' was asked for but torch finds no CUDA device"):
            check_device(asked)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert check_device("cuda") == torch.device("cuda")
    assert check_device("cuda:0") == torch.device("cuda:0")
    assert check_device(torch.device("cuda", 0)) == torch.device("cuda:0")
    with pytest.raises(ValueError, match="cuda:1.*1 CUDA device"):
        check_device("cuda:1")
    for nonsense in ("banana", "cuda:x", "", "gpu"):
        with pytest.raises(ValueError, match="device"):
            check_device(nonsense)
    with pytest.raises(TypeError, match="device"):
        check_device(3.5)


# ---------------------------------------------------------------------- item 9: non-positive numbers


@pytest.mark.parametrize("flag, value", [("--hidden-dim", "0"), ("--hidden-dim", "-8"), ("--steps", "0"),
                                         ("--batch-size", "0"), ("--num-particles", "0"),
                                         ("--checkpoint-every", "0"), ("--validate-every", "-1")])
def test_train_refuses_non_positive_numbers(tmp_path, capsys, no_work, flag, value):
    # argparse keeps the last value given
    assert main(["train", "--steps", "1", "--output", str(tmp_path / "g.pt"), *SMALL, flag, value]) == 2
    err = one_line_error(capsys, "train")
    assert flag in err and value in err
    assert list(tmp_path.iterdir()) == []


def test_train_refuses_a_bad_num_points_range_and_a_hidden_dim_the_heads_do_not_divide(tmp_path, capsys, no_work):
    assert main(["train", "--steps", "1", "--output", str(tmp_path / "g.pt"), *SMALL, "--num-points", "5", "5"]) == 2
    assert "--num-points" in one_line_error(capsys, "train")
    assert main(["train", "--steps", "1", "--output", str(tmp_path / "g.pt"), *SMALL, "--hidden-dim", "6"]) == 2
    assert "--hidden-dim 6" in one_line_error(capsys, "train")  # the guide's own reason, naming the flag
    assert list(tmp_path.iterdir()) == []


def test_infer_and_demo_refuse_non_positive_numbers(tmp_path, capsys, no_work):
    points = write_points(tmp_path / "points.csv")
    assert main(["infer", str(points), "--num-samples", "0", "--output", str(tmp_path / "out")]) == 2
    assert "--num-samples" in one_line_error(capsys, "infer")
    assert main(["demo", "--num-points", "0", "--output", str(tmp_path / "d.png")]) == 2
    assert "--num-points" in one_line_error(capsys, "demo")
    assert main(["demo", "--gibbs-samples", "-1", "--output", str(tmp_path / "d.png")]) == 2
    assert "--gibbs-samples" in one_line_error(capsys, "demo")
    assert main(["demo", "--output", str(tmp_path)]) == 2
    assert "folder" in one_line_error(capsys, "demo")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["points.csv"]
