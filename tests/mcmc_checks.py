"""Agreement of a sampler with an exact posterior, judged against Monte-Carlo error measured in the test itself.

The yardstick is the total variation distance of an i.i.d. sample of the same size drawn from the exact
posterior. A correct sampler with modest autocorrelation lands within a small multiple of it; a wrong one
lands far outside (tests/test_mcmc.py checks that with a deliberately mis-specified model).
"""

from __future__ import annotations

import pytest
import torch

from pyro_acp.posteriors.posterior import ClusteringPosterior

TOLERANCE = 2.5  # allowed multiple of the i.i.d. Monte-Carlo total variation


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Samplers run many tiny tensor ops: one intra-op thread is faster and steadier on small machines (import
    this fixture into a test module to apply it there)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def total_variation(samples: torch.Tensor, exact) -> float:
    """TV between the empirical distribution of canonical ``samples`` (S, N) and an exact posterior."""
    index = {tuple(p.tolist()): i for i, p in enumerate(exact.partitions)}
    counts = torch.zeros_like(exact.probs)
    for row in samples.tolist():
        counts[index[tuple(row)]] += 1
    return 0.5 * float((counts / counts.sum() - exact.probs).abs().sum())


def iid_total_variation(exact, num_samples: int) -> float:
    return total_variation(exact.sample(num_samples, seed=12345), exact)


def assert_matches_exact(post: ClusteringPosterior, exact, cc_tol: float = 0.05) -> None:
    tv = total_variation(post.samples, exact)
    baseline = iid_total_variation(exact, post.num_samples)
    assert tv < TOLERANCE * baseline, f"TV {tv:.4f} vs i.i.d. Monte-Carlo TV {baseline:.4f}"
    cc_error = float((post.coclustering() - exact.coclustering()).abs().max())
    assert cc_error < cc_tol, f"co-clustering error {cc_error:.4f}"
