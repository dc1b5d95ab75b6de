"""RadDraft: the front door (CLI and configuration)."""

__version__ = "0.1.0"
