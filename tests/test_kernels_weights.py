import json

import pytest
import torch

from tg_rapidalign import (
    GaussianKernel,
    MultiBandGaussianKernel,
    degree_weights,
    normalize_weights,
    uniform_weights,
)


def test_multiband_parameters_and_repr():
    k = MultiBandGaussianKernel([0.1, 0.5, 2.0], weights=[1, 1, 2], scale=3.0, learnable_scale=True)
    names = {n for n, _ in k.named_parameters()}
    assert names == {"log_sigma", "logits", "log_scale"}
    sig, coef = k.bands()
    assert torch.allclose(sig, torch.tensor([0.1, 0.5, 2.0], dtype=torch.float64))
    assert torch.allclose(coef, 3.0 * torch.tensor([0.25, 0.25, 0.5], dtype=torch.float64))
    assert torch.allclose(k.mixture_weights.sum(), torch.tensor(1.0, dtype=torch.float64))
    r = repr(k)
    assert "sigmas=[0.1, 0.5, 2]" in r and "weights=[0.250, 0.250, 0.500]" in r and "scale=3" in r
    # Bandwidths stay positive whatever the optimiser does to log sigma.
    with torch.no_grad():
        k.log_sigma -= 100
    assert (k.sigmas > 0).all()


def test_gaussian_kernel_eval_and_learnable():
    k = GaussianKernel(0.5, learnable=True)
    assert [n for n, _ in k.named_parameters()] == ["log_sigma"]
    d2 = torch.tensor([0.0, 0.25, 1.0], dtype=torch.float64)
    assert torch.allclose(k(d2), torch.exp(-d2 / 0.5))
    assert "sigma=0.5" in repr(k)
    assert GaussianKernel(0.5).max_sigma == pytest.approx(0.5)


def test_state_dict_round_trip_without_pickle(tmp_path):
    k = MultiBandGaussianKernel([0.1, 0.3])
    with torch.no_grad():
        k.logits += torch.tensor([0.5, -0.5], dtype=torch.float64)
    state = {n: v.tolist() for n, v in k.state_dict().items()}
    path = tmp_path / "k.json"
    path.write_text(json.dumps(state))
    k2 = MultiBandGaussianKernel([1.0, 1.0])
    k2.load_state_dict({n: torch.tensor(v, dtype=torch.float64)
                        for n, v in json.loads(path.read_text()).items()})
    assert torch.allclose(k2.bands()[1], k.bands()[1])


def test_normalize_weights():
    batch = torch.tensor([0, 0, 0, 1, 1, 2])
    w = torch.tensor([1.0, 1.0, 2.0, 0.0, 0.0, 5.0])
    out = normalize_weights(w, batch, 4)
    assert torch.allclose(out, torch.tensor([0.25, 0.25, 0.5, 0.0, 0.0, 1.0]))
    assert torch.allclose(uniform_weights(batch, 3), torch.tensor([1 / 3] * 3 + [0.5] * 2 + [1.0]))
    w = torch.tensor([1.0, 1.0, 100.0, 1.0, 3.0, 5.0], requires_grad=True)
    out = normalize_weights(w, batch, 3, max_ratio=1.5)
    # Capped at 1.5 / n; the excess goes to the others in proportion.
    assert torch.allclose(out, torch.tensor([0.25, 0.25, 0.5, 0.25, 0.75, 1.0]))
    (out * torch.arange(6.0)).sum().backward()
    assert torch.isfinite(w.grad).all()
    with pytest.raises(ValueError, match="max_ratio must be at least 1"):
        normalize_weights(w, batch, 3, max_ratio=0.5)


def test_capped_weights_property():
    gen = torch.Generator().manual_seed(1)
    for _ in range(20):
        n = int(torch.randint(1, 30, (1,), generator=gen))
        w = torch.rand(n, generator=gen, dtype=torch.float64) ** 4
        batch = torch.zeros(n, dtype=torch.long)
        out = normalize_weights(w, batch, 1, max_ratio=1.3)
        assert torch.allclose(out.sum(), torch.tensor(1.0, dtype=torch.float64))
        assert float(out.max()) <= 1.3 / n * (1 + 1e-9)
        # order preserved; uncapped nodes keep their relative weights
        free = out < 1.3 / n * (1 - 1e-9)
        if free.sum() >= 2:
            ratio = out[free] / w[free]
            assert torch.allclose(ratio, ratio[0].expand_as(ratio))
    w = torch.rand(8, dtype=torch.float64, requires_grad=True)
    batch = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1])
    assert torch.autograd.gradcheck(lambda v: normalize_weights(v, batch, 2, max_ratio=1.2), (w,))


def test_degree_weights():
    edge_index = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    assert torch.allclose(degree_weights(edge_index, 4), torch.tensor([2.0, 3.0, 2.0, 1.0]))
