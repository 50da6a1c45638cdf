import pytest
import torch

from tg_rapidalign.ops import small_linalg


def _sym(n, device="cpu"):
    A = torch.randn(n, 3, 3, dtype=torch.float64, device=device)
    return A + A.transpose(1, 2)


def test_split_apply_equals_one_call():
    A = _sym(1000)
    for fn in (torch.linalg.eigh, torch.linalg.svd):
        whole = fn(A)
        split = small_linalg.split_apply(fn, A, 64)
        for w, s in zip(whole, split):
            assert torch.equal(w, s)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_large_cuda_batches_run_and_reconstruct():
    A = _sym(3 * small_linalg.CUDA_CHUNK + 5, "cuda")
    vals, vecs = small_linalg.eigh(A)
    assert torch.allclose(vecs @ torch.diag_embed(vals) @ vecs.transpose(1, 2), A, atol=1e-10)
    U, s, Vh = small_linalg.svd(A)
    assert torch.allclose(U @ torch.diag_embed(s) @ Vh, A, atol=1e-10)
