import pytest
import torch

from tg_rapidalign import kernel_mmd, mmd_two_sample_test


def test_statistics_are_the_unbiased_mmd():
    x, y = torch.randn(20, 3, dtype=torch.float64), torch.randn(25, 3, dtype=torch.float64)
    res = mmd_two_sample_test(x, y, sigmas=[0.5, 2.0], num_permutations=20)
    for s, stat in zip((0.5, 2.0), res.statistics):
        ref = kernel_mmd(x, y, sigma=s, unbiased=True, cutoff=None, backend="dense")[0]
        assert float(stat) == pytest.approx(float(ref), rel=1e-10, abs=1e-14)


def test_detects_a_shift_and_keeps_its_level():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(60, 2, generator=gen)
    assert mmd_two_sample_test(x, torch.randn(60, 2, generator=gen) + 0.8, num_permutations=200,
                               generator=gen).p_value < 0.01
    rejections = sum(
        mmd_two_sample_test(torch.randn(30, 2, generator=gen), torch.randn(30, 2, generator=gen),
                            num_permutations=100, generator=gen).p_value <= 0.05 for _ in range(40))
    assert rejections <= 6  # level 5%: 2 expected, 6 has probability < 2% under H0


def test_bad_input():
    x = torch.randn(5, 2)
    with pytest.raises(ValueError, match="at least two"):
        mmd_two_sample_test(x[:1], x)
    with pytest.raises(ValueError, match="sigmas"):
        mmd_two_sample_test(x, x, sigmas=[0.0])
    with pytest.raises(ValueError, match="num_permutations"):
        mmd_two_sample_test(x, x, num_permutations=0)
