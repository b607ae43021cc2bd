import math

import pyro
import pytest
import torch
from torch.nn import functional as F

from pyro_acp.data.batch import Batch
from pyro_acp.guides import ACP, ACPS, CCP
from pyro_acp.inference.elbo import ClusterwiseIWAE
from tests.helpers import tiny_batch

GUIDES = [ACP, ACPS, CCP]


def log_weights(guide, batch, z):
    """log p(z) + log p(b | z) - log q(z) per (particle, step), computed directly for fixed z."""
    enc = guide.encode(batch)
    logits = guide.join_logits(z, enc)
    joins = -F.binary_cross_entropy_with_logits(logits, enc.targets.float().expand_as(logits), reduction="none")
    log_lik = (joins * enc.available).sum(-1)
    return guide.prior(enc.context).log_prob(z).sum(-1) + log_lik - guide.posterior(enc).log_prob(z).sum(-1)


@pytest.mark.parametrize("cls", GUIDES)
def test_padding_leaves_loss_unchanged(cls):
    torch.manual_seed(0)
    guide = cls(2, 32)
    batch = tiny_batch()
    padded = batch.pad_to(batch.max_points + 6, batch.max_clusters + 3)
    elbo = ClusterwiseIWAE(num_particles=5)
    pyro.set_rng_seed(3)
    a = elbo.loss(guide.model, guide.guide, batch)
    pyro.set_rng_seed(3)
    b = elbo.loss(guide.model, guide.guide, padded)
    assert a == pytest.approx(b, rel=1e-5, abs=1e-4)


@pytest.mark.parametrize("cls", GUIDES)
def test_batched_loss_equals_per_dataset_reference(cls):
    torch.manual_seed(0)
    guide = cls(2, 32)
    batch = tiny_batch(batch_size=5)
    dataset = guide.encode(batch).dataset
    z = torch.randn(3, dataset.shape[0], guide.z_dim, generator=torch.Generator().manual_seed(1))
    batched = log_weights(guide, batch, z)
    for b in range(batch.batch_size):
        rows = dataset == b
        alone = log_weights(guide, batch.select([b]), z[:, rows])
        assert torch.allclose(batched[:, rows], alone, atol=1e-4), b


def test_iwae_bound_is_logmeanexp_per_step_and_above_elbo():
    """ClusterwiseIWAE's weights are log p(z) + log p(b | z) - log q(z) at the z it drew (recomputed here from the
    guide's networks), its loss is minus the per-step log-mean-exp of them averaged over data sets, and, over
    independent draws, the 64-particle bound lies above the ELBO (Pyro's Trace_ELBO, 64 particles): measured over
    12 seeds -6.95 (sd 0.36) vs -10.69 (sd 0.20) nats, so the gap of 3.7 is 9 sd of its noise (0.41)."""
    torch.manual_seed(0)
    guide = ACPS(2, 32)
    batch = tiny_batch()
    pyro.set_rng_seed(0)
    log_w, scale, latents = ClusterwiseIWAE(64).log_weights(guide.model, guide.guide, batch)
    assert log_w.shape == (64, int(batch.num_clusters.sum()))
    assert scale == pytest.approx(1 / batch.batch_size)
    torch.testing.assert_close(log_w, log_weights(guide, batch, latents[0]), rtol=1e-5, atol=1e-4)
    pyro.set_rng_seed(0)
    loss = ClusterwiseIWAE(64).loss(guide.model, guide.guide, batch)
    assert loss == pytest.approx(-(log_w.logsumexp(0) - math.log(64)).sum().item() / batch.batch_size, rel=1e-5)
    pyro.set_rng_seed(1)
    elbo = -pyro.infer.Trace_ELBO(num_particles=64, vectorize_particles=True, max_plate_nesting=1).loss(
        guide.model, guide.guide, batch)
    assert -loss > elbo + 4 * 0.41, (-loss, elbo)


@pytest.mark.slow
@pytest.mark.parametrize("dreg", [False, True])
def test_svi_step_reduces_loss_on_a_fixed_batch(dreg):
    torch.manual_seed(0)
    pyro.clear_param_store()
    guide = ACPS(2, 32)
    batch = tiny_batch()
    svi = pyro.infer.SVI(guide.model, guide.guide, pyro.optim.Adam({"lr": 3e-3}), ClusterwiseIWAE(8, dreg=dreg))
    losses = [svi.step(batch) for _ in range(40)]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5


def test_trace_elbo_works_with_the_same_pair():
    """Pyro's own Trace_ELBO on the same model/guide pair is minus the mean of ClusterwiseIWAE's log weights: with
    the same seed both draw the same z (particles in a plate at dim -2), so the two ELBO estimates agree exactly."""
    torch.manual_seed(0)
    pyro.clear_param_store()
    guide = CCP(2, 16)
    batch = tiny_batch()
    elbo = pyro.infer.Trace_ELBO(num_particles=4, vectorize_particles=True, max_plate_nesting=1)
    pyro.set_rng_seed(1)
    loss = elbo.loss(guide.model, guide.guide, batch)
    pyro.set_rng_seed(1)
    log_w, scale, _ = ClusterwiseIWAE(4).log_weights(guide.model, guide.guide, batch)
    assert loss == pytest.approx(-scale * log_w.mean(0).sum().item(), rel=1e-5)


def test_bad_batches_raise_clear_errors():
    guide = ACP(3, 16)
    with pytest.raises(ValueError, match="data dimension 2 does not match"):
        guide.encode(tiny_batch())
    with pytest.raises(TypeError, match="Batch"):
        guide.encode(torch.zeros(2, 3, 3))
    x = torch.zeros(1, 3, 2)
    x[0, 1, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        Batch.from_labels(x, torch.tensor([[0, 0, 1]]))
    with pytest.raises(ValueError, match="empty batch"):
        Batch.from_labels(torch.zeros(0, 3, 2), torch.zeros(0, 3, dtype=torch.long))


def _loss_and_grads(guide, batch):
    guide.zero_grad()
    pyro.set_rng_seed(5)
    loss = ClusterwiseIWAE(num_particles=4).differentiable_loss(guide.model, guide.guide, batch)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in guide.parameters() if p.grad is not None]


@pytest.mark.slow
def test_compiled_join_network_gives_the_same_loss_and_gradients():
    torch.manual_seed(0)
    guide, batch = ACPS(2, 16), tiny_batch()
    eager_loss, eager_grads = _loss_and_grads(guide, batch)
    guide.compile_join()
    compiled_loss, compiled_grads = _loss_and_grads(guide, batch)
    if guide._compiled_join is None:
        pytest.skip("torch.compile is not available on this machine (it fell back to eager)")
    guide.compile_join(False)
    assert compiled_loss == pytest.approx(eager_loss.item(), rel=1e-5)
    assert len(compiled_grads) == len(eager_grads)
    for a, b in zip(compiled_grads, eager_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_failing_compiler_falls_back_to_eager_with_a_warning(monkeypatch):
    def broken_compile(fn, **kwargs):
        def run(*args):
            raise RuntimeError("no C++ compiler")
        return run

    torch.manual_seed(0)
    guide, batch = ACPS(2, 16), tiny_batch()
    eager_loss, _ = _loss_and_grads(guide, batch)
    monkeypatch.setattr(torch, "compile", broken_compile)
    guide.compile_join()
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler"):
        loss, _ = _loss_and_grads(guide, batch)
    assert guide._compiled_join is None
    assert loss.item() == pytest.approx(eager_loss.item(), rel=1e-6)


def test_acp_bucketed_step_encodings_equal_the_padded_computation():
    """ACP packs each step's anchor + available points into size buckets; the masked blocks must give what
    running them over all N points of every step gives."""
    from pyro_acp.models import CRPGaussianMixture
    from pyro_acp.nn.encoders import anchor_rows

    torch.manual_seed(0)
    guide = ACP(2, 32)
    batch = CRPGaussianMixture().simulate(6, num_points=(5, 40), seed=4)
    data = guide.encode_data(batch.x, batch.mask)
    dataset, step = batch.step_mask.nonzero(as_tuple=True)
    anchor, available = batch.anchor[dataset, step], batch.available[dataset, step]
    points, anchor_code, unassigned = guide.step_encodings(data.enc, data.feats, dataset, anchor, available)
    padded = guide.step_isab(data.enc[dataset], anchor | available)
    padded_anchor = anchor_rows(padded, anchor)
    paired = guide.anchor_pair(padded, padded_anchor.unsqueeze(-2))
    active = anchor | available
    torch.testing.assert_close(points[active], padded[active], rtol=1e-5, atol=1e-5)  # the rest is never read
    torch.testing.assert_close(anchor_code, padded_anchor, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(unassigned, guide.summarize(guide.pool_unassigned, paired, available),
                               rtol=1e-5, atol=1e-5)
