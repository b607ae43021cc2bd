"""benchmarks/train_graph_guides.py at its --dry-run size: trains, checkpoints, resumes and evaluates."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from pyro_acp.models import LogDegreeSBM
from pyro_acp.pretrained.checkpoint import load_guide

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "train_graph_guides.py"


def _script():
    if "train_graph_guides" not in sys.modules:  # its dataclasses need the module registered
        spec = importlib.util.spec_from_file_location("train_graph_guides", SCRIPT)
        sys.modules["train_graph_guides"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules["train_graph_guides"])
    return sys.modules["train_graph_guides"]


def test_the_shipped_settings_are_the_papers():
    settings = _script().SETTINGS
    assert settings["logdegree"].model == LogDegreeSBM(num_blocks=(2, 3, 4), a=(1, 30), b=(1, 10))
    assert settings["logdegree"].num_points == (300, 600) and settings["sbm"].num_points == (50, 300)
    assert all(s.guide["hidden_dim"] == 128 and s.guide["encoder_layers"] == 4 for s in settings.values())
    assert settings["cluster"].guide["label_slots"] == 6 and "label_slots" not in settings["sbm"].guide


@pytest.mark.slow
def test_dry_run_trains_resumes_and_writes_the_card_figures(tmp_path):
    script = _script()
    first = script.main(["--guide", "sbm", "--dry-run", "--out", str(tmp_path)])
    path = Path(first["path"])
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["training"]["completed_steps"] == 2 and card["model"]["type"] == "SBM"
    assert 0.0 <= abs(card["evaluation"]["mean_ami_of_map"]) <= 1 and card["evaluation"]["graphs"] == 2
    with pytest.raises(SystemExit):  # an existing checkpoint is never overwritten
        script.main(["--guide", "sbm", "--dry-run", "--out", str(tmp_path)])
    script.main(["--guide", "sbm", "--dry-run", "--out", str(tmp_path), "--resume", "--steps", "3"])
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["training"]["completed_steps"] == 3
    guide, _ = load_guide(path)
    assert guide.encodes_graphs and guide.config["hidden_dim"] == 8
