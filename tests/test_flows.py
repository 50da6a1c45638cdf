import itertools

import pytest
import torch

from tg_rapidalign import DrMMDFlow, drmmd, drmmd_witness_grad, exact_w2, mmd_witness_grad


def data(seed=0, n=40):
    gen = torch.Generator().manual_seed(seed)
    y = torch.randn(n, 2, dtype=torch.float64, generator=gen) * 0.5 + torch.tensor([1.0, 0.0])
    x = torch.randn(n, 2, dtype=torch.float64, generator=gen) * 0.3
    return x, y


@pytest.mark.parametrize("method", ["drmmd", "mmd"])
def test_one_step_is_the_witness_descent(method):
    x, y = data()
    flow = DrMMDFlow(y, sigma=0.6, lam=0.01, step_size=0.5, method=method, w2=False)
    out = flow.run(x, 1, progress=False).particles
    if method == "drmmd":
        expected = x - 0.01 * 0.5 * drmmd_witness_grad(x, x, y, 0.6, 0.01)
    else:
        expected = x - 0.5 * mmd_witness_grad(x, x, y, 0.6)
    assert torch.allclose(out, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.full  # 300-step flows
@pytest.mark.parametrize("method", ["drmmd", "mmd"])
def test_flows_decrease_the_discrepancy(method):
    pytest.importorskip("scipy")  # exact W2 (the demo extra)
    x, y = data(1)
    flow = DrMMDFlow(y, sigma=0.8, lam=0.05, step_size=0.2 if method == "drmmd" else 0.5, method=method,
                     record_every=50)
    res = flow.run(x, 300, progress=False)
    h = res.history
    assert h["step"][0] == 0 and h["step"][-1] == 300
    assert h["mmd2"][-1] < 0.1 * h["mmd2"][0]
    assert h["w2"][-1] < h["w2"][0]
    assert h["w2"][-1] == pytest.approx(exact_w2(res.particles, y), rel=1e-12)


def test_adaptive_lambda_follows_the_schedule():
    x, y = data(2)
    lam0 = 0.02
    flow = DrMMDFlow(y, sigma=0.7, lam=lam0, step_size=1.0, adaptive=True, record_every=1, w2=False)
    res = flow.run(x, 2, progress=False)
    x1 = x - lam0 * drmmd_witness_grad(x, x, y, 0.7, lam0)
    lam1 = lam0 * (float(drmmd(x1, y, 0.7, lam0)) / float(drmmd(x, y, 0.7, lam0))) ** 0.5
    assert res.history["lam"][1] == pytest.approx(lam1, rel=1e-10)
    x2 = x1 - max(lam1 * 1.0, flow.lr_min) * drmmd_witness_grad(x1, x1, y, 0.7, lam1)
    assert torch.allclose(res.particles, x2, rtol=1e-10)


def test_noise_injection_is_reproducible_and_used():
    x, y = data(3)
    flow = DrMMDFlow(y, 0.6, 0.05, 0.5, noise=0.1, noise_decay=0.9, w2=False)
    runs = [flow.run(x, 5, progress=False, generator=torch.Generator().manual_seed(s)).particles
            for s in (0, 0, 1)]
    assert torch.equal(runs[0], runs[1])
    assert not torch.allclose(runs[0], runs[2])


def test_exact_w2_against_all_permutations():
    pytest.importorskip("scipy")  # exact W2 (the demo extra)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(5, 2, generator=gen), torch.randn(5, 2, generator=gen)
    best = min(float((x - y[list(p)]).pow(2).sum(1).mean()) for p in itertools.permutations(range(5)))
    assert exact_w2(x, y) == pytest.approx(best**0.5, rel=1e-6)
    with pytest.raises(ValueError, match="equal sizes"):
        exact_w2(x, y[:4])


def test_float32_particles_and_repr():
    pytest.importorskip("scipy")  # run() records the exact W2 (flows.py imports scipy for it)
    x, y = data(4)
    flow = DrMMDFlow(y.float(), 0.6, 0.05, 0.5)
    out = flow.run(x.float(), 3, progress=False)
    assert out.particles.dtype == torch.float32 and torch.isfinite(out.particles).all()
    assert "DrMMDFlow(method='drmmd'" in repr(flow)


def test_bad_input():
    x, y = data()
    with pytest.raises(ValueError, match="lam"):
        DrMMDFlow(y, lam=0)
    with pytest.raises(ValueError, match="method"):
        DrMMDFlow(y, method="sinkhorn")
    with pytest.raises(ValueError, match="noise_decay"):
        DrMMDFlow(y, noise_decay=1.5)
    with pytest.raises(ValueError, match="x0 contains NaN"):
        DrMMDFlow(y).run(torch.full_like(x, float("nan")), 1, progress=False)
    with pytest.raises(ValueError, match="columns"):
        DrMMDFlow(y).run(torch.randn(3, 3, dtype=torch.float64), 1, progress=False)
