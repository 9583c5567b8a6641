"""ViT: the patch embedding is a linear map of flattened patches, positions resample, pooling choices."""

from __future__ import annotations

import pytest
import torch

from attnkit.models.vit import ConvStem, ViT, ViTConfig


def tiny(**overrides) -> ViT:
    torch.manual_seed(0)
    fields = dict(image_size=8, patch_size=4, in_channels=3, n_classes=5, d_model=16, n_heads=2, n_layers=2, d_ff=32)
    fields.update(overrides)
    return ViT(ViTConfig(**fields)).eval()


def test_patch_embedding_is_a_linear_map_of_each_flattened_patch():
    model = tiny()
    images = torch.randn(2, 3, 8, 8)
    tokens = model.patch_embed(images).flatten(2).transpose(1, 2)  # (B, 4, D)
    patches = images.unfold(2, 4, 4).unfold(3, 4, 4)  # (B, C, 2, 2, 4, 4)
    flat = patches.permute(0, 2, 3, 1, 4, 5).reshape(2, 4, 3 * 16)  # (B, N, C * P * P), row-major patches
    weight = model.patch_embed.weight.reshape(16, -1)  # (D, C * P * P)
    torch.testing.assert_close(tokens, flat @ weight.T + model.patch_embed.bias, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_logits_shape_and_batch_independence(pooling):
    model = tiny(pooling=pooling)
    images = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        logits = model(images)
        alone = model(images[1:2])
    assert logits.shape == (3, 5)
    torch.testing.assert_close(logits[1:2], alone, rtol=1e-5, atol=1e-6)


def test_positions_resample_for_another_image_size():
    model = tiny()
    torch.testing.assert_close(model.positions(2, 2), model.pos)  # the trained grid: unchanged
    assert model.positions(3, 4).shape == (1, 12, 16)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 12, 16)).shape == (1, 5)  # a 3 x 4 grid of patches
    with pytest.raises(ValueError, match="multiple of the patch size"):
        model(torch.randn(1, 3, 10, 8))


def test_config_checks():
    with pytest.raises(ValueError, match="multiple of patch_size"):
        ViTConfig(image_size=10, patch_size=4)
    with pytest.raises(ValueError, match="n_heads"):
        ViTConfig(image_size=8, d_model=10, n_heads=4)
    with pytest.raises(ValueError, match="pooling"):
        ViTConfig(image_size=8, pooling="max")
    with pytest.raises(ValueError, match="stem must be"):
        ViTConfig(image_size=8, stem="resnet")
    with pytest.raises(ValueError, match="patch_size must be 2, 4, 8"):
        ViTConfig(image_size=12, patch_size=3, stem="conv")
    with pytest.raises(ValueError, match="stem_depth"):
        ViTConfig(image_size=8, stem_depth=1)  # the patch stem has no convolutions to add to
    with pytest.raises(ValueError, match=r"must be in 0\.\.3"):
        ViTConfig(image_size=8, stem="conv", stem_depth=-1)
    with pytest.raises(ValueError, match=r"must be in 0\.\.3"):
        ViTConfig(image_size=8, patch_size=4, stem="conv", stem_depth=4)


@pytest.mark.parametrize("patch", [2, 4, 8])
def test_conv_stem_keeps_the_patch_grid_and_doubles_channels_to_d_model(patch):
    stem = ConvStem(3, 32, patch)
    convs = [m for m in stem if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == patch.bit_length()  # log2 P stride-2 convolutions, then the 1 x 1
    assert [c.stride for c in convs[:-1]] == [(2, 2)] * (len(convs) - 1) and convs[-1].kernel_size == (1, 1)
    assert convs[-2].out_channels == 32 and convs[-1].out_channels == 32
    assert stem.eval()(torch.randn(2, 3, 16, 24)).shape == (2, 32, 16 // patch, 24 // patch)


@pytest.mark.parametrize(
    "depth, layout",
    [
        (0, [(3, 16, 2), (16, 32, 2), (32, 32, 1)]),
        (1, [(3, 16, 1), (16, 16, 2), (16, 32, 2), (32, 32, 1)]),
        (2, [(3, 16, 1), (16, 16, 2), (16, 16, 1), (16, 32, 2), (32, 32, 1)]),
        (3, [(3, 16, 1), (16, 16, 2), (16, 16, 1), (16, 32, 2), (32, 32, 1), (32, 32, 1)]),
    ],
)
def test_conv_stem_depth_adds_a_stride_1_convolution_per_scale_from_the_top(depth, layout):
    """(in, out, stride) of each convolution; the last one is always the 1 x 1 to d_model."""
    stem = ConvStem(3, 32, 4, depth)
    convs = [m for m in stem if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.stride[0]) for c in convs] == layout
    assert all(c.kernel_size == (3, 3) for c in convs[:-1]) and convs[-1].kernel_size == (1, 1)
    assert stem.eval()(torch.randn(2, 3, 16, 24)).shape == (2, 32, 4, 6)


def test_conv_stem_output_does_not_depend_on_the_input_memory_format():
    """The stem runs channels-last internally: the same numbers as the reference (contiguous) convolutions."""
    torch.manual_seed(0)
    stem = ConvStem(3, 16, 4, depth=2).eval()
    images = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        reference = torch.nn.Sequential(*stem)(images)  # nn.Sequential's forward, on the NCHW input
        torch.testing.assert_close(stem(images), reference, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(stem(images.contiguous(memory_format=torch.channels_last)), reference)


def test_conv_stem_tokens_see_only_their_neighbourhood():
    """Two 3 x 3 stride-2 convolutions: token (i, j) sees pixels 4i-3..4i+3 (rows) and 4j-3..4j+3 (columns),
    so a change to pixel (0, 0) reaches token (0, 0) and no other."""
    model = tiny(image_size=16, stem="conv")
    images = torch.randn(1, 3, 16, 16)
    changed = images.clone()
    changed[0, :, 0, 0] += 5.0
    with torch.no_grad():
        before, after = model.patch_embed(images), model.patch_embed(changed)  # (1, D, 4, 4)
    moved = (before - after).abs().amax(dim=1)[0] > 1e-6  # (4, 4)
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[0, 0] = True
    assert torch.equal(moved, expected)


def test_conv_stem_vit_is_batch_independent_in_eval_and_resamples_positions():
    model = tiny(stem="conv")
    model.train()
    model(torch.randn(8, 3, 8, 8))  # BatchNorm running statistics move away from their start
    stem_norm = model.patch_embed[1]
    assert stem_norm.num_batches_tracked.item() == 1 and stem_norm.running_mean.abs().sum() > 0
    model.eval()
    images = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(model(images)[1:2], model(images[1:2]), rtol=1e-5, atol=1e-6)
        assert model(torch.randn(1, 3, 12, 16)).shape == (1, 5)
