"""One ONNX external-data file written tensor after tensor: page-aligned as onnx writes them, each tensor's
TensorProto pointing at its bytes, fsync'd when closed (a graph's weights are what a user would miss)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Self

PAGE = 4096


class ExternalDataFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> Self:
        self.file = open(self.path, "wb")
        return self

    def __exit__(self, *exc) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()

    def align(self) -> int:
        """Pad to the next page; the offset the next tensor starts at."""
        self.file.write(b"\0" * (-self.file.tell() % PAGE))
        return self.file.tell()

    def point(self, tensor, offset: int):
        """`tensor` (a TensorProto) made to read its data from `offset` up to what was written since."""
        tensor.data_location = tensor.EXTERNAL
        for key, value in (("location", self.path.name), ("offset", str(offset)),
                           ("length", str(self.file.tell() - offset))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        return tensor
