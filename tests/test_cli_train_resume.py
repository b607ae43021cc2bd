"""``pyro-acp train --resume`` builds the guide the checkpoint's card records, not the --guide / --hidden-dim
defaults; given architecture options that disagree with the card, or another model, are refused in one line
before any training.

Before: ``--resume`` on a checkpoint of an ACP with hidden_dim 16 built the default ACPS with hidden_dim 128
and failed with "does not match" (so a guide trained with other options could only be resumed by retyping
them exactly).
"""

import shutil

import pytest

import pyro_acp
from pyro_acp.cli import main
from pyro_acp.pretrained.checkpoint import load_guide, read_card

SMALL = ["--batch-size", "4", "--num-particles", "2", "--num-points", "3", "10", "--validate-every", "0"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """An ACP with hidden_dim 16, trained 2 steps (once for the module)."""
    path = tmp_path_factory.mktemp("trained") / "g.pt"
    assert main(["train", "--guide", "ACP", "--hidden-dim", "16", "--steps", "2", "--output", str(path), *SMALL]) == 0
    return path


@pytest.fixture
def checkpoint(trained, tmp_path, capsys):
    """A copy of that checkpoint (weights and card) for one test."""
    for file in (trained, trained.with_suffix(".json")):
        shutil.copy(file, tmp_path / file.name)
    capsys.readouterr()
    return tmp_path / trained.name


def test_resume_builds_the_guide_the_card_records(checkpoint, capsys):
    assert main(["train", "--resume", "--steps", "3", "--output", str(checkpoint), *SMALL]) == 0
    assert "trained 1 more step (3 in all)" in capsys.readouterr().out
    guide, card = load_guide(checkpoint)
    assert card["guide"]["type"] == "ACP" and card["guide"]["hidden_dim"] == 16
    assert card["training"]["completed_steps"] == 3
    # the same options, given again, agree with the card and are accepted
    assert main(["train", "--resume", "--steps", "4", "--guide", "ACP", "--hidden-dim", "16", "--output",
                 str(checkpoint), *SMALL]) == 0
    assert read_card(checkpoint)["training"]["completed_steps"] == 4


@pytest.mark.parametrize("options, named", [
    (["--hidden-dim", "32"], "--hidden-dim 32"),
    (["--guide", "ACPS"], "--guide ACPS"),
    (["--guide", "CCP", "--hidden-dim", "128"], "--guide CCP and --hidden-dim 128"),
])
def test_resume_refuses_architecture_options_that_disagree_with_the_card(checkpoint, capsys, monkeypatch, options,
                                                                         named):
    def reached(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(pyro_acp, "train", reached)
    before = checkpoint.read_bytes()
    assert main(["train", "--resume", "--steps", "5", *options, "--output", str(checkpoint), *SMALL]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pyro-acp train: error: --resume continues the ACP guide with hidden_dim 16"), err
    assert named in err and "\n" not in err, err
    assert checkpoint.read_bytes() == before


def test_resume_refuses_another_model(checkpoint, capsys, monkeypatch):
    def reached(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(pyro_acp, "train", reached)
    assert main(["train", "--resume", "--steps", "5", "--model-option", "alpha=0.3", "--output", str(checkpoint),
                 *SMALL]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"pyro-acp train: error: cannot resume {checkpoint}: the guide was trained for"), err
    assert "'alpha': 0.3" in err and "\n" not in err


def test_resuming_to_a_larger_total_equals_training_to_it_straight(checkpoint, tmp_path):
    """2 steps, then --resume to 3 in all: the weights of 3 steps straight, bit for bit (the first resumed
    step takes its learning rate from the 3-step schedule, not the rate the 2-step run's schedule ended on)."""
    import torch

    assert main(["train", "--resume", "--steps", "3", "--output", str(checkpoint), *SMALL]) == 0
    straight = tmp_path / "straight.pt"
    assert main(["train", "--guide", "ACP", "--hidden-dim", "16", "--steps", "3", "--output", str(straight),
                 *SMALL]) == 0
    resumed, _ = load_guide(checkpoint)
    reference, _ = load_guide(straight)
    for name, value in reference.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), name
