"""The same properties on CUDA, where PyTorch picks other kernels (flash, memory-efficient)."""

import pytest
import torch

from attnkit.nn import MultiHeadAttention, reference_attention, scaled_dot_product_attention

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_equals_reference_on_cuda(causal, dtype):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 33, 64, device="cuda", dtype=dtype) for _ in range(3))
    keep = torch.ones(2, 1, 1, 33, dtype=torch.bool, device="cuda")
    keep[1, ..., 20:] = False
    for mask in (None, keep):
        fused = scaled_dot_product_attention(q, k, v, mask, causal=causal)
        expected, _ = reference_attention(q.double(), k.double(), v.double(), mask, causal=causal)
        tolerance = 2e-2 if dtype == torch.bfloat16 else 1e-4
        torch.testing.assert_close(fused.double(), expected, atol=tolerance, rtol=tolerance)


def test_fully_masked_rows_are_zero_on_cuda():
    q, k, v = (torch.randn(1, 2, 4, 16, device="cuda", requires_grad=True) for _ in range(3))
    mask = torch.ones(1, 1, 4, 4, dtype=torch.bool, device="cuda")
    mask[..., 2, :] = False
    out = scaled_dot_product_attention(q, k, v, mask)
    out.sum().backward()
    assert torch.equal(out[..., 2, :], torch.zeros_like(out[..., 2, :]))
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


def test_module_on_cuda():
    mha = MultiHeadAttention(32, 4).cuda()
    x = torch.randn(2, 7, 32, device="cuda")
    assert mha(x, causal=True).shape == (2, 7, 32)
