"""The job store of a single gateway: one SQLite file in WAL mode (data_dir/jobs.db).

Calls run on the event loop: each is one short transaction on a local file (tens of microseconds),
cheaper than a thread hop. WAL checkpoints run in a background thread, never inside a request's
commit. `synchronous=NORMAL` in WAL survives a process crash, which is the
failure a restart test (and production) cares about.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from inkloop import errors
from inkloop_gateway.jobs.store import (
    PRIORITY_RANK,
    Failure,
    Job,
    JobIds,
    JobList,
    JobState,
    Lease,
    Page,
    decode_page_token,
    encode_page_token,
    lost_failure,
    next_fair_tag,
    not_found,
)

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id      TEXT NOT NULL UNIQUE,
    tenant_id   TEXT NOT NULL,
    request_id  TEXT NOT NULL,
    state       TEXT NOT NULL,
    owner       TEXT NOT NULL DEFAULT '',
    lease_until REAL NOT NULL DEFAULT 0,
    data        TEXT NOT NULL,
    UNIQUE (tenant_id, request_id)
);
CREATE INDEX IF NOT EXISTS jobs_by_tenant ON jobs (tenant_id, seq);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, tenant_id, seq);
CREATE TABLE IF NOT EXISTS fair_tags (
    queue_rank INTEGER NOT NULL,
    tenant_id  TEXT NOT NULL,
    last_tag   REAL NOT NULL,
    PRIMARY KEY (queue_rank, tenant_id)
);
CREATE TABLE IF NOT EXISTS fair_clock (
    queue_rank INTEGER PRIMARY KEY,
    clock      REAL NOT NULL
);
"""
#: Columns added after the jobs table was first created: stores of earlier versions get them on open.
ADDED_COLUMNS = (("queue_rank", "INTEGER NOT NULL DEFAULT 0"), ("fair_tag", "REAL NOT NULL DEFAULT 0"))
QUEUE_INDEX = "CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (state, owner, queue_rank, fair_tag, seq)"

_SELECT = "SELECT seq, data FROM jobs"
INSERT_JOB = (
    "INSERT INTO jobs (job_id, tenant_id, request_id, state, owner, lease_until, data, queue_rank, fair_tag) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tenant_id, request_id) DO NOTHING"
)
UPDATE_JOB = "UPDATE jobs SET state = ?, owner = ?, lease_until = ?, data = ? WHERE job_id = ?"
# Priority, then weighted fair share (`store.next_fair_tag`), then submission order; never a job a
# worker keeps waiting for inference.
NEXT_QUEUED = """
SELECT seq, data FROM jobs
WHERE state = 'queued' AND owner = ''
ORDER BY queue_rank, fair_tag, seq
LIMIT 1
"""
QUEUED_AHEAD = "SELECT COUNT(*) FROM jobs WHERE state = 'queued' AND (queue_rank, fair_tag, seq) < (?, ?, ?)"
LAST_TAG = "SELECT last_tag FROM fair_tags WHERE queue_rank = ? AND tenant_id = ?"
SET_LAST_TAG = (
    "INSERT INTO fair_tags VALUES (?, ?, ?) "
    "ON CONFLICT (queue_rank, tenant_id) DO UPDATE SET last_tag = excluded.last_tag"
)
CLOCK = "SELECT clock FROM fair_clock WHERE queue_rank = ?"
ADVANCE_CLOCK = (
    "INSERT INTO fair_clock VALUES (?, ?) ON CONFLICT (queue_rank) DO UPDATE SET clock = MAX(clock, excluded.clock)"
)
ANY_QUEUED = "SELECT 1 FROM jobs WHERE state = 'queued' LIMIT 1"
# A job `owner` holds: running, or queued while it waits for inference (owner is never '' here).
HELD_BY = "job_id = ? AND owner = ? AND state IN ('running', 'queued')"


class SqliteJobStore:
    #: Seconds between background checkpoints of the WAL into the database file.
    CHECKPOINT_INTERVAL_S = 0.5

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        # A checkpoint (copying the WAL into the database, with an fsync) would otherwise run inside
        # whichever commit crosses 1,000 WAL pages, stalling the event loop for milliseconds. A
        # thread with its own connection does it instead; PASSIVE never blocks readers or writers.
        self._db.execute("PRAGMA wal_autocheckpoint=0")
        self._db.executescript(SCHEMA)
        present = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        for name, definition in ADDED_COLUMNS:
            if name not in present:
                self._db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {definition}")
        self._db.execute(QUEUE_INDEX)
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._checkpointer = threading.Thread(
            target=self._checkpoint_loop, args=(path,), name="jobs-checkpoint", daemon=True
        )
        self._checkpointer.start()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @staticmethod
    def _job(row: tuple[int, str]) -> Job:
        return Job.from_fields(json.loads(row[1])).with_(seq=row[0])

    @staticmethod
    def _write(db: sqlite3.Connection, job: Job) -> None:
        db.execute(UPDATE_JOB, (job.state.value, job.owner, job.lease_until, json.dumps(job.to_fields()), job.job_id))

    def _one(self, db: sqlite3.Connection, where: str, *params: object) -> Job | None:
        row = db.execute(f"{_SELECT} WHERE {where}", params).fetchone()
        return self._job(row) if row else None

    async def submit(self, job: Job, *, lease: Lease | None = None) -> tuple[Job, bool]:
        if job.state != JobState.QUEUED:
            # An ended job (a cache hit) takes no turn: one INSERT is atomic on its own, without
            # BEGIN/COMMIT round trips (this is the hot path of a cache hit).
            with self._lock:
                return self._insert(self._db, job)
        with self._transaction() as db:
            if lease is not None and db.execute(ANY_QUEUED).fetchone() is None:
                job = lease.start(job, time.time())
            rank = PRIORITY_RANK[job.priority]
            (clock,) = db.execute(CLOCK, (rank,)).fetchone() or (0.0,)
            (last,) = db.execute(LAST_TAG, (rank, job.tenant_id)).fetchone() or (0.0,)
            job = job.with_(fair_tag=next_fair_tag(clock, last, job.weight))
            stored, created = self._insert(db, job)
            if created:
                db.execute(SET_LAST_TAG, (rank, job.tenant_id, job.fair_tag))
                if stored.state == JobState.RUNNING:
                    db.execute(ADVANCE_CLOCK, (rank, job.fair_tag))
            return stored, created

    def _insert(self, db: sqlite3.Connection, job: Job) -> tuple[Job, bool]:
        data = json.dumps(job.to_fields())
        rank = PRIORITY_RANK[job.priority]
        cursor = db.execute(
            INSERT_JOB,
            (
                job.job_id,
                job.tenant_id,
                job.request_id,
                job.state.value,
                job.owner,
                job.lease_until,
                data,
                rank,
                job.fair_tag,
            ),
        )
        if cursor.rowcount == 0:  # the tenant already used this request id
            # Jobs are never deleted, so the existing row can be read after the conflict.
            existing = self._one(db, "tenant_id = ? AND request_id = ?", job.tenant_id, job.request_id)
            assert existing is not None
            return existing, False
        # `seq` lives in its column; the copy in `data` is never read.
        return job.with_(seq=cursor.lastrowid or 0), True

    async def get(self, job_id: str, tenant_id: str | None = None) -> Job:
        with self._lock:
            job = self._one(self._db, "job_id = ?", job_id)
        if job is None or (tenant_id is not None and job.tenant_id != tenant_id):
            raise not_found(job_id)
        return job

    async def find_request(self, tenant_id: str, request_id: str) -> Job | None:
        with self._lock:
            return self._one(self._db, "tenant_id = ? AND request_id = ?", tenant_id, request_id)

    async def list(self, tenant_id: str, state: JobState | None, page_size: int, page_token: str) -> Page:
        below = decode_page_token(page_token)
        query = f"{_SELECT} WHERE tenant_id = ?"
        params: list[object] = [tenant_id]
        if state is not None:
            query += " AND state = ?"
            params.append(state.value)
        if below is not None:
            query += " AND seq < ?"
            params.append(below)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY seq DESC LIMIT ?", [*params, page_size + 1]).fetchall()
        jobs = [self._job(row) for row in rows[:page_size]]
        token = encode_page_token(jobs[-1].seq) if len(rows) > page_size else ""
        return Page(jobs, token)

    async def queue_position(self, job: Job) -> int:
        with self._lock:
            (ahead,) = self._db.execute(QUEUED_AHEAD, job.queue_key).fetchone()
        return int(ahead)

    async def claim(self, owner: str, lease_s: float) -> Job | None:
        now = time.time()
        with self._transaction() as db:
            row = db.execute(NEXT_QUEUED).fetchone()
            if row is None:
                return None
            job = Lease(owner, lease_s).start(self._job(row), now)
            db.execute(ADVANCE_CLOCK, (PRIORITY_RANK[job.priority], job.fair_tag))
            self._write(db, job)
            return job

    async def heartbeat(self, owner: str, job_ids: JobIds, lease_s: float) -> set[str]:
        stop: set[str] = set()
        with self._transaction() as db:
            for job_id in job_ids:
                job = self._one(db, "job_id = ?", job_id)
                if job is None or job.owner != owner or job.state not in (JobState.RUNNING, JobState.QUEUED):
                    stop.add(job_id)  # lost: recovered elsewhere or ended
                    continue
                self._write(db, job.with_(lease_until=time.time() + lease_s))
                if job.cancel_requested:
                    stop.add(job_id)
        return stop

    #: One replica: its watchers follow progress through its hub.
    announces_progress = False

    async def announce_progress(self, job_id: str, step: int, total_steps: int) -> None:
        return None

    async def progress(self, job_id: str, step: int, total_steps: int) -> None:
        with self._transaction() as db:
            job = self._one(db, "job_id = ? AND state = 'running'", job_id)
            if job is not None:
                self._write(db, job.with_(step=step, total_steps=total_steps))

    async def finish(
        self,
        job_id: str,
        owner: str,
        state: JobState,
        *,
        result: bytes = b"",
        failure: Failure | None = None,
        progress: tuple[int, int] | None = None,
    ) -> Job | None:
        with self._transaction() as db:
            job = self._one(db, HELD_BY, job_id, owner)
            if job is None:
                return None
            job = job.with_(
                state=state, result=result, failure=failure, finished_at=time.time(), lease_until=0.0, waiting=""
            )
            if progress is not None:
                job = job.with_(step=progress[0], total_steps=progress[1])
            self._write(db, job)
            return job

    async def release(self, job_id: str, owner: str) -> None:
        with self._transaction() as db:
            job = self._one(db, HELD_BY, job_id, owner)
            if job is not None:
                self._write(db, _requeued(job))

    async def wait(self, job_id: str, owner: str, reason: str) -> Job | None:
        with self._transaction() as db:
            job = self._one(db, HELD_BY, job_id, owner)
            if job is None:
                return None
            job = job.with_(state=JobState.QUEUED, step=0, total_steps=0, waiting=reason)
            self._write(db, job)
            return job

    async def resume(self, job_id: str, owner: str) -> Job | None:
        with self._transaction() as db:
            job = self._one(db, "job_id = ? AND owner = ? AND state = 'queued'", job_id, owner)
            if job is None:
                return None
            job = job.with_(state=JobState.RUNNING, started_at=time.time(), waiting="")
            self._write(db, job)
            return job

    async def cancel(self, job_id: str, tenant_id: str) -> Job:
        with self._transaction() as db:
            job = self._one(db, "job_id = ?", job_id)
            if job is None or job.tenant_id != tenant_id:
                raise not_found(job_id)
            if job.state.terminal:
                raise errors.FailedPrecondition(f"job {job_id!r} already ended ({job.state.value})")
            if job.state == JobState.QUEUED:
                job = job.with_(state=JobState.CANCELLED, cancel_requested=True, finished_at=time.time(), waiting="")
            else:
                job = job.with_(cancel_requested=True)
            self._write(db, job)
            return job

    async def recover(self, max_attempts: int, *, all_running_except: str | None = None) -> JobList:
        ended: JobList = []
        with self._transaction() as db:
            # Held jobs: running ones, and queued ones a worker keeps waiting for inference.
            held = "state IN ('running', 'queued') AND owner != ''"
            if all_running_except is not None:
                rows = db.execute(f"{_SELECT} WHERE {held} AND owner != ?", (all_running_except,))
            else:
                rows = db.execute(f"{_SELECT} WHERE {held} AND lease_until < ?", (time.time(),))
            for job in [self._job(row) for row in rows.fetchall()]:
                if job.cancel_requested:
                    job = job.with_(state=JobState.CANCELLED, finished_at=time.time(), owner="")
                    ended.append(job)
                elif job.attempts >= max_attempts:
                    job = job.with_(
                        state=JobState.FAILED, failure=lost_failure(job.attempts), finished_at=time.time(), owner=""
                    )
                    ended.append(job)
                else:
                    job = _requeued(job)
                self._write(db, job)
        return ended

    def _checkpoint_loop(self, path: Path) -> None:
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA busy_timeout=5000")
        try:
            while not self._closed.wait(self.CHECKPOINT_INTERVAL_S):
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error:
                    log.exception("checkpointing the job store failed; retrying")
        finally:
            db.close()

    async def close(self) -> None:
        self._closed.set()
        await asyncio.to_thread(self._checkpointer.join)
        with self._lock:
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            self._db.close()


def _requeued(job: Job) -> Job:
    """`job` back in the queue for any worker, to run from the start."""
    return job.with_(state=JobState.QUEUED, owner="", lease_until=0.0, step=0, total_steps=0, waiting="")
