"""Models out: `attnkit export onnx` (`attnkit.export.onnx`, the `onnx` extra)."""
