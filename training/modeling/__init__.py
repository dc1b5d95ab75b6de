"""Building LLaVA-family models and their tokenizers from configs (no hub downloads)."""
