"""Ordered catalogs: size caps and order of the Gaussian catalog, rule-abiding procedural catalogs, bad rules."""

from __future__ import annotations

import copy
import json
import math
from collections import Counter

import pyro
import pytest
import torch

from pyro_acp.models import OrderedGaussianCatalog, ProceduralCatalog, load_rules
from pyro_acp.models.catalogs import DEFAULT_RULES_PATH, ordered_catalog_labels

# ---------------------------------------------------------------------------------------------- ordered Gaussians


def _reference_order(labels: list[int], means: torch.Tensor, cap: int | None) -> list[int]:
    """Plain-Python statement of the rule: split round-robin, rank parts by the distance of their mean."""
    parts = {}
    for i, c in enumerate(labels):
        parts.setdefault(c, []).append(i)
    pieces = []  # (distance, cluster, part index, members)
    for c, members in parts.items():
        m = 1 if cap is None else math.ceil(len(members) / cap)
        for j in range(m):
            pieces.append((float(means[c].norm()), c, j, members[j::m]))
    pieces.sort(key=lambda t: (t[0], t[1], t[2]))
    out = [0] * len(labels)
    for rank, (*_, members) in enumerate(pieces):
        for i in members:
            out[i] = rank
    return out


@pytest.mark.parametrize("cap", [None, 30, 4, 1])
def test_ordered_labels_match_reference(cap):
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 5, (6, 40), generator=gen)
    labels[:, 0] = 4  # one large cluster somewhere
    labels[3, :] = 2  # a single cluster of 40 points
    means = 10 * torch.randn(6, 5, 2, generator=gen)
    ours = ordered_catalog_labels(labels, means, cap)
    for b in range(6):
        assert ours[b].tolist() == _reference_order(labels[b].tolist(), means[b], cap)


def test_ordered_labels_keep_padding():
    labels = torch.tensor([[1, 0, 1, -1, -1]])
    means = torch.tensor([[[3.0, 0.0], [1.0, 0.0]]])
    assert ordered_catalog_labels(labels, means, None).tolist() == [[0, 1, 0, -1, -1]]  # cluster 1 is nearer


def test_ordered_gaussian_catalog_batches_respect_cap_and_order():
    model = OrderedGaussianCatalog(max_cluster_size=10)
    batch = model.simulate(32, num_points=(40, 100), seed=1)
    assert batch.ordered and model.ordered and model.data_kind == "catalog"
    sizes = batch.members.sum(-1)
    assert sizes.max() <= 10
    assert (sizes[batch.step_mask] >= 1).all()
    # Cluster means' distances grow with the position (up to the noise of empirical means).
    centroid = (batch.members.unsqueeze(-1) * batch.x.unsqueeze(1)).sum(2) / sizes.clamp(min=1).unsqueeze(-1)
    dist = centroid.norm(dim=-1)
    later = batch.step_mask[:, 1:]
    decreasing = (dist[:, 1:] < dist[:, :-1] - 2.5) & later
    assert not decreasing.any()


def test_ordered_catalog_trace_records_partition_and_order():
    model = OrderedGaussianCatalog(max_cluster_size=5)
    pyro.set_rng_seed(3)
    trace = pyro.poutine.trace(model.model).get_trace(num_points=40)
    partition = trace.nodes["partition"]["value"]
    means = trace.nodes["means"]["value"]
    labels = trace.nodes["labels"]["value"]
    assert labels.tolist() == _reference_order(partition.tolist(), means, 5)
    assert torch.bincount(labels).max() <= 5


def test_ordered_catalog_bad_cap():
    with pytest.raises(ValueError, match="max_cluster_size"):
        OrderedGaussianCatalog(max_cluster_size=0)


# ---------------------------------------------------------------------------------------------- procedural


def _catalog_violations(model: ProceduralCatalog, x: torch.Tensor, labels: torch.Tensor) -> list[str]:
    """Check one catalog against the rules file directly (not through the parsed tensors)."""
    raw = model.rules.raw
    colours = raw["colours"]
    tokens = [colours[c] for c in x.argmax(1).tolist()]
    present = set(tokens)
    matches = [name for name, spec in raw["compositions"].items() if set(spec["colours"]) == present]
    if len(matches) != 1:
        return [f"no composition for colours {sorted(present)}"]
    order = raw["compositions"][matches[0]]["order"]
    group_of = {s: g for g, members in enumerate(order) for s in members}
    problems, previous = [], -1
    for k in range(int(labels.max()) + 1):
        content = Counter(t for t, lab in zip(tokens, labels.tolist(), strict=True) if lab == k)
        kinds = [s for s in group_of if Counter(raw["sections"][s]) == content]
        if not kinds:
            problems.append(f"section {k} {dict(content)} is not allowed")
            continue
        group = group_of[kinds[0]]
        if group < previous:
            problems.append(f"section {k} of group {group} comes after group {previous}")
        previous = group
    return problems


def test_procedural_catalogs_follow_the_rules():
    model = ProceduralCatalog()
    batch = model.simulate(64, seed=4)
    assert batch.ordered and model.data_dim == 5
    n = batch.num_points
    assert n.min() >= 35 and n.max() <= 50 and len(set(n.tolist())) > 5
    assert ((batch.x.sum(-1) == 1) == batch.mask).all(), "x is a one-hot colour on real tokens"
    sizes = batch.members.sum(-1)[batch.step_mask]
    assert sizes.min() >= 4 and sizes.max() <= 6
    for b in range(64):
        x, labels = batch.unpadded(b)
        assert _catalog_violations(model, x, labels) == []


def test_procedural_grammar_site_and_exact_sizes():
    model = ProceduralCatalog()
    pyro.set_rng_seed(5)
    trace = pyro.poutine.trace(model.model).get_trace(num_points=40)
    catalog = trace.nodes["catalog"]["value"]
    assert catalog.shape == (40, 2)
    assert torch.equal(trace.nodes["labels"]["value"], catalog[:, 0])
    assert _catalog_violations(model, trace.nodes["x"]["value"], catalog[:, 0]) == []
    for n in (35, 43, 50):
        assert model.simulate(3, num_points=n, seed=n).num_points.tolist() == [n] * 3


def test_procedural_check_data():
    model = ProceduralCatalog()
    assert torch.equal(model.check_data(torch.tensor([0, 2, 1])), torch.eye(5)[[0, 2, 1]])
    with pytest.raises(ValueError, match="one-hot"):
        model.check_data(torch.full((4, 5), 0.2))
    with pytest.raises(ValueError, match="token 7 at position 1 is outside the vocabulary"):
        model.check_data(torch.tensor([0, 7]))
    assert torch.equal(model.check_data(["red", "blue", "yellow"]), torch.eye(5)[[0, 2, 1]])  # colour names
    with pytest.raises(ValueError, match=r"token 'pink' at position 2 is not in the vocabulary \['red'"):
        model.check_data(["red", "blue", "pink"])
    with pytest.raises(ValueError, match="row 1 is"):
        model.check_data(torch.tensor([[1.0, 0, 0, 0, 0], [0.5, 0.5, 0, 0, 0]]))
    with pytest.raises(TypeError, match="single string 'red'"):
        model.check_data("red")
    for empty in ([], torch.zeros(0, dtype=torch.long), torch.zeros(0, 5)):
        with pytest.raises(ValueError, match="the catalog is empty"):
            model.check_data(empty)
    with pytest.raises(ValueError, match="the catalog is empty"):
        OrderedGaussianCatalog().check_data(torch.zeros(0, 2))
    with pytest.raises(ValueError, match="could not generate"):
        model.simulate(2, num_points=3, seed=0)


def _default_rules() -> dict:
    return json.loads(DEFAULT_RULES_PATH.read_text())


def _break(kind: str) -> dict:
    rules = copy.deepcopy(_default_rules())
    comp = rules["compositions"]["red_yellow_blue"]
    if kind == "missing key":
        del rules["sections"]
    elif kind == "unknown colour":
        rules["sections"]["red4"] = {"pink": 4}
    elif kind == "section size":
        rules["sections"]["red6"] = {"red": 9}
    elif kind == "bad count":
        rules["sections"]["red4"] = {"red": -4}
    elif kind == "unknown section":
        comp["order"][1].append("green9")
    elif kind == "two groups":
        comp["order"][2].append("red4")
    elif kind == "inconsistent colours":
        comp["colours"] = ["red", "yellow", "blue", "green"]
    elif kind == "same colours":
        rules["compositions"]["copy"] = copy.deepcopy(comp)
    elif kind == "empty group":
        comp["order"][1] = []
    elif kind == "num_tokens":
        rules["num_tokens"] = [50, 35]
    elif kind == "too few tokens":
        rules["num_tokens"] = [5, 10]
    return rules


@pytest.mark.parametrize("kind,message", [
    ("missing key", "missing key 'sections'"),
    ("unknown colour", "section 'red4' uses unknown colour 'pink'"),
    ("section size", "section 'red6' has 9 tokens"),
    ("bad count", "section 'red4' has a non-positive"),
    ("unknown section", "composition 'red_yellow_blue' order group 2 lists unknown section 'green9'"),
    ("two groups", "composition 'red_yellow_blue' lists section 'red4' in two order groups"),
    ("inconsistent colours", "composition 'red_yellow_blue' declares colours"),
    ("same colours", "compositions 'red_yellow_blue' and 'copy' have the same colours"),
    ("empty group", "composition 'red_yellow_blue' order group 2 must be a non-empty list"),
    ("num_tokens", "'num_tokens' must be a range"),
    ("too few tokens", "composition 'red_yellow_blue' needs at least 12 tokens"),
])
def test_bad_rules_name_the_offending_rule(kind, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        ProceduralCatalog(rules=_break(kind))


def test_bad_rules_files(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        ProceduralCatalog(rules=tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"colours": ["red",')
    with pytest.raises(ValueError, match="not valid JSON"):
        ProceduralCatalog(rules=broken)
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    with pytest.raises(ValueError, match="must be a JSON object"):
        load_rules(listed)


def test_custom_rules_file_round_trips_through_config(tmp_path):
    rules = _default_rules()
    del rules["compositions"]["all_colours"]
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(rules))
    model = ProceduralCatalog(rules=path)
    assert len(model.rules.composition_names) == 3
    config = json.loads(json.dumps(model.config()))
    assert config["rules"] == rules
    assert ProceduralCatalog(**{k: v for k, v in config.items() if k != "type"}) == model
    assert model != ProceduralCatalog()


def test_procedural_catalogs_ask_for_the_papers_loss_weights():
    from pyro_acp.protocols import guide_options

    options = guide_options(ProceduralCatalog())
    assert options == {"type": "NOC", "ordering_weight": 15.0, "cardinality_weight": 0.1}
    assert guide_options(OrderedGaussianCatalog())["type"] == "NOC"  # declared by being ordered
