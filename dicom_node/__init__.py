"""RadDraft's DICOM node: the association handling and the durable study store.

Importing this package is cheap: the network stack (pynetdicom) is imported only by the modules
that need it (`server`, `sender`).
"""
