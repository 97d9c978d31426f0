"""Jobs: the durable record of one generation, and the store + queue contract both backends keep.

A job is QUEUED when accepted, RUNNING while a worker of some gateway replica holds its lease,
then exactly one of SUCCEEDED, FAILED or CANCELLED. The store is the single source of truth: every
replica's workers claim from it, watchers read from it, and a replica that dies mid-job loses its
leases, so the job is queued again (or failed once it has used up its attempts) by any other.

A worker that cannot run its job on inference now (no healthy replica, a full inference queue)
keeps it but puts it back in the QUEUED state with the reason (`waiting`): it counts in queue
positions, no other worker may claim it, and its lease still guards it, so a replica that dies
while its jobs wait loses them to the others like running ones. `resume` makes it RUNNING again.

Backends: `SqliteJobStore` (one gateway, `data_dir/jobs.db`) and `RedisJobStore` (several replicas).
"""

from __future__ import annotations

import base64
import enum
import json
import secrets
import time
from dataclasses import asdict, dataclass, fields, replace
from typing import Protocol

from inkloop import errors


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


@dataclass(frozen=True)
class Failure:
    code: str  # gRPC status code name, e.g. "UNAVAILABLE"
    message: str
    field: str = ""
    policy: str = ""


@dataclass(frozen=True)
class Lease:
    """Who may run a job, and for how long before other replicas may take it back."""

    owner: str
    lease_s: float

    def start(self, job: Job, now: float) -> Job:
        """`job` RUNNING under this lease from `now` (one more attempt)."""
        return job.with_(
            state=JobState.RUNNING,
            owner=self.owner,
            lease_until=now + self.lease_s,
            started_at=now,
            attempts=job.attempts + 1,
            waiting="",
        )


class Priority(enum.StrEnum):
    INTERACTIVE = "interactive"
    BATCH = "batch"


PRIORITY_RANK = {Priority.INTERACTIVE: 0, Priority.BATCH: 1}


def next_fair_tag(clock: float, tenant_last: float, weight: float) -> float:
    """Start-time fair queueing: a tenant's next job starts at the later of the queue's virtual clock
    (the tag last claimed in its class) and its own previous tag, and advances by 1 / weight. Tenants
    that keep the queue full are served in proportion to their weights; one that was idle starts at
    the clock, so idling saves no credit to flood with later."""
    return max(clock, tenant_last) + 1.0 / weight


@dataclass(frozen=True)
class Job:
    job_id: str
    tenant_id: str
    request_id: str
    user_id: str
    key_id: str
    kind: int  # common_pb2.GenerationKind
    #: Serialized common_pb2.GenerationTask as sent to inference: defaults filled, seed assigned.
    task: bytes
    variant: str
    #: Inference target of the variant when the job was accepted (weights may change meanwhile).
    target: str
    state: JobState = JobState.QUEUED
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    step: int = 0
    total_steps: int = 0
    #: Serialized common_pb2.GenerationResult with image ids and no image bytes.
    result: bytes = b""
    failure: Failure | None = None
    cache_hit: bool = False
    cache_key: str = ""
    #: Serialized analytics_pb2.PromptFeatures: what events carry instead of the prompt.
    prompt_features: bytes = b""
    cancel_requested: bool = False
    attempts: int = 0
    owner: str = ""
    lease_until: float = 0.0
    #: Submission order across the store; orders the queue and the listings.
    seq: int = 0
    #: time.time() after which the job fails with DEADLINE_EXCEEDED (0 = none).
    deadline_at: float = 0.0
    #: Why a QUEUED job its worker holds waits (e.g. "waiting for an inference replica"); "" otherwise.
    waiting: str = ""
    #: Queue class: every interactive job is claimed before any batch job.
    priority: Priority = Priority.INTERACTIVE
    #: The tenant's share within its class (`fair_tag`): twice the weight, twice the jobs.
    weight: float = 1.0
    #: Start-time fair queueing tag, set by the store at submission: claims go by (priority, tag, seq).
    fair_tag: float = 0.0
    #: W3C traceparent of the submission: the job's queue wait, run and webhooks continue its trace.
    traceparent: str = ""

    @property
    def held(self) -> bool:
        """QUEUED but kept by the worker that claimed it, waiting for inference (see `JobStore.wait`)."""
        return self.state == JobState.QUEUED and bool(self.owner)

    def remaining_s(self) -> float | None:
        return None if not self.deadline_at else self.deadline_at - time.time()

    def to_fields(self) -> dict[str, str]:
        """Flat string fields: a SQLite row's `data` or a Redis hash."""
        # Not dataclasses.asdict: it deep-copies every field, a measurable cost on the cache-hit path.
        return {name: _encode(name, getattr(self, name)) for name in _JOB_FIELDS}

    @staticmethod
    def to_fields_of(**changes: object) -> dict[str, str]:
        """`to_fields` of just these fields (partial updates in Redis)."""
        return {name: _encode(name, value) for name, value in changes.items()}

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> Job:
        def floating(name: str) -> float | None:
            value = fields.get(name, "")
            return float(value) if value else None

        failure = json.loads(fields["failure"]) if fields.get("failure") else None
        return cls(
            job_id=fields["job_id"],
            tenant_id=fields["tenant_id"],
            request_id=fields["request_id"],
            user_id=fields.get("user_id", ""),
            key_id=fields.get("key_id", ""),
            kind=int(fields.get("kind", "0")),
            task=base64.b64decode(fields.get("task", "")),
            variant=fields.get("variant", ""),
            target=fields.get("target", ""),
            state=JobState(fields["state"]),
            created_at=float(fields.get("created_at", "0")),
            started_at=floating("started_at"),
            finished_at=floating("finished_at"),
            step=int(fields.get("step", "0")),
            total_steps=int(fields.get("total_steps", "0")),
            result=base64.b64decode(fields.get("result", "")),
            failure=Failure(**failure) if failure else None,
            cache_hit=fields.get("cache_hit") == "1",
            cache_key=fields.get("cache_key", ""),
            prompt_features=base64.b64decode(fields.get("prompt_features", "")),
            cancel_requested=fields.get("cancel_requested") == "1",
            attempts=int(fields.get("attempts", "0")),
            owner=fields.get("owner", ""),
            lease_until=float(fields.get("lease_until", "0") or 0),
            seq=int(fields.get("seq", "0")),
            deadline_at=float(fields.get("deadline_at", "0") or 0),
            waiting=fields.get("waiting", ""),
            priority=Priority(fields.get("priority") or Priority.INTERACTIVE),
            weight=float(fields.get("weight", "1") or 1),
            fair_tag=float(fields.get("fair_tag", "0") or 0),
            traceparent=fields.get("traceparent", ""),
        )

    @property
    def queue_key(self) -> tuple[int, float, int]:
        """Claims take the smallest: interactive before batch, then the fair tag, then submission order."""
        return (PRIORITY_RANK[self.priority], self.fair_tag, self.seq)

    def with_(self, **changes: object) -> Job:
        return replace(self, **changes)  # type: ignore[arg-type]


_JOB_FIELDS = tuple(f.name for f in fields(Job))


def _encode(name: str, value: object) -> str:
    if isinstance(value, Failure):
        value = asdict(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if name == "failure":
        return json.dumps(value) if value else ""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def new_job_id() -> str:
    # Sortable by time at a glance in logs; the random part makes it unguessable across tenants.
    return f"job_{int(time.time() * 1000):x}{secrets.token_hex(8)}"


#: Spelled as aliases for classes whose `list` method shadows the builtin.
JobList = list["Job"]
JobIds = list[str]


@dataclass(frozen=True)
class Page:
    jobs: list[Job]
    next_page_token: str


def encode_page_token(seq: int) -> str:
    return base64.urlsafe_b64encode(f"v1:{seq}".encode()).decode()


def decode_page_token(token: str) -> int | None:
    """The seq the next page starts below; None for the first page."""
    if not token:
        return None
    try:
        version, seq = base64.urlsafe_b64decode(token.encode()).decode().split(":")
        if version != "v1":
            raise ValueError(version)
        return int(seq)
    except ValueError:
        raise errors.InvalidArgument("page_token", "not a token this server issued") from None


def not_found(job_id: str) -> errors.NotFound:
    # Same message whether the job is missing or another tenant's: existence must not leak.
    return errors.NotFound(f"job {job_id!r} not found")


def lost_failure(attempts: int) -> Failure:
    return Failure("UNAVAILABLE", f"the gateway replica running this job stopped; gave up after {attempts} attempt(s)")


class JobStore(Protocol):
    """Durable jobs and their queue. Every method is atomic with respect to other replicas."""

    async def submit(self, job: Job, *, lease: Lease | None = None) -> tuple[Job, bool]:
        """Stores `job` (queued, or already terminal for a cache hit) unless the tenant already has one
        with the same request id; returns the stored job and whether it is new. With `lease`, a queued
        job starts at once under it (RUNNING, its tenant's turn taken) when no other job is queued."""
        ...

    async def get(self, job_id: str, tenant_id: str | None = None) -> Job:
        """The job; `NotFound` when missing or (with `tenant_id`) another tenant's."""
        ...

    async def find_request(self, tenant_id: str, request_id: str) -> Job | None: ...

    async def list(self, tenant_id: str, state: JobState | None, page_size: int, page_token: str) -> Page:
        """The tenant's jobs, newest first."""
        ...

    async def queue_position(self, job: Job) -> int:
        """Queued jobs submitted before this one (across tenants)."""
        ...

    async def claim(self, owner: str, lease_s: float) -> Job | None:
        """Moves the next queued job to RUNNING under `owner`'s lease. Tenants take turns."""
        ...

    async def heartbeat(self, owner: str, job_ids: JobIds, lease_s: float) -> set[str]:
        """Extends `owner`'s leases; returns those of `job_ids` whose cancellation was requested."""
        ...

    async def progress(self, job_id: str, step: int, total_steps: int) -> None:
        """Records a running job's progress (the dispatcher calls it throttled, in the background)."""
        ...

    #: Whether `announce_progress` reaches other replicas (a shared store); False: nothing to tell.
    announces_progress: bool

    async def announce_progress(self, job_id: str, step: int, total_steps: int) -> None:
        """Tells other replicas' watchers of a step without storing it (at most once, maybe never)."""
        ...

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
        """Ends a job `owner` holds, recording its last `progress` (step, total steps) when given; None
        when it no longer holds it (recovered elsewhere, or already ended)."""
        ...

    async def release(self, job_id: str, owner: str) -> None:
        """Puts a job `owner` holds back in the queue (graceful shutdown), keeping its attempts."""
        ...

    async def wait(self, job_id: str, owner: str, reason: str) -> Job | None:
        """A job `owner` holds goes back to QUEUED (its progress reset: it reruns from the start) but
        stays `owner`'s under its lease, nobody else's to claim, waiting for `reason`; None when `owner`
        no longer holds it (recovered elsewhere, cancelled)."""
        ...

    async def resume(self, job_id: str, owner: str) -> Job | None:
        """A job `owner` keeps waiting (see `wait`) is RUNNING again, in the same attempt; None when
        `owner` no longer holds it."""
        ...

    async def cancel(self, job_id: str, tenant_id: str) -> Job:
        """Cancels a queued job at once; flags a running one for its worker. `FailedPrecondition` when ended."""
        ...

    async def recover(self, max_attempts: int, *, all_running_except: str | None = None) -> JobList:
        """Requeues running jobs whose lease expired (or, at start-up of the single SQLite replica, every
        running job not held by `all_running_except`), ending those that used up their attempts or whose
        cancellation was requested; returns the jobs it ended."""
        ...

    async def close(self) -> None: ...
