"""attnkit: self-attention and the Transformer from first principles, put to work."""

__version__ = "0.1.0"
