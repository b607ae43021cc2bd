"""A guide serves only the model it was trained for; only complete guides come from the cache; bad guide
arguments and missing checkpoint files are named."""

import json
import warnings

import pytest
import torch

import pyro_acp
from pyro_acp.cli import main as cli_main
from pyro_acp.guides import ACP, ACPS, CCP
from pyro_acp.inference import on_demand as on_demand_module
from pyro_acp.inference.on_demand import TimeEstimate, resolve_guide, train_for_model
from pyro_acp.inference.training import EarlyStopping, train
from pyro_acp.models import CRPGaussianMixture
from pyro_acp.pretrained.checkpoint import load_guide
from pyro_acp.pretrained.registry import ShortTrainingWarning, cache_dir, model_key
from tests.helpers import StopTraining, stop_after

SMALL = {"batch_size": 4, "num_particles": 2, "num_points": (3, 12), "validation_size": 4, "validate_every": 2,
         "progress_bar": False, "seed": 7}


@pytest.fixture(scope="module")
def x():
    return CRPGaussianMixture().simulate(1, num_points=12, seed=3).unpadded(0)[0]


def on_demand_path(model):
    return cache_dir() / f"{type(model).__name__}-{model_key(model)}.pt"


def _no_untrained_warning(record) -> bool:
    return not [w for w in record if "no record of the model" in str(w.message)]


# ---------------------------------------------------------------- item 4: guide objects carry their model


def test_a_guide_object_trained_for_another_model_is_refused(x):
    model = CRPGaussianMixture()
    guide = ACPS(2, 16)
    assert guide.trained_for is None  # fresh: trained for nothing yet
    train(model, guide, steps=1, **SMALL)
    assert guide.trained_for == model.config()
    other = CRPGaussianMixture(alpha=0.3, sigma=5)
    with pytest.raises(ValueError, match="trained for") as err:
        pyro_acp.infer(other, x, guide=guide, num_samples=4, seed=0, progress_bar=False)
    message = str(err.value)
    assert "'alpha': 0.7" in message and "'alpha': 0.3" in message and "pyro_acp.train" in message
    with warnings.catch_warnings(record=True) as record:  # its own model: served, without a warning
        warnings.simplefilter("always")
        post = pyro_acp.infer(model, x, guide=guide, num_samples=4, seed=0, progress_bar=False)
    assert post.samples.shape == (4, 12) and _no_untrained_warning(record)


def test_loaded_guides_carry_the_model_of_their_card(x, tmp_path):
    shipped = resolve_guide(CRPGaussianMixture(), train=False)
    assert shipped.trained_for == CRPGaussianMixture().config()
    with pytest.raises(ValueError, match="alpha"):
        pyro_acp.infer(CRPGaussianMixture(alpha=0.3, sigma=5), x, guide=shipped, train=False, progress_bar=False)
    model = CRPGaussianMixture(alpha=2.0)
    train(model, ACPS(2, 16), steps=1, checkpoint=tmp_path / "g.pt", **SMALL)
    loaded, card = load_guide(tmp_path / "g.pt")
    assert loaded.trained_for == card["model"] == model.config()
    with pytest.raises(ValueError, match="alpha"):
        pyro_acp.infer(CRPGaussianMixture(), x, guide=loaded, progress_bar=False)


def test_an_untrained_guide_is_used_with_a_warning(x):
    with pytest.warns(UserWarning, match="no record of the model"):
        post = pyro_acp.infer(CRPGaussianMixture(), x, guide=ACPS(2, 16), num_samples=4, seed=0,
                              progress_bar=False)
    assert post.samples.shape == (4, 12)


# ---------------------------------------------------------------- item 5: interrupted on-demand training


@pytest.fixture
def tiny_on_demand(tmp_path, monkeypatch):
    monkeypatch.setenv("PYRO_ACP_CACHE", str(tmp_path))
    monkeypatch.setattr(on_demand_module, "ON_DEMAND_GUIDE", {"hidden_dim": 8})
    monkeypatch.setattr(on_demand_module, "ON_DEMAND_TRAINING",
                        {"steps": 4, "batch_size": 4, "num_particles": 2, "lr": 1e-3, "num_points": (3, 12),
                         "validation_size": 4})
    return CRPGaussianMixture(alpha=1.3)  # no shipped guide serves it


def test_an_interrupted_on_demand_training_is_not_used_but_resumed(tiny_on_demand, x, capsys):
    model = tiny_on_demand
    with pytest.raises(StopTraining):  # killed after 2 of 4 steps (a checkpoint every step)
        train_for_model(model, progress_bar=False, callback=stop_after(2))
    path = on_demand_path(model)
    card = json.loads(path.with_suffix(".json").read_text())
    assert (card["training"]["completed_steps"], card["training"]["steps"]) == (2, 4)
    with pytest.raises(ValueError, match=r"incomplete \(2 of 4 training steps") as err:
        pyro_acp.infer(model, x, train=False, progress_bar=False)
    assert "train=True" in str(err.value) and str(path) in str(err.value)
    capsys.readouterr()
    post = pyro_acp.infer(model, x, num_samples=4, seed=0, progress_bar=False)  # resumes, then serves
    assert "resuming" in capsys.readouterr().out
    assert post.samples.shape == (4, 12)
    card = json.loads(path.with_suffix(".json").read_text())
    assert (card["training"]["completed_steps"], card["training"]["steps"]) == (4, 4)
    guide = resolve_guide(model, train=False)  # complete now: served from the cache
    assert guide.trained_for == model.config()


def test_resuming_continues_the_interrupted_run_bit_for_bit(tiny_on_demand):
    model = tiny_on_demand
    straight = train_for_model(model, progress_bar=False)
    on_demand_path(model).unlink()
    with pytest.raises(StopTraining):
        train_for_model(model, progress_bar=False, callback=stop_after(3))
    resumed = train_for_model(model, progress_bar=False, resume=True)
    for name, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name


# ---------------------------------------------------------------- item 9: missing .pt, bad guide arguments


def test_a_missing_weights_file_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"g\.pt does not exist") as err:
        load_guide(tmp_path / "g.pt")
    assert "config" not in str(err.value)
    train(CRPGaussianMixture(), ACPS(2, 8), steps=1, checkpoint=tmp_path / "h.pt", **SMALL)
    (tmp_path / "h.pt").unlink()  # the card is still there, the weights are not
    with pytest.raises(ValueError, match=r"h\.pt does not exist"):
        load_guide(tmp_path / "h.pt")


@pytest.mark.parametrize("cls", [ACP, ACPS, CCP])
@pytest.mark.parametrize("name", ["hidden_dim", "z_dim", "num_heads", "num_inducing", "mlp_layers",
                                  "encoder_layers", "join_layers"])
@pytest.mark.parametrize("value", [0, -2])
def test_guides_refuse_non_positive_sizes(cls, name, value):
    with pytest.raises(ValueError, match=name):
        cls(2, **{name: value})


def test_num_heads_must_divide_hidden_dim():
    with pytest.raises(ValueError, match="num_heads=3 does not divide hidden_dim=16"):
        ACPS(2, hidden_dim=16, num_heads=3)
    assert ACPS(2, hidden_dim=12, num_heads=3).config["num_heads"] == 3


def test_cli_train_refuses_hidden_dim_zero(tmp_path, capsys):
    out = tmp_path / "g.pt"
    code = cli_main(["train", "--hidden-dim", "0", "--steps", "1", "--batch-size", "2", "--num-particles", "2",
                     "--output", str(out)])
    assert code == 2 and "hidden_dim" in capsys.readouterr().err
    assert not out.exists()


# ---------------------------------------------------------------- issue 18: budgets, early stopping, declared guides


def test_early_stopping_reads_the_validation_bounds_alone():
    rule = EarlyStopping(patience=2, min_delta=0.1)
    assert not rule.plateaued([-5.0, -4.0])  # too few rounds
    assert not rule.plateaued([-5.0, -4.0, -3.0, -3.5])  # improved within the last two rounds
    assert rule.plateaued([-5.0, -3.0, -2.95, -3.2])  # +0.05 < min_delta: no real improvement in two rounds
    assert EarlyStopping.of({"patience": 2, "min_delta": 0.1}) == rule and EarlyStopping.of(None) is None
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping(patience=0)
    with pytest.raises(ValueError, match="validate_every > 0"):
        train(CRPGaussianMixture(), ACPS(2, 8), steps=2, early_stopping=rule, **{**SMALL, "validate_every": 0})


STOPPING = {**SMALL, "validate_every": 1, "early_stopping": {"patience": 1, "min_delta": 100.0}}


def test_early_stopping_is_deterministic_and_resumes_where_the_straight_run_stops(tmp_path):
    """min_delta 100 nats: the second validation round never counts as an improvement, so the run stops at
    step 2 of 6, writes a complete checkpoint whose card says so, and an interrupted run stops there too."""
    model = CRPGaussianMixture(alpha=1.3)
    straight_guide, resumed_guide = ACPS(2, 8), ACPS(2, 8)
    history = train(model, straight_guide, steps=6, checkpoint=tmp_path / "a.pt", checkpoint_every=1, **STOPPING)
    assert history.stopped == "validation" and history.steps == [0, 1]
    training = json.loads((tmp_path / "a.json").read_text())["training"]
    assert (training["completed_steps"], training["steps"], training["planned_steps"]) == (2, 2, 6)
    assert training["stopped"] == "validation" and training["early_stopping"] == {"patience": 1, "min_delta": 100.0}
    with pytest.raises(StopTraining):
        train(model, resumed_guide, steps=6, checkpoint=tmp_path / "b.pt", checkpoint_every=1,
              callback=stop_after(1), **STOPPING)
    again = train(model, resumed_guide, steps=6, checkpoint=tmp_path / "b.pt", checkpoint_every=1, resume=True,
                  **STOPPING)
    assert again.stopped == "validation" and again.steps == [0, 1]
    for name, value in straight_guide.state_dict().items():
        assert torch.equal(value, resumed_guide.state_dict()[name]), name


def test_a_time_budget_stops_training_with_a_complete_checkpoint(tmp_path):
    history = train(CRPGaussianMixture(), ACPS(2, 8), steps=50, max_minutes=1e-6, checkpoint=tmp_path / "g.pt",
                    **SMALL)
    assert history.stopped == "time budget" and history.steps == [0]
    card = json.loads((tmp_path / "g.json").read_text())
    assert (card["training"]["completed_steps"], card["training"]["steps"]) == (1, 1)
    assert card["training"]["planned_steps"] == 50 and card["training"]["max_minutes"] == 1e-6
    with pytest.warns(ShortTrainingWarning, match="1 of the 50 steps .* train it for longer"):
        assert resolve_guide(CRPGaussianMixture(), tmp_path / "g.pt").trained_for == CRPGaussianMixture().config()


def test_train_minutes_plans_the_steps_that_fit_the_measured_time(tiny_on_demand, monkeypatch, capsys):
    """The planned steps follow the measured cost (here fixed at 0.06 s a step, so the test does not depend on
    the machine's load): a budget of 0.003 min (0.18 s) fits 3 steps."""
    monkeypatch.setattr(on_demand_module, "measure_training_time", lambda *a, **k: TimeEstimate(0.06, 0.0))
    monkeypatch.setitem(on_demand_module.ON_DEMAND_TRAINING, "steps", 40)
    monkeypatch.setitem(on_demand_module.ON_DEMAND_TRAINING, "validate_every", 2)
    train_for_model(tiny_on_demand, progress_bar=False, train_minutes=0.003)  # 0.18 s: 3 steps
    assert "a budget of 0.003 min fits 3 of 40 steps" in capsys.readouterr().out
    training = json.loads(on_demand_path(tiny_on_demand).with_suffix(".json").read_text())["training"]
    assert training["max_minutes"] == 0.003 and training["estimated_seconds"] == 0.2
    # the budget is a hard stop too: a slower machine stops before the planned 3 steps, with a complete card
    assert training["completed_steps"] == training["steps"] <= 3
    with pytest.warns(ShortTrainingWarning, match="a larger train_minutes"):
        assert resolve_guide(tiny_on_demand, train=False).trained_for == tiny_on_demand.config()
    with pytest.raises(ValueError, match="train_minutes must be a positive number"):
        train_for_model(tiny_on_demand, train_minutes=-1)


def test_a_guide_cut_short_by_its_budget_says_so_whenever_it_is_used(tiny_on_demand, x, monkeypatch, capsys):
    """A budget that fits 3 of 40 steps gives a complete cached guide that is short of its schedule: every later
    use warns (ShortTrainingWarning), with or without guide=, and it is reused, never replaced unasked (a
    larger budget could fit fewer steps on a busier machine, and an interrupted retraining would leave no
    guide). A card written before schedule_steps was recorded is judged against the on-demand schedule; a
    guide that early stopping ended is finished: no warning."""
    from pyro_acp.pretrained.registry import budget_shortfall

    monkeypatch.setattr(on_demand_module, "measure_training_time", lambda *a, **k: TimeEstimate(0.06, 0.0))
    monkeypatch.setitem(on_demand_module.ON_DEMAND_TRAINING, "steps", 40)
    pyro_acp.infer(tiny_on_demand, x, num_samples=5, seed=0, progress_bar=False, train_minutes=0.003)
    path = on_demand_path(tiny_on_demand)
    card = json.loads(path.with_suffix(".json").read_text())
    done, full, minutes = budget_shortfall(card)
    assert done <= 3 and full == 40 and minutes == 0.003
    capsys.readouterr()
    for options in ({}, {"guide": path}, {"train_minutes": 0.01}):
        with pytest.warns(ShortTrainingWarning, match=f"trained for {done} of the 40 steps.*delete it"):
            pyro_acp.infer(tiny_on_demand, x, num_samples=5, seed=0, progress_bar=False, **options)
        assert "training" not in capsys.readouterr().out  # reused, not retrained
    legacy = {"training": {"completed_steps": 3, "steps": 3, "max_minutes": 0.003}}  # the budget's 3 steps ran
    assert budget_shortfall(legacy) is None and budget_shortfall(legacy, on_demand=40) == (3, 40, 0.003)
    card["training"].update(stopped="validation")
    assert budget_shortfall(card) is None
    assert budget_shortfall({"training": {"completed_steps": 40, "steps": 40}}) is None


def test_the_up_front_estimate_is_within_a_factor_of_the_run_it_estimates(tiny_on_demand, capsys):
    """Estimate and run are measured in the same process, one after the other, so machine load affects both;
    the factor allows for that and for the checkpoints the estimate leaves out."""
    train_for_model(tiny_on_demand, progress_bar=False, steps=15, validate_every=5, early_stopping=None)
    training = json.loads(on_demand_path(tiny_on_demand).with_suffix(".json").read_text())["training"]
    ratio = training["estimated_seconds"] / training["wall_time_s"] if training["wall_time_s"] else float("nan")
    assert 1 / 3 <= ratio <= 3, (training["estimated_seconds"], training["wall_time_s"])
    assert training["measured_checkpoint_seconds"] > 0  # 15 steps write 15 checkpoints: the estimate counts them
    assert "min on this machine" in capsys.readouterr().out


def test_models_declare_the_guide_they_need():
    from pyro_acp.models import SBM, OrderedGaussianCatalog
    from pyro_acp.protocols import guide_options

    assert guide_options(CRPGaussianMixture()) == {"type": "ACPS"}
    assert guide_options(SBM()) == {"type": "ACPS", "encoder": "gatedgcn"}
    assert guide_options(OrderedGaussianCatalog(max_cluster_size=5)) == {"type": "NOC", "max_cluster_size": 5}

    class Declares(CRPGaussianMixture):
        guide_options = {"type": "CCP", "hidden_dim": 8}

    assert guide_options(Declares()) == {"type": "CCP", "hidden_dim": 8}
    assert isinstance(on_demand_module.new_guide(Declares()), CCP)
    assert on_demand_module.new_guide(SBM()).encodes_graphs

    class Wrong(CRPGaussianMixture):
        def guide_options(self):
            return {"hidden_dim": 8}

    with pytest.raises(TypeError, match="guide_options must give a dict with a 'type'"):
        guide_options(Wrong())


@pytest.mark.slow
def test_an_ordered_model_gets_a_noc_guide_on_demand(tiny_on_demand):
    from pyro_acp.guides import NOC
    from pyro_acp.models import OrderedGaussianCatalog
    from pyro_acp.posteriors import OrderedClusteringPosterior

    model = OrderedGaussianCatalog(alpha=1.3, max_cluster_size=4)
    guide = train_for_model(model, progress_bar=False)
    assert isinstance(guide, NOC) and guide.max_cluster_size == 4
    x, _ = model.simulate(1, num_points=6, seed=0).unpadded(0)
    post = pyro_acp.infer(model, x, num_samples=4, seed=0, progress_bar=False, check_prior=False)  # from the cache
    assert isinstance(post, OrderedClusteringPosterior) and post.samples.shape == (4, 6)


def test_infer_passes_its_training_budget_to_on_demand_training(tiny_on_demand, x, monkeypatch, capsys):
    """``infer(..., train_minutes=)`` reaches on-demand training (the planned steps follow the budget)."""
    monkeypatch.setattr(on_demand_module, "measure_training_time", lambda *a, **k: TimeEstimate(0.06, 0.0))
    monkeypatch.setitem(on_demand_module.ON_DEMAND_TRAINING, "steps", 40)
    pyro_acp.infer(tiny_on_demand, x, num_samples=5, seed=0, progress_bar=False, train_minutes=0.003)
    assert "a budget of 0.003 min fits 3 of 40 steps" in capsys.readouterr().out
    training = json.loads(on_demand_path(tiny_on_demand).with_suffix(".json").read_text())["training"]
    assert training["max_minutes"] == 0.003


# ---------------------------------------------------------------- semi-supervised and unsupervised guides of one model


def test_known_labels_prefer_the_guide_that_reads_them(tmp_path, monkeypatch):
    """Two complete cached guides serve one graph model: the one trained semi-supervised (label_slots) is
    found when labels will be given, the unsupervised one otherwise; either alone is the fallback."""
    from pyro_acp.models import PlantedPartition
    from pyro_acp.pretrained.checkpoint import save_checkpoint
    from pyro_acp.pretrained.registry import _cache_stem, find_guide

    monkeypatch.setenv("PYRO_ACP_CACHE", str(tmp_path))
    model = PlantedPartition(num_blocks=2, block_sizes=(2, 5))
    card = {"model": model.config(), "training": {"steps": 1, "completed_steps": 1}}
    paths = {}
    for name, slots in (("a-semi", 2), ("b-unsupervised", 0)):  # the semi-supervised file sorts first
        guide = ACPS(model.data_dim, encoder="gatedgcn", hidden_dim=8, encoder_layers=1, label_slots=slots)
        paths[slots > 0] = save_checkpoint(tmp_path / f"{_cache_stem(model)}-{name}.pt", guide, card)
    assert find_guide(model) == paths[False]
    assert find_guide(model, semi_supervised=True) == paths[True]
    assert resolve_guide(model, semi_supervised=True, train=False).label_slots == 2
    assert resolve_guide(model, train=False).label_slots == 0
    paths[False].unlink()
    assert find_guide(model) == paths[True]  # the other kind serves when it is the only one


def test_find_guide_prefers_the_guide_trained_on_the_data_sets_size(tmp_path, monkeypatch):
    """Among guides for one model, a data set of N gets one trained on N (the narrowest such range: a
    small-table specialist before the generalist); outside every range, the nearest; without N, the widest.
    The file names sort against the expected picks, so a tie-break by name cannot pass this test."""
    from pyro_acp.models import NIWGaussianMixture
    from pyro_acp.pretrained import registry
    from pyro_acp.pretrained.checkpoint import save_checkpoint
    from pyro_acp.pretrained.registry import _cache_stem, find_guide

    monkeypatch.setenv("PYRO_ACP_CACHE", str(tmp_path))
    monkeypatch.setattr(registry, "pretrained_guides", lambda: [])  # only the guides written here
    model = NIWGaussianMixture(dim=3)
    paths = {}
    for name, num_points in (("a-all", [2, 200]), ("b-mid", [2, 40]), ("c-small", [2, 12])):
        card = {"model": model.config(), "training": {"steps": 1, "completed_steps": 1, "num_points": num_points}}
        paths[name] = save_checkpoint(tmp_path / f"{_cache_stem(model)}-{name}.pt", ACPS(3, hidden_dim=8), card)
    for bad, num_points in (("d-three", [2, 5, 9]), ("e-reversed", [12, 2]), ("f-text", ["2", "12"]),
                            ("g-null", [2, None]), ("h-narrow-but-incomplete", [6, 8])):
        steps = 2 if bad.endswith("incomplete") else 1
        card = {"model": model.config(), "training": {"steps": steps, "completed_steps": 1, "num_points": num_points}}
        save_checkpoint(tmp_path / f"{_cache_stem(model)}-{bad}.pt", ACPS(3, hidden_dim=8), card)
    assert find_guide(model, num_points=7) == paths["c-small"]
    assert find_guide(model, num_points=12) == paths["b-mid"]  # the range is [lo, hi)
    assert find_guide(model, num_points=100) == paths["a-all"]
    assert find_guide(model) == paths["a-all"]
    assert find_guide(model, num_points=500) == paths["a-all"]  # nearer than [2, 12) or [2, 40)
    asked = []
    monkeypatch.setattr(on_demand_module, "find_guide", lambda *a, **k: asked.append(k) or find_guide(*a, **k))
    x = torch.randn(7, 3, generator=torch.Generator().manual_seed(0))
    with pytest.warns(UserWarning, match="small tables"):
        post = pyro_acp.infer(model, x, num_samples=4, seed=0, train=False, progress_bar=False, check_prior=False,
                              estimate_log_prob=False)
    assert asked[-1]["num_points"] == 7 and post.samples.shape == (4, 7)  # infer asks for its data set's size


def test_the_kind_of_guide_comes_before_its_size(tmp_path, monkeypatch):
    """A guide that reads labels is not picked without labels because its training range fits N better."""
    from pyro_acp.models import PlantedPartition
    from pyro_acp.pretrained import registry
    from pyro_acp.pretrained.checkpoint import save_checkpoint
    from pyro_acp.pretrained.registry import _cache_stem, find_guide

    monkeypatch.setenv("PYRO_ACP_CACHE", str(tmp_path))
    monkeypatch.setattr(registry, "pretrained_guides", lambda: [])
    model = PlantedPartition(num_blocks=2, block_sizes=(2, 5))
    paths = {}
    for name, slots, num_points in (("a-semi-narrow", 2, [2, 12]), ("b-unsupervised-wide", 0, [2, 200])):
        card = {"model": model.config(), "training": {"steps": 1, "completed_steps": 1, "num_points": num_points}}
        guide = ACPS(model.data_dim, encoder="gatedgcn", hidden_dim=8, encoder_layers=1, label_slots=slots)
        paths[slots > 0] = save_checkpoint(tmp_path / f"{_cache_stem(model)}-{name}.pt", guide, card)
    assert find_guide(model, num_points=7) == paths[False]
    assert find_guide(model, num_points=7, semi_supervised=True) == paths[True]
