"""chunked_attention: the reference computation in query blocks with a hand-written backward."""

import pytest
import torch

from attnkit.nn.attention import chunked_attention, reference_attention


def _inputs(q_len: int, k_len: int, dtype: torch.dtype = torch.float64) -> list[torch.Tensor]:
    return [torch.randn(2, 3, n, 8, dtype=dtype, requires_grad=True) for n in (q_len, k_len, k_len)]


def _masks(q_len: int, k_len: int) -> dict[str, torch.Tensor | None]:
    padding = torch.ones(2, 1, 1, k_len, dtype=torch.bool)
    padding[1, ..., k_len - 4 :] = False
    rows = torch.rand(2, 3, q_len, k_len) > 0.4
    rows[0, 1, q_len - 1] = False  # one query with nothing to attend to
    return {"none": None, "padding": padding, "per-row": rows}


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("mask_name", ["none", "padding", "per-row"])
@pytest.mark.parametrize(("q_len", "k_len", "chunk"), [(13, 13, 4), (13, 13, 64), (5, 13, 2), (1, 9, 3)])
def test_chunked_equals_reference(causal, mask_name, q_len, k_len, chunk):
    torch.manual_seed(0)
    q, k, v = _inputs(q_len, k_len)
    mask = _masks(q_len, k_len)[mask_name]
    out = chunked_attention(q, k, v, mask, causal=causal, chunk_size=chunk)
    expected, _ = reference_attention(q, k, v, mask, causal=causal)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)
    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), grad_out)
    expected_grads = torch.autograd.grad(expected, (q, k, v), grad_out)
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("causal", [False, True])
def test_chunked_gradcheck_through_dropout(causal):
    """The backward pass regenerates exactly the forward pass's dropout masks."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 1, 7, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    mask = _masks(7, 7)["padding"]

    def attend(q, k, v):
        torch.manual_seed(1)  # the same masks on every call gradcheck makes
        return chunked_attention(q, k, v, mask, causal=causal, dropout_p=0.3, chunk_size=4)

    assert torch.autograd.gradcheck(attend, (q, k, v))


def test_chunked_dropout_drops_and_rescales():
    torch.manual_seed(0)
    q, k = torch.zeros(1, 1, 64, 4), torch.zeros(1, 1, 256, 4)
    v = torch.ones(1, 1, 256, 1)
    # Uniform weights 1/256 over values of 1: each output is (kept fraction) / (1 - p).
    out = chunked_attention(q, k, v, dropout_p=0.25, chunk_size=16)
    assert not torch.equal(out, torch.ones_like(out))
    torch.testing.assert_close(out.mean(), torch.tensor(1.0), atol=0.02, rtol=0)
    torch.manual_seed(5)
    first = chunked_attention(q, k, v, dropout_p=0.25)
    torch.manual_seed(5)
    torch.testing.assert_close(chunked_attention(q, k, v, dropout_p=0.25), first, rtol=0, atol=0)


def test_chunked_rejects_bad_chunk_size():
    q, k, v = _inputs(3, 3)
    with pytest.raises(ValueError, match="chunk_size"):
        chunked_attention(q, k, v, chunk_size=0)
