"""Typed errors of the engine. Callers show `str(error)`: it names the bundle, file or study at fault."""


class EngineError(Exception):
    """Base of every error this package raises on purpose."""


class BundleError(EngineError):
    """A model bundle cannot be used: missing file, bad model.json, unknown format, corrupt ONNX."""


class ProviderError(EngineError):
    """An execution provider was named that ONNX Runtime does not know."""


class PreprocessError(EngineError):
    """A study's images cannot be turned into model input (no usable image, undecodable pixels)."""


class GenerationError(EngineError):
    """Generation was asked for something impossible (unknown section, prompt longer than the model)."""
