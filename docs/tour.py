# %% [markdown]
# # A guided tour of self-attention, on attnkit's own functions
#
# The path the tutorials take, from two vectors to a trained model, with a picture at every step.
# Run it top to bottom as a script (`python docs/tour.py`; the pictures go to `$TOUR_OUT`, by default
# `tour-pictures/`) or open it as a notebook in Jupyter or VS Code (the `# %%` lines are its cells).

# %%
import os
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from attnkit.nn import MultiHeadAttention, causal_mask, padding_mask, reference_attention

OUT = Path(os.environ.get("TOUR_OUT", "tour-pictures"))
OUT.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)


def show(matrix, title, rows=None, cols=None, name=None):
    """A heatmap of a 2-D tensor with its numbers written in; saved as OUT/name.png."""
    matrix = matrix.detach().float()
    fig, axis = plt.subplots(figsize=(1 + 0.6 * matrix.size(1), 1 + 0.5 * matrix.size(0)))
    axis.imshow(matrix.numpy(), cmap="Blues")
    for i in range(matrix.size(0)):
        for j in range(matrix.size(1)):
            axis.text(j, i, f"{float(matrix[i, j]):.2f}", ha="center", va="center", fontsize=8)
    axis.set_xticks(range(matrix.size(1)), cols or range(matrix.size(1)))
    axis.set_yticks(range(matrix.size(0)), rows or range(matrix.size(0)))
    axis.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(OUT / f"{name or re.sub(r'[^A-Za-z0-9]+', '_', title).strip('_')}.png", dpi=90)
    plt.close(fig)


# %% [markdown]
# ## 1. Two words, one query
#
# Each input vector x is projected three ways: a query q = x W_Q (what this word looks for), a key
# k = x W_K (what it offers to be found by) and a value v = x W_V (what it passes on). Two words of
# width 4, projected to width 3:

# %%
x = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 2.0, 0.0, 2.0]])  # (2 words, d_model 4)
W_Q, W_K, W_V = (torch.randn(4, 3) for _ in range(3))
q, k, v = x @ W_Q, x @ W_K, x @ W_V  # (2, 3) each
show(torch.cat([q, k, v], dim=1), "1 q | k | v of each word", rows=["x1", "x2"])

# %% [markdown]
# The first word's query is compared with every key by a dot product: the scores q1·k1 and q1·k2.
# Dividing by √d_k keeps them from growing with the width (§3.2.1 of the paper), and a softmax turns
# them into weights that sum to 1. The output z1 is the weighted sum of the values.

# %%
scores = q[0] @ k.T  # (2,)
scaled = scores / k.size(-1) ** 0.5
weights = scaled.softmax(dim=-1)
z1 = weights @ v  # (3,)
show(torch.stack([scores, scaled, weights]), "2 scores, scaled, softmax of query 1", rows=["q1·k", "÷√d", "softmax"])
print("z1 =", z1.tolist())

# %% [markdown]
# ## 2. All queries at once, as matrices
#
# Stacking the queries gives softmax(Q Kᵀ / √d_k) V for every word in one product. attnkit's
# `reference_attention` is exactly this, written out; it returns the weights too. Its inputs are
# (batch, heads, length, width).

# %%
out, attention = reference_attention(q[None, None], k[None, None], v[None, None])
assert torch.allclose(out[0, 0, 0], z1, atol=1e-6)  # the first row is z1 from above
show(attention[0, 0], "3 softmax(QKᵀ/√d) for two words", rows=["x1", "x2"], cols=["x1", "x2"])

# %% [markdown]
# ## 3. A sentence, several heads
#
# `MultiHeadAttention` splits the width into heads that attend independently (§3.2.2), each with its
# own weights. Here a random 6-word "sentence" through 4 heads:

# %%
words = ["the", "cat", "sat", "on", "the", "mat"]
sentence = torch.randn(1, len(words), 16)
mha = MultiHeadAttention(d_model=16, n_heads=4).eval()
_, heads = mha(sentence, return_weights=True)  # (1, 4, 6, 6)
for h in range(2):
    show(heads[0, h], f"4 head {h} over the sentence", rows=words, cols=words, name=f"4_head_{h}")

# %% [markdown]
# ## 4. Masks: padding and causality
#
# attnkit's masks mean *may attend*. A padding mask keeps a batch's shorter sentence from looking at
# its padding; a causal mask keeps each word from looking ahead, as a decoder must.

# %%
lengths = torch.tensor([6, 4])
keep = padding_mask(lengths=lengths)  # (2, 6): True at real words
batch = torch.randn(2, 6, 16)
_, padded = mha(batch, mask=keep[:, None, None, :], return_weights=True)
show(padded[1, 0], "5 padding mask: the 4-word sentence", rows=words, cols=words)
assert torch.all(padded[1, :, :, 4:] == 0)  # nobody looks at the padding
_, causal = mha(sentence, causal=True, return_weights=True)
show(causal[0, 0], "6 causal mask: no look ahead", rows=words, cols=words)
assert torch.equal(causal_mask(6), torch.ones(6, 6, dtype=torch.bool).tril())

# %% [markdown]
# ## 5. A trained model of each task
#
# `attnkit explain` runs any trained run through `capture_attention` and draws every layer and head;
# `Explanation.to_html` writes the interactive viewer. The tiny runs the tests use stand in for real
# ones here (they are trained for a few steps only, so their attention is not yet meaningful: point
# `TOUR_RUNS` at folders of your own runs, e.g. `runs/`, to see trained ones).

# %%
from attnkit.runs import open_run  # noqa: E402
from attnkit.viz.explain import explain  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent if "__file__" in globals() else Path.cwd()
RUNS = Path(os.environ.get("TOUR_RUNS", ROOT / "tests" / "fixtures" / "runs"))
EXAMPLES = {
    "classify": "goal match team striker cup",
    "translate": "Drei vier.",
    "lm": "to be or ",
    "mlm": "the [MASK] won the match",
    "recommend": ["50", "51", "52"],
    "vision": str(ROOT / "tests/fixtures/runs/data/vision/test/vertical/0.png"),
}
previous = Path.cwd()
os.chdir(ROOT)  # the fixture runs name their data relative to the repository
try:
    for task, example in EXAMPLES.items():
        if not (RUNS / task / "config.json").exists():
            continue
        explanation = explain(open_run(RUNS / task), example)
        written = explanation.to_png(OUT / task)
        explanation.to_html(OUT / task / "attention.html")
        print(f"{task}: {explanation.prediction!r}; {len(written)} pictures and attention.html in {OUT / task}")
finally:
    os.chdir(previous)
