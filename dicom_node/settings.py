"""Typed settings of the DICOM node, built by the front door from the configuration file."""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from pathlib import Path

from dicom_node.errors import SettingsError

_AE_TITLE_ALLOWED = set(string.printable) - set("\\\r\n\t\x0b\x0c")


def validate_ae_title(key: str, value: str) -> None:
    """AE titles are 1-16 characters of the default repertoire, no backslash, not only spaces."""
    if not value.strip():
        raise SettingsError(key, "an AE title must not be empty")
    if len(value) > 16:
        raise SettingsError(key, f"an AE title has at most 16 characters, got {len(value)} in {value!r}")
    if not set(value) <= _AE_TITLE_ALLOWED:
        raise SettingsError(key, f"{value!r} contains characters not allowed in an AE title")


@dataclass(frozen=True)
class TlsSettings:
    enabled: bool = False
    cert_file: Path | None = None
    key_file: Path | None = None
    # When set, peers must present a certificate signed by this CA (mutual TLS).
    ca_file: Path | None = None

    def __post_init__(self) -> None:
        if not self.enabled:
            return
        for name in ("cert_file", "key_file"):
            path = getattr(self, name)
            if path is None:
                raise SettingsError(name, "is required when TLS is enabled")
            if not Path(path).is_file():
                raise SettingsError(name, f"no such file: {path}")
        if self.ca_file is not None and not Path(self.ca_file).is_file():
            raise SettingsError("ca_file", f"no such file: {self.ca_file}")


@dataclass(frozen=True)
class NodeSettings:
    ae_title: str = "RADDRAFT"
    host: str = "127.0.0.1"
    port: int = 11112
    # Calling AE titles allowed to associate; empty means any.
    allowed_calling_aes: tuple[str, ...] = ()
    max_associations: int = 10
    # Established associations one peer address may hold at once: peers that associate and then
    # stall (for up to pdu_timeout_s) from one address leave the other slots to other senders.
    max_associations_per_peer: int = 5
    # A study is "stable" when no instance arrived for this long (DCMTK storescp's end-of-study idea).
    stable_after_s: float = 10.0
    # Sooner when the front door says the study can be drafted (a frontal image is there) and no
    # instance came for this long; a later instance reopens it. 0: only the quiet period (and the count).
    speculative_after_s: float = 1.0
    acse_timeout_s: float = 30.0
    dimse_timeout_s: float = 60.0
    # An association with no PDU for this long is aborted (Orthanc's DicomScpTimeout is 30 s too).
    network_timeout_s: float = 30.0
    # Inside a PDU, the longest wait for its next bytes (and for a send to drain): a peer that stops
    # mid-PDU loses its association after this, not after the idle timeout.
    pdu_timeout_s: float = 10.0
    # Largest PDU we accept; 0 means no limit. Larger PDUs cost fewer round trips per image.
    max_pdu_bytes: int = 262144
    # Re-arm TCP_QUICKACK after every read so senders that leave Nagle on do not stall on our
    # delayed ACKs (Linux only; ignored elsewhere).
    tcp_quickack: bool = True
    # Seconds to let in-flight associations finish at shutdown before they are aborted.
    shutdown_grace_s: float = 30.0
    # ARTIM (PS3.8 9.1.5): a connection that has not sent a whole A-ASSOCIATE-RQ by then is closed.
    artim_timeout_s: float = 10.0
    # Connections from one address still waiting for their A-ASSOCIATE-RQ; a new one beyond this
    # closes that address's oldest such connection (a scan or a stuck peer cannot lock out a PACS).
    max_pending_per_peer: int = 16
    # The same, over all addresses.
    max_pending_connections: int = 256
    # A deflated dataset that inflates to more than this is refused (the inflated bytes are never
    # kept, only walked, so this bounds time, not memory).
    max_inflated_bytes: int = 4 << 30
    tls: TlsSettings = field(default_factory=TlsSettings)

    def __post_init__(self) -> None:
        validate_ae_title("ae_title", self.ae_title)
        for title in self.allowed_calling_aes:
            validate_ae_title("allowed_calling_aes", title)
        if not 0 <= self.port <= 65535:
            raise SettingsError("port", f"must be between 0 and 65535, got {self.port}")
        if not self.host:
            raise SettingsError("host", "must not be empty")
        if self.max_associations < 1:
            raise SettingsError("max_associations", f"must be at least 1, got {self.max_associations}")
        if self.stable_after_s <= 0:
            raise SettingsError("stable_after_s", f"must be positive, got {self.stable_after_s}")
        if self.speculative_after_s < 0:
            raise SettingsError("speculative_after_s", f"must be 0 (off) or positive, got {self.speculative_after_s}")
        for name in ("max_pending_per_peer", "max_pending_connections", "max_inflated_bytes",
                     "max_associations_per_peer"):
            if getattr(self, name) < 1:
                raise SettingsError(name, f"must be at least 1, got {getattr(self, name)}")
        for name in ("acse_timeout_s", "dimse_timeout_s", "network_timeout_s", "shutdown_grace_s", "artim_timeout_s",
                     "pdu_timeout_s"):
            if getattr(self, name) <= 0:
                raise SettingsError(name, f"must be positive, got {getattr(self, name)}")
        if self.max_pdu_bytes != 0 and self.max_pdu_bytes < 4096:
            raise SettingsError("max_pdu_bytes", f"must be 0 (unlimited) or at least 4096, got {self.max_pdu_bytes}")


@dataclass(frozen=True)
class StoreSettings:
    """`root`: the folder of the instance files. `database`: a postgresql:// URL for the index (a site
    server); empty: the SQLite index inside `root` (a workstation)."""

    root: Path
    database: str = ""

    def __post_init__(self) -> None:
        if not str(self.root):
            raise SettingsError("root", "must not be empty")
        if self.database and not self.database.startswith(("postgresql://", "postgres://")):
            raise SettingsError("database", f"must be a postgresql:// URL or empty (SQLite), got {self.database!r}")


RETRIEVE_METHODS = ("move", "get")


@dataclass(frozen=True)
class PacsSettings:
    """Where signed reports go (DICOM SR by C-STORE). Not configured while `host` or `ae_title` is empty.

    retry_initial_s / retry_max_s: a failed send is retried after retry_initial_s, doubling up to retry_max_s,
    for as long as it takes; it never leaves the outbox unsent.

    Priors (dicom_node/priors.py): with `query_priors`, each complete study's earlier studies of the same
    patient and modality family (`prior_modalities`) are looked up at this PACS by C-FIND (Study Root) and
    the newest `priors` of them retrieved, by C-MOVE to our own AE title (`retrieve = "move"`; the PACS
    must know RadDraft as a modality) or by C-GET (`"get"`), before the study is drafted. The C-FIND and
    the retrieval each give up after their timeout; the study is then drafted without a prior.
    """

    ae_title: str = ""  # the PACS's (called) AE title
    host: str = ""
    port: int = 104
    calling_ae: str = "RADDRAFT"
    send_on_sign: bool = True
    timeout_s: float = 30.0
    retry_initial_s: float = 10.0
    retry_max_s: float = 600.0
    query_priors: bool = True
    priors: int = 1
    prior_modalities: tuple[str, ...] = ("CR", "DX")
    retrieve: str = "move"
    find_timeout_s: float = 10.0
    move_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if not 0 <= self.priors <= 10:
            raise SettingsError("priors", f"must be between 0 and 10, got {self.priors}")
        if self.retrieve not in RETRIEVE_METHODS:
            raise SettingsError("retrieve", f"must be one of {', '.join(RETRIEVE_METHODS)}, got {self.retrieve!r}")
        for modality in self.prior_modalities:
            if not modality.strip() or len(modality) > 16 or "\\" in modality:
                raise SettingsError("prior_modalities", f"{modality!r} is not a DICOM modality code")
        for name in ("find_timeout_s", "move_timeout_s"):
            if getattr(self, name) <= 0:
                raise SettingsError(name, f"must be positive, got {getattr(self, name)}")
        if self.ae_title:
            validate_ae_title("ae_title", self.ae_title)
        validate_ae_title("calling_ae", self.calling_ae)
        if not 1 <= self.port <= 65535:
            raise SettingsError("port", f"must be between 1 and 65535, got {self.port}")
        if bool(self.host.strip()) != bool(self.ae_title.strip()):
            raise SettingsError("host" if not self.host.strip() else "ae_title",
                                "host and ae_title are set together (or both left empty: no PACS)")
        for name in ("timeout_s", "retry_initial_s", "retry_max_s"):
            if getattr(self, name) <= 0:
                raise SettingsError(name, f"must be positive, got {getattr(self, name)}")
        if self.retry_max_s < self.retry_initial_s:
            raise SettingsError("retry_max_s", "must be at least retry_initial_s")

    @property
    def configured(self) -> bool:
        return bool(self.host.strip() and self.ae_title.strip())

    def describe(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}" if self.configured else "no PACS destination"


@dataclass(frozen=True)
class ReadingSettings:
    """Who signs: `radiologist` is the signing name (DICOM person name "Family^Given" or plain text);
    `organization` goes into the SR's Verifying Organization."""

    radiologist: str = ""
    organization: str = "RadDraft"

    def __post_init__(self) -> None:
        if len(self.radiologist) > 64 * 5:
            raise SettingsError("radiologist", "is too long for a DICOM person name")
        if len(self.organization) > 64:
            raise SettingsError("organization", "has at most 64 characters")
