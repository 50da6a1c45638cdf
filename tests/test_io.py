import json

import pytest
import torch

from tg_rapidalign import GaussianKernel, MultiBandGaussianKernel, kernel_mmd
from tg_rapidalign.io import load_kernel, save_kernel


def trained_multiband():
    kern = MultiBandGaussianKernel([0.2, 0.7, 1.5], weights=[0.2, 0.5, 0.3], learnable_scale=True)
    with torch.no_grad():
        kern.log_sigma.add_(torch.tensor([0.013, -0.21, 0.3], dtype=torch.float64))
        kern.logits.add_(torch.tensor([0.1, -0.4, 0.05], dtype=torch.float64))
        kern.log_scale.add_(0.123)
    return kern


@pytest.mark.parametrize("make", [trained_multiband, lambda: GaussianKernel(0.37, learnable=True, scale=2.5)])
def test_round_trip_is_exact(tmp_path, make):
    kern = make()
    path = tmp_path / "kernel.json"
    meta = {"loss": "kernel_mmd", "corruption": {"kind": "noise", "levels": [0, 0.5]}}
    save_kernel(kern, path, metadata=meta)
    loaded, meta = load_kernel(path, return_metadata=True)
    assert type(loaded) is type(kern)
    for a, b in zip(kern.bands(), loaded.bands()):
        assert torch.equal(a.detach(), b.detach())
    assert [isinstance(p, torch.nn.Parameter) for p in (loaded.log_sigma, loaded.log_scale)] == \
        [isinstance(p, torch.nn.Parameter) for p in (kern.log_sigma, kern.log_scale)]
    assert meta["corruption"]["levels"] == [0, 0.5]
    x, y = torch.randn(30, 3, dtype=torch.float64), torch.randn(25, 3, dtype=torch.float64)
    before, after = (kernel_mmd(x, y, sigma=k, backend="dense") for k in (kern, loaded))
    assert torch.equal(before, after)


def test_tampered_and_malformed_files_are_refused(tmp_path):
    path = tmp_path / "k.json"
    save_kernel(trained_multiband(), path)
    doc = json.loads(path.read_text())
    doc["kernel"]["log_sigma"][0] += 1.0
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="checksum"):
        load_kernel(path)
    path.write_text(path.read_text()[:50])
    with pytest.raises(ValueError, match="not valid JSON"):
        load_kernel(path)
    path.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="not a tg_rapidalign.kernel file"):
        load_kernel(path)
    save_kernel(GaussianKernel(1.0), path)
    doc = json.loads(path.read_text())
    doc["kernel"]["type"] = "os.system"
    from tg_rapidalign.io import _digest
    doc["sha256"] = _digest(doc["kernel"], doc["metadata"])  # a consistent checksum does not help
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="unknown kernel type"):
        load_kernel(path)
    doc["kernel"]["type"] = "GaussianKernel"
    doc["kernel"]["log_sigma"] = ["1"]
    doc["sha256"] = _digest(doc["kernel"], doc["metadata"])
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="log_sigma"):
        load_kernel(path)


def test_bad_arguments(tmp_path):
    with pytest.raises(TypeError, match="kernel"):
        save_kernel(torch.nn.Linear(2, 2), tmp_path / "x.json")
    with pytest.raises(ValueError, match="metadata"):
        save_kernel(GaussianKernel(1.0), tmp_path / "x.json", metadata={"bad": float("nan")})


@pytest.mark.parametrize("learnable", [True, False])
def test_cross_type_weight_round_trip_and_tampering(tmp_path, learnable):
    kern = MultiBandGaussianKernel([0.3, 0.9], learnable=learnable, cross_type_weight=0.27)
    with torch.no_grad():
        kern.type_logit.add_(0.0123)
    path = tmp_path / "typed.json"
    save_kernel(kern, path)
    loaded = load_kernel(path)
    assert torch.equal(loaded.type_logit, kern.type_logit)
    assert isinstance(loaded.type_logit, torch.nn.Parameter) == learnable
    x, y = torch.randn(20, 3, dtype=torch.float64), torch.randn(22, 3, dtype=torch.float64)
    tx, ty = torch.randint(0, 3, (20,)), torch.randint(0, 3, (22,))
    assert torch.equal(kernel_mmd(x, y, sigma=kern, type_x=tx, type_y=ty),
                       kernel_mmd(x, y, sigma=loaded, type_x=tx, type_y=ty))
    doc = json.loads(path.read_text())
    doc["kernel"]["type_logit"] = 3.0
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="checksum"):
        load_kernel(path)
    # A consistent checksum does not let a malformed value through.
    from tg_rapidalign.io import _digest
    doc["kernel"]["type_logit"] = "high"
    doc["sha256"] = _digest(doc["kernel"], doc["metadata"])
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="type_logit"):
        load_kernel(path)
    # Files without the field (untyped kernels) load without a cross-type weight.
    save_kernel(MultiBandGaussianKernel([0.5]), path)
    assert load_kernel(path).type_weight() is None
