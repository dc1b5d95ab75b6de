"""The worker's local copy of the instances of the studies it drafts.

Files are named by a hash of their UIDs (never by tag values) and written atomically (temp, fsync,
rename), so a file that is there is whole and is not fetched again. A study's files are removed once its
draft is written back or given up, and a worker starts with an empty folder of its own.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from dicom_node.durable import write_atomically
from raddraft.worker.client import InstanceRef, WorkerClient


class InstanceCache:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def study_folder(self, study_uid: str) -> Path:
        return self.root / _digest(study_uid)

    def path_of(self, study_uid: str, instance: InstanceRef) -> Path:
        return self.study_folder(study_uid) / f"{_digest(instance.series_uid, instance.sop_instance_uid)}.dcm"

    def fetch(self, client: WorkerClient, study_uid: str, instances: tuple[InstanceRef, ...], *,
              of_study: str | None = None) -> list[Path]:
        """Paths of the instances, fetched over the API where they are not here yet, kept in `study_uid`'s
        folder; `of_study`: the study they belong to when it is another (the prior of `study_uid`), so
        that they go when the job's study goes."""
        self.study_folder(study_uid).mkdir(parents=True, exist_ok=True)
        paths = []
        for instance in instances:
            path = self.path_of(study_uid, instance)
            if not path.exists():
                with client.instance_stream(of_study or study_uid, instance) as chunks:
                    write_atomically(path, chunks)
            paths.append(path)
        return paths

    def drop(self, study_uid: str) -> None:
        shutil.rmtree(self.study_folder(study_uid), ignore_errors=True)


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:32]
