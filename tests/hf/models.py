"""Tiny transformers models with random weights for the import tests (built from configs; no network)."""

from __future__ import annotations

import torch


def randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Weights far from their initialisation (norms included), so that a wrong mapping shows."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    return model.eval()


def tiny_marian(transformers, vocab_size: int, max_positions: int, **overrides) -> torch.nn.Module:
    """A MarianMTModel with OPUS-MT's settings set explicitly (swish, scaled embeddings, pad = decoder
    start = the last id, eos 0, shared and tied embeddings) and random weights that keep the output
    varied: norm gains near 1, unit-length embedding rows (so no token wins every step by its length),
    the sinusoidal tables left as they are (they are not weights)."""
    settings = dict(
        vocab_size=vocab_size,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=48,
        decoder_ffn_dim=48,
        max_position_embeddings=max_positions,
        activation_function="swish",
        scale_embedding=True,
        pad_token_id=vocab_size - 1,
        decoder_start_token_id=vocab_size - 1,
        eos_token_id=0,
        share_encoder_decoder_embeddings=True,
        tie_word_embeddings=True,
    )
    model = transformers.MarianMTModel(transformers.MarianConfig(**{**settings, **overrides}))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if "layer_norm.weight" in name:
                param.copy_(1 + 0.2 * noise)
            elif "embed_positions" not in name:
                param.copy_(noise * (0.1 if "bias" in name else 0.3))
        model.model.shared.weight.copy_(torch.nn.functional.normalize(model.model.shared.weight, dim=-1))
    return model.eval()
