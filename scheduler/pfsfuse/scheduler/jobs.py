"""Where the scheduler keeps pipelines, jobs and datums: column families of the daemon's index.

Job ids are time-ordered like commit ids, so listing jobs newest first is a reverse scan.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from pfsfuse.metadata import records
from pfsfuse.metadata.db import DB
from pfsfuse.metadata.errors import NotFound
from pfsfuse.metadata.index import new_id
from pfsfuse.scheduler.records import DatumInfo, JobInfo, PipelineInfo

PIPELINES, JOBS, DATUMS = "pipelines", "jobs", "datums"


class JobStore:
    def __init__(self, db: DB):
        self.db = db
        db.ensure_column_families(PIPELINES, JOBS, DATUMS)

    # -- pipelines

    def pipeline(self, name: str) -> PipelineInfo:
        data = self.db.get(PIPELINES, name.encode())
        if data is None:
            raise NotFound(f"pipeline {name} not found")
        return records.decode(PipelineInfo, data)

    def pipelines(self) -> list[PipelineInfo]:
        return [records.decode(PipelineInfo, v) for _, v in self.db.scan(PIPELINES)]

    def put_pipeline(self, p: PipelineInfo) -> None:
        with self.db.lock:
            txn = self.db.txn()
            txn.put(PIPELINES, p.name.encode(), records.encode(p))
            txn.commit()

    def delete_pipeline(self, name: str) -> None:
        with self.db.lock:
            txn = self.db.txn()
            txn.delete(PIPELINES, name.encode())
            for j in self.jobs(name):
                self._delete_job(txn, j.id)
            txn.commit()

    # -- jobs

    @staticmethod
    def new_job_id() -> str:
        return new_id()

    def job(self, job_id: str) -> JobInfo:
        try:
            data = self.db.get(JOBS, bytes.fromhex(job_id))
        except ValueError:
            data = None
        if data is None:
            raise NotFound(f"job {job_id} not found")
        return records.decode(JobInfo, data)

    def jobs(self, pipeline: str | None = None) -> Iterator[JobInfo]:
        """Newest first."""
        for _, v in self.db.scan(JOBS, reverse=True):
            j = records.decode(JobInfo, v)
            if pipeline is None or j.pipeline == pipeline:
                yield j

    def put_job(self, j: JobInfo, datums: Sequence[DatumInfo] = (), sync: bool = True) -> None:
        """sync=False for progress that a crash of the machine may lose: the datums' outputs are
        durable in the datum repo, and a resumed job finds them there."""
        with self.db.lock:
            txn = self.db.txn()
            txn.put(JOBS, bytes.fromhex(j.id), records.encode(j))
            for d in datums:
                txn.put(DATUMS, _datum_key(d.job, d.key), records.encode(d))
            txn.commit(sync)

    def delete_job(self, job_id: str) -> None:
        with self.db.lock:
            txn = self.db.txn()
            self._delete_job(txn, job_id)
            txn.commit()

    def _delete_job(self, txn, job_id: str) -> None:
        txn.delete(JOBS, bytes.fromhex(job_id))
        for k, _ in self.db.scan(DATUMS, bytes.fromhex(job_id)):
            txn.delete(DATUMS, k)

    # -- datums

    def datum(self, job_id: str, key: str) -> DatumInfo:
        try:
            data = self.db.get(DATUMS, _datum_key(job_id, key))
        except ValueError:
            data = None
        if data is None:
            raise NotFound(f"datum {key} not found in job {job_id}")
        return records.decode(DatumInfo, data)

    def datums(self, job_id: str) -> list[DatumInfo]:
        return [records.decode(DatumInfo, v) for _, v in self.db.scan(DATUMS, bytes.fromhex(job_id))]


def _datum_key(job_id: str, key: str) -> bytes:
    return bytes.fromhex(job_id) + bytes.fromhex(key)
