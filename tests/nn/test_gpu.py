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


def test_static_cache_and_compiled_steps_on_cuda():
    from attnkit.decode import CausalLMStepper, greedy_decode
    from attnkit.models.gpt import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=23, max_len=16, d_model=32, n_heads=4, n_layers=2)).cuda().eval()
    ids = torch.randint(0, 23, (2, 12), device="cuda")
    with torch.no_grad():
        cache = model.new_cache(16)
        steps = [model(ids[:, :4], cache=cache)] + [model(ids[:, t : t + 1], cache=cache) for t in range(4, 12)]
        torch.testing.assert_close(torch.cat(steps, dim=1), model(ids), atol=1e-4, rtol=1e-4)
    outs = [
        greedy_decode(CausalLMStepper(model, compile=c), ids[:, :3], eos_id=None, max_new_tokens=10, pad_id=None)
        for c in (False, True)
    ]
    assert torch.equal(outs[0], outs[1])


def test_dropout_on_cuda_is_pytorchs_own():
    from attnkit.nn import Dropout

    x = torch.randn(1000, device="cuda")
    torch.manual_seed(0)
    expected = torch.nn.functional.dropout(x, 0.3, True)
    torch.manual_seed(0)
    assert torch.equal(Dropout(0.3)(x), expected)
