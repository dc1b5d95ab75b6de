"""Typed errors of the DICOM node."""


class NodeError(Exception):
    """Base of every error this package raises on purpose."""


class SettingsError(NodeError, ValueError):
    """A setting has a bad value; `key` names it (relative to its section)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


class InvalidInstanceError(NodeError):
    """A received dataset cannot be stored: it does not decode or lacks its identifying UIDs."""

    def __init__(self, message: str, *, undecodable: bool = False) -> None:
        super().__init__(message)
        self.undecodable = undecodable


class DatasetStructureError(InvalidInstanceError):
    """The element structure of a dataset is truncated or inconsistent (lengths, items, sequences)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, undecodable=True)


class DatasetMismatchError(InvalidInstanceError):
    """The dataset is whole but is not what the association and the request announced (its SOP Class)."""


class InflateLimitError(InvalidInstanceError):
    """A deflated dataset inflates to more than the configured cap."""


class StoreWriteError(NodeError):
    """Writing an instance to disk or to the index failed; nothing partial was left behind."""


class StoreIndexError(StoreWriteError):
    """The index could not record an instance; its file was removed again."""


class StateTransitionError(NodeError):
    """A study was asked to move to a state it cannot reach from its current one."""
