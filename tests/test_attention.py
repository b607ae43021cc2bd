import pytest
import torch

from pyro_acp.nn.attention import ISAB, MAB, PMA, masked_attention, pooled, pooled_by_dataset


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(3, 7, 16, generator=g), torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1] * 2 + [0] * 5]).bool()


def test_fully_masked_row_gives_zeros_not_nan():
    q = torch.randn(2, 4, 3, 8)
    out = masked_attention(q, q, q, torch.zeros(2, 3, dtype=torch.bool))
    assert torch.equal(out, torch.zeros_like(out))
    pma = PMA(16, 16, 1)
    x = torch.randn(2, 5, 16)
    summary = pooled(pma, x, torch.zeros(2, 5, dtype=torch.bool))
    assert torch.equal(summary, torch.zeros(2, 16))


def test_scale_is_per_head():
    torch.manual_seed(0)
    mab = MAB(8, 8, 8, num_heads=2)
    x = torch.randn(1, 3, 8)
    q = mab._heads(mab.fc_q(x))
    k = mab._heads(mab.fc_k(x))
    v = mab._heads(mab.fc_v(x))
    expected = torch.softmax(q @ k.transpose(-1, -2) / 2.0, -1) @ v  # sqrt(per-head width 4) = 2
    assert torch.allclose(masked_attention(q, k, v, None), expected, atol=1e-6)


@pytest.mark.parametrize("layer_norm", [False, True])
def test_outputs_unchanged_by_padding(data, layer_norm):
    x, mask = data
    torch.manual_seed(0)
    isab, pma = ISAB(16, 16, 4, layer_norm=layer_norm), PMA(16, 16, 2, layer_norm=layer_norm)
    padded = torch.cat([x, torch.randn(3, 5, 16) * 100], 1)
    padded_mask = torch.cat([mask, torch.zeros(3, 5, dtype=torch.bool)], 1)
    assert torch.allclose(isab(x, mask)[mask], isab(padded, padded_mask)[:, :7][mask], atol=1e-5)
    assert torch.allclose(pma(x, mask), pma(padded, padded_mask), atol=1e-5)


def test_permutation_equivariance_and_invariance(data):
    x, mask = data
    torch.manual_seed(1)
    isab, pma = ISAB(16, 16, 4), PMA(16, 16, 1)
    perm = torch.randperm(7)
    assert torch.allclose(isab(x, mask)[:, perm], isab(x[:, perm], mask[:, perm]), atol=1e-5)
    assert torch.allclose(pma(x, mask), pma(x[:, perm], mask[:, perm]), atol=1e-5)


def test_stacked_blocks_have_independent_weights():
    blocks = torch.nn.ModuleList(ISAB(8, 8, 2) for _ in range(3))
    ids = {id(p) for p in blocks.parameters()}
    assert len(ids) == sum(1 for _ in blocks.parameters())
    assert not torch.equal(blocks[0].mab.fc_q.weight, blocks[1].mab.fc_q.weight)


def test_width_must_divide_heads():
    with pytest.raises(ValueError, match="divisible"):
        MAB(8, 8, 10, num_heads=4)


@pytest.mark.parametrize("num_sets", [1, 5])
def test_pooling_by_data_set_equals_pooling_the_gathered_rows(num_sets):
    """Rows pooling subsets of shared data sets (unbalanced, one data set without rows, unsorted rows)
    give what pooling each row's own copy of its data set gives."""
    torch.manual_seed(0)
    pma = PMA(8, 8, 1, 2)
    x = torch.randn(num_sets, 12, 8)
    dataset = torch.randint(0, num_sets, (40,))
    if num_sets > 1:
        dataset[dataset == 1] = 0  # data set 1 has no rows
    mask = torch.rand(40, 12) < 0.6
    mask[3] = False  # an empty subset pools to zeros
    expected = pooled(pma, x[dataset], mask)
    got = pooled_by_dataset(pma, x, dataset, mask)
    assert torch.allclose(got, expected, atol=1e-5) and torch.equal(got[3], torch.zeros(8))
