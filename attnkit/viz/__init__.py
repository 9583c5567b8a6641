"""attnkit.viz: pictures of what models do (training curves, confusion matrices, attention)."""
