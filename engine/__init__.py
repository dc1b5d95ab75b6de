"""The drafting engine: model bundles, ONNX Runtime sessions, generation, the drafting queue."""
