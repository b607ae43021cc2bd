"""pyro_acp.infer_many: batched inference over many data sets, streamed to disk, resumable."""

import json

import numpy as np
import pytest
import torch

import pyro_acp
from pyro_acp.cli import main
from pyro_acp.guides import ACPS
from pyro_acp.inference import many, many_batch, many_output
from pyro_acp.inference.many import MANIFEST, RESULT_FILES, dataset_seed, infer_many
from pyro_acp.models import CRPGaussianMixture
from pyro_acp.pretrained.checkpoint import save_checkpoint
from pyro_acp.seeding import forked_rng

MODEL = CRPGaussianMixture()
SIZES = (9, 33, 17, 24, 6)  # mixed sizes: padding, and frames for every sample (N <= 40)
with forked_rng(0):  # a small untrained guide: the tests check the batching, not the guide's accuracy
    GUIDE = ACPS(2, hidden_dim=16, num_heads=2, num_inducing=4).eval()
GUIDE.trained_for = MODEL.config()
QUICK = {"num_samples": 6, "estimate_log_prob": False, "progress_bar": False, "guide": GUIDE}


def datasets(sizes=SIZES, seed=3):
    return [MODEL.simulate(1, num_points=(n, n + 1), seed=seed + i).unpadded(0)[0].numpy()
            for i, n in enumerate(sizes)]


XS = datasets()


def _equal_to_infer(xs, seed, **options):
    """infer_many's posteriors equal infer's on each data set's own seed; returns how many distinct samples."""
    posteriors = infer_many(MODEL, xs, seed=seed, progress_bar=False, **options)
    assert [p.num_points for p in posteriors] == [len(x) for x in xs]
    distinct = 0
    for i, (x, posterior) in enumerate(zip(xs, posteriors, strict=True)):
        alone = pyro_acp.infer(MODEL, x, seed=dataset_seed(seed, i), progress_bar=False, **options)
        assert torch.equal(posterior.samples, alone.samples), i
        assert torch.equal(posterior.log_joint, alone.log_joint), i
        for name in ("log_prob", "log_prob_error", "weights"):  # the same draws, summed in a batch of another shape
            ours, theirs = getattr(posterior, name), getattr(alone, name)
            assert (ours is None and theirs is None) or torch.allclose(ours, theirs, rtol=0, atol=1e-4,
                                                                       equal_nan=True), (i, name)
        distinct += int(posterior.samples.unique(dim=0).shape[0])
    return distinct


def test_samples_and_log_prob_equal_infer_with_each_data_sets_seed():
    """One batched chunk of five sizes: every data set's samples are infer's, bit for bit, on the seed
    dataset_seed(root, index), and its log q estimates and their errors within float rounding (1e-4 nats)."""
    distinct = _equal_to_infer(XS, 11, num_samples=6, guide=GUIDE)
    assert distinct > 2 * len(XS)  # the samples are random draws, not one partition each


@pytest.mark.parametrize("mass", [None, 1e-4])
def test_reweighted_data_sets_are_refined_and_weighted_as_infer_does(monkeypatch, mass):
    """reweight=True refines each data set's loose estimates by its own importance weights
    (log_prob.refinement_choice), from its own generator: the weights are infer's. With the default budget
    this untrained guide's loose estimates carry too little weight to refine; with a budget of 1e-4 one data
    set refines some of its loose estimates and not others, a choice that its own targets decide (targets
    misattributed between or within data sets would change it, and infer's answer would differ)."""
    from pyro_acp.inference import log_prob

    if mass is not None:
        monkeypatch.setattr(log_prob, "REWEIGHT_REFINE_MASS", mass)
    calls = []
    choice = log_prob.refinement_choice

    def counted(log_prob_, error, refine_to, *rest):
        chosen = choice(log_prob_, error, refine_to, *rest)
        calls.append((int((error > refine_to).sum()), chosen.numel()))
        return chosen

    monkeypatch.setattr(log_prob, "refinement_choice", counted)
    assert _equal_to_infer(XS, 5, num_samples=24, guide=GUIDE, reweight=True, check_samples=False) > 10
    partial = [(loose, chosen) for loose, chosen in calls if 0 < chosen < loose]
    assert bool(partial) == (mass is not None), calls


def test_the_point_width_is_moved_off_the_guides_other_sizes():
    """The largest N equals the guide's z_dim (16): the chunk pads to 17, so z draws are not cut as points."""
    xs = datasets((16, 11), seed=8)
    assert many_batch.padded_width([type("J", (), {"num_points": len(x)}) for x in xs], GUIDE) == 17
    assert _equal_to_infer(xs, 1, num_samples=5, guide=GUIDE, symmetrize=False) > 2


def test_the_shipped_guide_batches_as_it_samples_alone():
    assert _equal_to_infer(XS[:3], 4, num_samples=4, estimate_log_prob=False) > 3


def test_a_data_sets_answer_does_not_depend_on_its_batch_mates():
    named = {f"set{i}": x for i, x in enumerate(XS)}
    together = infer_many(MODEL, named, seed=5, **QUICK)
    alone = infer_many(MODEL, {"set3": XS[3]}, seed=5, **QUICK)[0]
    one_per_chunk = infer_many(MODEL, named, seed=5, batch_points=1, **QUICK)
    reordered = infer_many(MODEL, dict(reversed(named.items())), seed=5, **QUICK)
    assert torch.equal(together[3].samples, alone.samples)
    for a, b, c in zip(together, one_per_chunk, reversed(reordered), strict=True):
        assert torch.equal(a.samples, b.samples) and torch.equal(a.samples, c.samples)
    other_seed = infer_many(MODEL, {"set3": XS[3]}, seed=6, **QUICK)[0]
    assert not torch.equal(other_seed.samples, alone.samples)


def test_dataset_seeds_differ_by_key_and_root():
    seeds = {dataset_seed(0, 0), dataset_seed(0, 1), dataset_seed(1, 0), dataset_seed(0, "0"), dataset_seed(0, "a")}
    assert len(seeds) == 5
    assert dataset_seed(3, "name") == dataset_seed(3, "name")


def test_unseeded_runs_leave_the_global_rng_alone_but_for_one_draw():
    torch.manual_seed(0)
    infer_many(MODEL, XS[:2], **QUICK)
    after_call = torch.rand(1)
    torch.manual_seed(0)
    torch.randint(0, 2**62, ())
    assert torch.equal(after_call, torch.rand(1))


def _files(folder):
    """Every result file's content, summary wall times left out (they are timings)."""
    content = {}
    for path in sorted(folder.rglob("*")):
        if path.is_dir():
            continue
        name = str(path.relative_to(folder))
        if path.suffix == ".npz":
            with np.load(path) as arrays:
                content[name] = {key: arrays[key].tolist() for key in arrays.files}
        elif path.name == "summary.json":
            record = json.loads(path.read_text())
            record["summary"].pop("wall_time")
            content[name] = record
        else:
            content[name] = path.read_text()
    return content


@pytest.mark.parametrize("where", ["write_result", "atomic_write"])
def test_an_interrupted_run_resumes_to_the_uninterrupted_outputs(tmp_path, monkeypatch, where):
    """Interrupted after two data sets, before the third's files (``write_result``) or between them, its
    summary about to be written (``atomic_write``): the rerun writes only the unfinished ones (the finished
    ones' files untouched) and ends with the files of an uninterrupted run, log q estimates included, bit for
    bit; a rerun of a finished run reads nothing."""
    options = {"seed": 2, **QUICK, "estimate_log_prob": True}
    infer_many(MODEL, XS, output=tmp_path / "whole", **options)
    module = many if where == "write_result" else many_output
    original, finished = getattr(module, where), []

    def interrupt_third(path, *args):
        if where == "write_result":
            if len(finished) == 2:
                raise KeyboardInterrupt
            finished.append(path.name)
        elif path.name == "summary.json":
            if len(finished) == 2:
                assert (path.parent / "posterior.npz").exists()  # the third data set is half written
                raise KeyboardInterrupt
            finished.append(path.parent.name)
        return original(path, *args)

    monkeypatch.setattr(module, where, interrupt_third)
    with pytest.raises(KeyboardInterrupt):
        infer_many(MODEL, XS, output=tmp_path / "resumed", **options)
    assert sorted(p.parent.name for p in (tmp_path / "resumed").glob("*/summary.json")) == sorted(finished)
    monkeypatch.setattr(module, where, original)
    stamps = {name: (tmp_path / "resumed" / name / "summary.json").stat().st_mtime_ns for name in finished}
    written, write = [], many.write_result
    monkeypatch.setattr(many, "write_result", lambda folder, *args: written.append(folder.name) or write(folder, *args))
    folders = infer_many(MODEL, XS, output=tmp_path / "resumed", **options)
    assert sorted(written) == sorted({f"{i:05d}" for i in range(5)} - set(finished))  # finished ones not rewritten
    assert all((tmp_path / "resumed" / n / "summary.json").stat().st_mtime_ns == t for n, t in stamps.items())
    assert folders == [tmp_path / "resumed" / f"{i:05d}" for i in range(5)]
    assert _files(tmp_path / "resumed") == _files(tmp_path / "whole")
    assert not list((tmp_path / "resumed").rglob("*.tmp"))
    assert sorted(p.name for p in folders[0].iterdir()) == sorted(RESULT_FILES)
    monkeypatch.setattr(many, "_read", lambda *args: pytest.fail("a finished run read its data again"))
    assert infer_many(MODEL, XS, output=tmp_path / "resumed", **options) == folders


def test_a_resumed_run_skips_the_chunks_it_finished(tmp_path, monkeypatch):
    """Chunks are cut from the sizes alone: with one data set a chunk, a resumed run prepares only the data sets
    left, and its samples are the uninterrupted run's."""
    options = {"seed": 4, "batch_points": 1, **QUICK}
    infer_many(MODEL, XS, output=tmp_path / "whole", **options)
    infer_many(MODEL, XS[:3], output=tmp_path / "part", **options)
    prepared, prepare = [], many._prepare
    monkeypatch.setattr(many, "_prepare", lambda model, entry, *args: prepared.append(entry.name) or prepare(
        model, entry, *args))
    infer_many(MODEL, XS, output=tmp_path / "part", **options)
    assert sorted(prepared) == ["00003", "00004"]
    assert _files(tmp_path / "part") == _files(tmp_path / "whole")


def test_streamed_results_read_back_as_the_in_memory_posteriors(tmp_path):
    posteriors = infer_many(MODEL, XS[:2], seed=4, **QUICK)
    folders = infer_many(MODEL, XS[:2], seed=4, output=tmp_path, **QUICK)
    for posterior, folder in zip(posteriors, folders, strict=True):
        with np.load(folder / "posterior.npz") as arrays:
            assert np.array_equal(arrays["samples"], posterior.samples.numpy())
            assert np.array_equal(arrays["log_joint"], posterior.log_joint.numpy())
        table = np.loadtxt(folder / "labels.csv", delimiter=",", skiprows=1, dtype=int)
        assert np.array_equal(table[:, 0], posterior.map.numpy())
        assert np.array_equal(table[:, 1], posterior.point_estimate().numpy())
        record = json.loads((folder / "summary.json").read_text())
        assert record["seed"] == dataset_seed(4, record["index"])
        assert record["summary"]["k_mean"] == pytest.approx(posterior.summary().k_mean)


def test_figures_are_drawn_on_request(tmp_path):
    folder = infer_many(MODEL, XS[:1], output=tmp_path, figures=True, **QUICK)[0]
    assert (folder / "posterior.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_loss_none_writes_the_map_alone(tmp_path):
    posterior = infer_many(MODEL, XS[:1], seed=3, **QUICK)[0]
    folder = infer_many(MODEL, XS[:1], seed=3, output=tmp_path, loss=None, **QUICK)[0]
    assert (folder / "labels.csv").read_text().splitlines()[0] == "map"
    assert np.array_equal(np.loadtxt(folder / "labels.csv", skiprows=1, dtype=int), posterior.map.numpy())


def test_other_settings_in_the_same_folder_are_refused_unless_overwrite(tmp_path):
    infer_many(MODEL, XS[:2], seed=1, output=tmp_path, **QUICK)
    before = _files(tmp_path)
    with pytest.raises(ValueError, match="other settings.*num_samples"):
        infer_many(MODEL, XS[:2], seed=1, output=tmp_path, **{**QUICK, "num_samples": 7})
    with pytest.raises(ValueError, match="other settings.*seed"):
        infer_many(MODEL, XS[:2], seed=2, output=tmp_path, **QUICK)
    assert _files(tmp_path) == before
    infer_many(MODEL, XS[:2], seed=1, output=tmp_path, overwrite=True, **{**QUICK, "num_samples": 7})
    with np.load(tmp_path / "00000" / "posterior.npz") as arrays:
        assert arrays["samples"].shape == (7, SIZES[0])


def test_a_folder_that_is_not_an_infer_many_output_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty and holds no infer_many.json"):
        infer_many(MODEL, XS[:1], output=tmp_path, **QUICK)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def _folder(tmp_path, count=4):
    data = tmp_path / "data"
    data.mkdir()
    for i, x in enumerate(XS[:count]):
        if i % 2:
            np.savetxt(data / f"set{i}.csv", x, delimiter=",", header="a,b", comments="")
        else:
            np.save(data / f"set{i}.npy", x)
    return data


def test_a_folder_of_csv_and_npy_files_is_keyed_by_file_name(tmp_path):
    data = _folder(tmp_path)
    posteriors = infer_many(MODEL, data, seed=9, **QUICK)
    assert [p.num_points for p in posteriors] == list(SIZES[:4])
    alone = pyro_acp.infer(MODEL, XS[1], seed=dataset_seed(9, "set1"), **QUICK)
    assert torch.equal(posteriors[1].samples, alone.samples)


def test_a_non_data_file_in_the_folder_is_named_before_any_work(tmp_path, monkeypatch):
    data = _folder(tmp_path)
    (data / "README.md").write_text("about these data")
    monkeypatch.setattr(many, "resolve_guide", lambda *a, **k: pytest.fail("work started"))
    with pytest.raises(ValueError, match=r"README.md is not a data file"):
        infer_many(MODEL, data, output=tmp_path / "out", **QUICK)
    assert not (tmp_path / "out").exists()
    (data / "README.md").unlink()
    np.save(data / "set0.csv.npy", XS[0])  # fine: stem set0.csv
    np.savetxt(data / "set1.txt", XS[1])
    with pytest.raises(ValueError, match=r"set1.txt is not a data file"):
        infer_many(MODEL, data, **QUICK)


@pytest.mark.parametrize("bad, message", [
    (lambda x: np.where(np.arange(x.size).reshape(x.shape) == 3, np.nan, x), "contains NaN or inf"),
    (lambda x: np.concatenate([x, x[:, :1]], 1), r"must have shape \(N, 2\)"),
    (lambda x: x[:1], "clustering needs at least 2"),
])
def test_a_bad_data_set_is_named_and_finished_results_are_kept(tmp_path, monkeypatch, bad, message):
    data = _folder(tmp_path)
    np.save(data / "set2.npy", bad(XS[2]))
    np.save(data / "set2b.npy", XS[2])  # lies after set2 (by name): not reached
    monkeypatch.setattr(many, "WINDOW", 2)  # set0, set1 are finished before set2's window is read
    with pytest.raises(ValueError, match=rf"set2.npy: .*{message}"):
        infer_many(MODEL, data, seed=0, output=tmp_path / "out", **QUICK)
    assert sorted(p.parent.name for p in (tmp_path / "out").glob("*/summary.json")) == ["set0", "set1"]
    with pytest.raises(ValueError, match=rf"data set '00001': .*{message}"):
        infer_many(MODEL, [XS[0], bad(XS[2])], **QUICK)  # in memory: checked before any work
    np.save(data / "set2.npy", XS[2])
    folders = infer_many(MODEL, data, seed=0, output=tmp_path / "out", **QUICK)
    assert [f.name for f in folders] == ["set0", "set1", "set2", "set2b", "set3"]


def test_names_that_share_an_output_folder_are_refused(tmp_path):
    data = _folder(tmp_path, 1)
    np.savetxt(data / "set0.csv", XS[0], delimiter=",")
    with pytest.raises(ValueError, match="would share the output folder 'set0'"):
        infer_many(MODEL, data, **QUICK)
    with pytest.raises(ValueError, match="cannot name an output folder"):
        infer_many(MODEL, {"../up": XS[0]}, **QUICK)


def test_a_guide_drawing_what_cannot_be_routed_fails_loudly():
    class NormalDraws(ACPS):
        def sample_anchor(self, state, generator=None):
            torch.normal(0.0, 1.0, (3,), generator=generator)
            return super().sample_anchor(state, generator)

    guide = NormalDraws(2, hidden_dim=8, num_heads=2, num_inducing=4)
    guide.trained_for = MODEL.config()
    with pytest.raises(NotImplementedError, match="drew with normal"):
        infer_many(MODEL, XS[:2], **{**QUICK, "guide": guide})


def test_per_data_set_warnings_are_reported_once(tmp_path):
    far = XS[0] + 500.0  # far outside the prior predictive of the cluster locations
    with pytest.warns(pyro_acp.diagnostics.prior_check.PriorPredictiveWarning, match="1 of 2 data sets \\(00001\\)"):
        # the untrained guide's samples fail the stationarity check on both: this test is about the prior's
        folders = infer_many(MODEL, [XS[0], far], seed=0, output=tmp_path, check_samples=False, **QUICK)
    notes = [json.loads((f / "summary.json").read_text())["warnings"] for f in folders]
    assert notes[0] == [] and "prior predictive" in notes[1][0]


def test_graph_models_are_not_batched_yet():
    from pyro_acp.models import SBM

    with pytest.raises(NotImplementedError, match="graphs"):
        infer_many(SBM(), [np.eye(5)], **QUICK)


def test_the_command_clusters_a_folder_and_resumes(tmp_path, capsys):
    data = _folder(tmp_path, 3)
    out = tmp_path / "out"
    guide = save_checkpoint(tmp_path / "guide.pt", GUIDE, {"model": MODEL.config()})
    args = ["infer", str(data), "--output", str(out), "--num-samples", "5", "--guide", str(guide), "--seed", "1"]
    assert main(args) == 0
    assert "3 data sets" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST, "set0", "set1", "set2"])
    before = _files(out)
    assert main(args) == 0  # finished: nothing redone, nothing rewritten
    assert "3 already finished" in capsys.readouterr().out
    assert _files(out) == before
    assert main([*args[:-2], "--seed", "2"]) == 2
    assert "other settings" in capsys.readouterr().err
    (data / "notes.txt").write_text("x")
    assert main(args) == 2
    assert "notes.txt is not a data file" in capsys.readouterr().err
