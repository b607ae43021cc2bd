"""NOC (guides/noc.py): creation-order teacher forcing, the pointer network's probabilities and sampler, the
cardinality cap, the training objective as the house's ELBO, and a trained guide against the exact ordered
posterior of tiny catalogs."""

import itertools

import pyro
import pytest
import torch

import pyro_acp
from pyro_acp.data.batch import Batch, teacher_forcing_masks
from pyro_acp.data.partitions import canonicalize, enumerate_partitions
from pyro_acp.diagnostics.ordered_metrics import cap_adherence, catalog_scores, ordered_total_variation
from pyro_acp.guides import NOC
from pyro_acp.guides.clusterwise import FinishedClusters
from pyro_acp.guides.noc import creation_order, ordered_log_prob_estimate
from pyro_acp.inference.elbo import ClusterwiseIWAE
from pyro_acp.inference.frames import random_frames
from pyro_acp.inference.log_prob import log_prob_estimate
from pyro_acp.inference.sampling import sample_partitions
from pyro_acp.models import OrderedGaussianCatalog, ProceduralCatalog
from pyro_acp.posteriors import OrderedClusteringPosterior
from pyro_acp.pretrained.checkpoint import build_guide
from pyro_acp.reference.exact_ordered import exact_ordered_posterior


def _guide(**kwargs):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return NOC(2, hidden_dim=16, **kwargs)


def test_creation_order_renumbers_steps_by_first_appearance_and_keeps_the_anchors():
    batch = OrderedGaussianCatalog().simulate(6, num_points=(5, 30), seed=0)
    steps, position = creation_order(batch)
    canonical = canonicalize(batch.labels)
    expected = teacher_forcing_masks(canonical, batch.mask)
    for name in ("members", "assigned", "step_mask"):
        assert torch.equal(getattr(steps, name), expected[name]), name
    # position[b, c]: the order position of the c-th cluster to appear, read off any of its points
    valid = batch.labels >= 0
    assert torch.equal(position.gather(1, canonical.clamp(min=0))[valid], batch.labels[valid])
    # each cluster keeps its anchor, now at its new step; available = unassigned minus the anchor
    for b in range(6):
        for c in range(int(steps.step_mask[b].sum())):
            assert torch.equal(steps.anchor[b, c], batch.anchor[b, int(position[b, c])])
    assert torch.equal(steps.available, batch.mask.unsqueeze(1) & ~steps.assigned & ~steps.anchor
                       & steps.step_mask.unsqueeze(-1))
    assert torch.equal(steps.labels, batch.labels)  # the ordered labels themselves are untouched


def _clusters(num_points=7, seed=1):
    x, _ = OrderedGaussianCatalog().simulate(1, num_points=num_points, seed=seed).unpadded(0)
    labels = torch.tensor([0, 0, 1, 2, 1, 2, 2])[:num_points]  # three clusters
    return x.unsqueeze(0), labels.unsqueeze(0)


def test_pointer_probabilities_of_all_orders_sum_to_one():
    guide = _guide()
    x, labels = _clusters()
    total = 0.0
    for perm in itertools.permutations(range(3)):
        positions = torch.tensor(perm)[labels]  # the clusters placed in this order
        batch = Batch.from_labels(x, positions, ordered=True, shuffle=False)
        with torch.no_grad():
            log_prob = guide.order_log_prob(batch)
        assert log_prob.shape == (1, 3) and (log_prob <= 0).all()
        assert log_prob[0, -1] == 0  # the last cluster is the only one left: probability one
        total += float(log_prob.sum().exp())
    assert total == pytest.approx(1.0, abs=1e-5)
    every = torch.stack([torch.tensor(perm)[labels[0]] for perm in itertools.permutations(range(3))])
    state = torch.get_rng_state()
    per_sample = guide.order_log_prob_of(x[0], every)  # the same numbers for sampled ordered partitions
    assert torch.equal(torch.get_rng_state(), state)
    assert float(per_sample.exp().sum()) == pytest.approx(1.0, abs=1e-5)


def test_sampled_orders_follow_the_teacher_forced_probabilities():
    guide = _guide()
    x, labels = _clusters()
    perms = list(itertools.permutations(range(3)))
    probs = torch.zeros(len(perms), dtype=torch.float64)
    with torch.no_grad():
        for i, perm in enumerate(perms):
            batch = Batch.from_labels(x, torch.tensor(perm)[labels], ordered=True, shuffle=False)
            probs[i] = guide.order_log_prob(batch).sum().exp()
        threads = 20_000
        data = guide.encode_data(x, torch.ones(1, 7, dtype=torch.bool))
        clusters = FinishedClusters(data, torch.zeros(threads, dtype=torch.long), labels.expand(threads, -1),
                                    torch.full((threads,), 3), torch.zeros(threads, 3, 16))
        order = guide.order_clusters(clusters, generator=torch.Generator().manual_seed(0))
    # order[t, p] is the cluster placed p-th; perm (cluster -> position) is its inverse
    position = order.argsort(-1)
    observed = torch.stack([(position == torch.tensor(p)).all(-1).double().mean() for p in perms])
    sd = (probs * (1 - probs) / threads).sqrt()
    assert ((observed - probs).abs() < 4 * sd + 1e-9).all(), (observed, probs)
    greedy = _guide(sample_order=False)
    greedy.load_state_dict(guide.state_dict())
    with torch.no_grad():
        first = greedy.order_clusters(clusters)
        asked = guide.order_clusters(clusters, greedy=True)  # the sampling guide, greedy for this call
    assert (first == first[0]).all()  # greedy: one order for all threads
    assert torch.equal(asked, first) and guide.sample_order


def test_cardinality_caps_sampled_clusters():
    guide = _guide(max_cluster_size=2)
    model = OrderedGaussianCatalog()
    x, _ = model.simulate(1, num_points=12, seed=2).unpadded(0)
    with pytest.warns(UserWarning, match="no record of the model"):
        post = pyro_acp.infer(model, x, guide=guide, num_samples=10, seed=0, progress_bar=False, check_prior=False)
    assert isinstance(post, OrderedClusteringPosterior)
    assert bool((cap_adherence(post.samples, 2) == 1).all())
    with torch.no_grad():  # a head that predicts no other member: every cluster is its anchor alone
        guide.cardinality_net[-1].bias.fill_(-1e4)
    guide.max_cluster_size = None
    with pytest.warns(UserWarning, match="no record of the model"):
        post = pyro_acp.infer(model, x, guide=guide, num_samples=5, seed=0, progress_bar=False, check_prior=False)
    assert bool((post.num_clusters == 12).all())


def test_objective_is_the_clustering_bound_plus_the_weighted_heads():
    """The IWAE loss of NOC with weights (a, b) minus that with (0, 0), on the same draws, is exactly
    -(a * sum log p(order) - b * sum (t - n)^2) / B: the heads enter as factors that do not depend on z."""
    batch = OrderedGaussianCatalog().simulate(4, num_points=(3, 12), seed=3)
    guide = _guide(ordering_weight=0.0, cardinality_weight=0.0)
    elbo = ClusterwiseIWAE(num_particles=3)

    def loss(a, b):
        guide.ordering_weight, guide.cardinality_weight = a, b
        pyro.set_rng_seed(7)
        with torch.no_grad():
            return elbo.differentiable_loss(guide.model, guide.guide, batch)

    with torch.no_grad():
        order = guide.order_log_prob(batch).sum()
        enc = guide.encode(batch)
        squared = (guide.cardinality(enc) - enc.targets.sum(-1)).square().sum()
    base = loss(0.0, 0.0)
    assert float(loss(4.0, 0.003) - base) == pytest.approx(-float(4.0 * order - 0.003 * squared) / 4, rel=1e-5)
    assert float(loss(0.0, 1.0) - base) == pytest.approx(float(squared) / 4, rel=1e-5)
    assert float(order) < 0 and float(squared) > 0  # the heads' terms are really there


def test_nocs_starts_from_a_trained_acps_and_caps_by_the_model():
    from pyro_acp.guides import ACPS
    from pyro_acp.guides.noc import NOCS

    with torch.random.fork_rng():
        torch.manual_seed(1)
        source = ACPS(2, hidden_dim=16, center=True)
        guide = NOCS(2, hidden_dim=16, center=True, max_cluster_size=3, size_cap="model")
    heads = {k: v.clone() for k, v in guide.state_dict().items() if k.startswith(guide.HEAD_PREFIXES)}
    guide.load_clustering(source)
    for name, value in guide.state_dict().items():
        expected = heads[name] if name.startswith(guide.HEAD_PREFIXES) else source.state_dict()[name]
        assert torch.equal(value, expected), name
    assert build_guide(guide.config).config == guide.config and guide.config["type"] == "NOCS"
    with pytest.raises(ValueError, match="do not fit the clustering part"):
        guide.load_clustering(ACPS(2, hidden_dim=32))
    x, _ = OrderedGaussianCatalog().simulate(1, num_points=12, seed=2).unpadded(0)
    with torch.no_grad():
        guide.cardinality_net[-1].bias.fill_(-1e4)  # the head says "alone", but size_cap="model" ignores it
        labels = sample_partitions(guide, x, 20, generator=torch.Generator().manual_seed(0), ordered=True)[0]
    assert bool((cap_adherence(labels, 3) == 1).all()) and bool((labels.max(-1).values < 11).all())
    with pytest.raises(ValueError, match="size_cap"):
        NOCS(2, hidden_dim=16, size_cap="never")


def test_config_rebuilds_the_guide():
    guide = _guide(ordering_weight=15.0, cardinality_weight=0.1, max_cluster_size=6)
    rebuilt = build_guide(guide.config)
    assert type(rebuilt) is NOC and rebuilt.config == guide.config
    assert rebuilt.max_cluster_size == 6 and rebuilt.ordering_weight == 15.0
    with pytest.raises(ValueError, match="non-negative"):
        NOC(2, hidden_dim=16, ordering_weight=-1.0)


# tiny procedural rules (sections of two tokens), so catalogs of eight tokens
TINY_RULES = {
    "colours": ["red", "blue", "green"], "section_size": [2, 2], "num_tokens": [6, 10],
    "sections": {"r2": {"red": 2}, "b2": {"blue": 2}, "g2": {"green": 2}, "rb2": {"red": 1, "blue": 1}},
    "compositions": {"rbg": {"colours": ["red", "blue", "green"], "order": [["r2"], ["b2", "rb2"], ["g2"]]}},
}


@pytest.mark.slow
def test_procedural_catalogs_train_and_infer_from_colour_indices():
    model = ProceduralCatalog(TINY_RULES)
    guide = NOC(model.data_dim, hidden_dim=16, ordering_weight=15.0, cardinality_weight=0.1, max_cluster_size=2)
    pyro_acp.train(model, guide, steps=2, batch_size=4, num_particles=2, num_points=(8, 9), seed=0, progress_bar=False,
                   validate_every=0, validation_size=2)
    x, _ = model.simulate(1, num_points=8, seed=3).unpadded(0)
    colours = x.argmax(-1)  # integer colour indices, as a user would pass tokens
    post = pyro_acp.infer(model, colours, guide=guide, num_samples=4, seed=0, progress_bar=False, check_prior=False)
    assert isinstance(post, OrderedClusteringPosterior) and post.num_points == 8
    assert bool((cap_adherence(post.samples, 2) == 1).all())
    scores = catalog_scores(colours, post.samples, model)
    assert scores.structural.shape == (4,) and bool(((scores.structural >= 0) & (scores.structural <= 1)).all())


# A few hundred steps on tiny data sets: the ordering is learnt (ordered TV ~ unordered TV), the clustering not
# fully. Measured with these settings (torch 2.13, one thread): TV to the exact ordered posterior at N = 4 of
# the data sets simulated with seeds 100-105: 0.19, 0.62, 0.38, 0.32, 0.17, 0.37 (mean 0.34; untrained guide:
# mean 0.97), measured with the earlier cardinality head (a regression on the pooled context; it passes with
# the present share-of-candidates head too); 1,000 samples put the TV's Monte-Carlo noise near 0.03. The TV is
# the clustering's: the unordered TV of the same samples was 0.335, and removing the size cap changed nothing.
# lambda_k = 0.1: with the paper's 0.003
# the cardinality head is still poor after 300 steps and its cap splits clusters (more clusters than the exact
# posterior). One torch thread: these tiny tensors gain nothing from two, and two threads contending on a
# loaded machine made this test 4x slower.
TRAIN = {"steps": 300, "batch_size": 16, "num_particles": 4, "num_points": (2, 7), "lr": 3e-3, "seed": 0,
         "validate_every": 0, "validation_size": 2, "progress_bar": False}
MEAN_TV_TOLERANCE, BEST_TV_TOLERANCE = 0.5, 0.25


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_trained_noc_against_the_exact_ordered_posterior(one_thread):
    model = OrderedGaussianCatalog()

    def fresh():
        with torch.random.fork_rng():
            torch.manual_seed(0)
            return NOC(2, hidden_dim=32, cardinality_weight=0.1)

    guide, untrained = fresh(), fresh()
    untrained.trained_for = model.config()  # compared as it is, without the untrained-guide warning
    pyro_acp.train(model, guide, **TRAIN)
    trained_tv, untrained_tv = [], []
    for seed in range(100, 106):
        x, _ = model.simulate(1, num_points=4, seed=seed).unpadded(0)
        exact = exact_ordered_posterior(model, x)
        for g, tvs in ((guide, trained_tv), (untrained, untrained_tv)):
            # TV needs the samples only; the guide on the data as given (averaging over frames is tested apart)
            post = pyro_acp.infer(model, x, guide=g, num_samples=1000, seed=0, progress_bar=False, check_prior=False,
                                  estimate_log_prob=False, symmetrize=False)
            assert isinstance(post, OrderedClusteringPosterior)
            tvs.append(ordered_total_variation(post, exact))
    trained_tv, untrained_tv = torch.tensor(trained_tv), torch.tensor(untrained_tv)
    assert float(trained_tv.mean()) < MEAN_TV_TOLERANCE, trained_tv
    assert float(trained_tv.min()) < BEST_TV_TOLERANCE, trained_tv
    assert float(untrained_tv.mean()) > 0.85, untrained_tv  # the comparison can fail: an untrained guide does



def _every_ordered_partition(num_points):
    rows = []
    for partition in enumerate_partitions(num_points):
        k = int(partition.max()) + 1
        rows += [torch.tensor(perm)[partition] for perm in itertools.permutations(range(k))]
    return torch.stack(rows)


@pytest.mark.slow
def test_ordered_log_prob_sums_to_one_and_matches_sampling_frequencies():
    """exp(log q) over all 75 ordered partitions of N = 4 sums to one and matches the frequencies of 5,000
    samples, also in the mixture over two sampling frames. With a cardinality cap of two members that binds
    (a head predicting ~0.3 joiners), the capped scoring is what makes this hold: the uncapped clusterwise
    estimate is far from the draws."""
    guide = _guide()
    with torch.no_grad():
        guide.cardinality_net[-1].bias.fill_(-1.0)
    x, _ = OrderedGaussianCatalog(mean_scale=1.5).simulate(1, num_points=4, seed=5).unpadded(0)
    every = _every_ordered_partition(4)
    assert every.shape[0] == 75  # Fubini(4)
    settings = {"num_anchors": None, "num_z": 16, "num_orders": 16}
    estimate = ordered_log_prob_estimate(guide, x, every, None, settings, torch.Generator().manual_seed(1))
    q = estimate.log_prob.double().exp()
    assert float(q.sum()) == pytest.approx(1.0, abs=0.03), float(q.sum())  # measured 0.990 capped
    assert bool(estimate.orders_enumerated.all()) and bool((estimate.standard_error < 0.3).all())
    draws = 5000
    with torch.no_grad():
        drawn = sample_partitions(guide, x, draws, generator=torch.Generator().manual_seed(2), ordered=True)[0]
    frequency = (drawn.unsqueeze(1) == every.unsqueeze(0)).all(-1).double().mean(0)
    assert float(frequency.sum()) == pytest.approx(1.0)  # every draw is one of the 75
    noise = float(0.5 * (2 * q * (1 - q) / (torch.pi * draws)).sqrt().sum())  # mean TV of sampling noise
    assert ordered_total_variation((every, frequency), (every, q)) < 2 * noise + 0.02, noise
    # measured TV 0.51 between the draws and the uncapped estimate (0.03 capped, 10,000 draws)
    with torch.no_grad():
        free = log_prob_estimate(guide, x, every, generator=torch.Generator().manual_seed(1), **settings)
    uncapped = free.log_prob[0].double().exp() * guide.order_log_prob_of(x, every).double().exp()
    assert ordered_total_variation((every, frequency), (every, uncapped)) > 0.3
    frames = random_frames(2, 2, torch.Generator().manual_seed(3))
    mixture = ordered_log_prob_estimate(guide, x, every, frames, settings, torch.Generator().manual_seed(4))
    assert float(mixture.log_prob.double().exp().sum()) == pytest.approx(1.0, abs=0.03)
    assert not torch.allclose(mixture.log_prob, estimate.log_prob, atol=0.05)  # the frames change q
