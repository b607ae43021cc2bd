"""Start-up cost: ``import pyro_acp`` and ``pyro-acp infer`` load only what their job needs."""

import json
import subprocess
import sys

import numpy as np

import pyro_acp

HEAVY = ("sklearn", "scipy.stats", "matplotlib", "arviz", "networkx")


def _modules_after(code: str) -> dict:
    """The heavy modules loaded after running ``code`` in a fresh interpreter."""
    probe = f"import json, sys\n{code}\nprint(json.dumps({{m: m in sys.modules for m in {HEAVY!r}}}))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_import_loads_none_of_the_heavy_libraries():
    loaded = _modules_after("import pyro_acp\nfrom pyro_acp.models import CRPGaussianMixture, SBM\npyro_acp.infer")
    assert not any(loaded.values()), loaded


def test_infer_command_loads_matplotlib_only_for_its_figure(tmp_path):
    points = np.random.default_rng(0).normal(size=(20, 2))
    np.save(tmp_path / "points.npy", points)
    code = (f"from pyro_acp.cli import main\n"
            f"assert main(['infer', {str(tmp_path / 'points.npy')!r}, '--num-samples', '5', '--no-train', "
            f"'--output', {str(tmp_path / 'out')!r}]) == 0")
    loaded = _modules_after(code)
    assert loaded["matplotlib"]  # it draws posterior.png
    assert not any(loaded[m] for m in ("sklearn", "scipy.stats", "arviz", "networkx")), loaded


def test_every_public_name_resolves_lazily():
    assert pyro_acp.__all__ == sorted(pyro_acp._PUBLIC)
    for name in pyro_acp.__all__:
        assert getattr(pyro_acp, name) is not None
    assert pyro_acp.load is pyro_acp.load_guide
    assert pyro_acp.mcmc.gibbs.__module__ == "pyro_acp.reference.gibbs"
    assert "infer" in dir(pyro_acp)
    try:
        pyro_acp.no_such_name  # noqa: B018
    except AttributeError as err:
        assert "no_such_name" in str(err)
    else:
        raise AssertionError("an unknown attribute must raise AttributeError")
