"""The job store + queue on both backends (SQLite file, real redis-server): idempotency, tenancy,
listing, fair share, leases, cancellation and recovery."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from inkloop import errors
from inkloop_gateway.jobs.store import Job, JobState, JobStore, Lease, new_job_id
from inkloop_gateway.jobs.store_sqlite import SqliteJobStore


def _job(tenant: str = "acme", request_id: str | None = None, **fields: object) -> Job:
    job_id = new_job_id()
    return Job(
        job_id=job_id,
        tenant_id=tenant,
        request_id=request_id or job_id,
        user_id="u1",
        key_id="k1",
        kind=1,
        task=b"\x0a\x02hi",
        variant="control",
        target="127.0.0.1:1",
        created_at=1.0,
        **fields,  # type: ignore[arg-type]
    )


async def test_submit_is_idempotent_per_tenant_and_request_id(store: JobStore) -> None:
    first, created = await store.submit(_job(request_id="r1"))
    again, created_again = await store.submit(_job(request_id="r1"))
    other, created_other = await store.submit(_job("globex", request_id="r1"))
    assert created and not created_again and created_other
    assert again.job_id == first.job_id and other.job_id != first.job_id
    assert again.task == b"\x0a\x02hi" and again.state == JobState.QUEUED


async def test_another_tenants_job_is_not_found(store: JobStore) -> None:
    job, _ = await store.submit(_job())
    assert (await store.get(job.job_id, "acme")).job_id == job.job_id
    with pytest.raises(errors.NotFound):
        await store.get(job.job_id, "globex")
    with pytest.raises(errors.NotFound):
        await store.cancel(job.job_id, "globex")


async def test_list_pages_newest_first_with_a_state_filter(store: JobStore) -> None:
    ids = [(await store.submit(_job()))[0].job_id for _ in range(5)]
    await store.submit(_job("globex"))
    await store.cancel(ids[1], "acme")
    seen, token = [], ""
    while True:
        page = await store.list("acme", None, 2, token)
        seen += [j.job_id for j in page.jobs]
        token = page.next_page_token
        if not token:
            break
    assert seen == ids[::-1]
    cancelled = await store.list("acme", JobState.CANCELLED, 10, "")
    assert [j.job_id for j in cancelled.jobs] == [ids[1]] and cancelled.next_page_token == ""
    with pytest.raises(errors.InvalidArgument):
        await store.list("acme", None, 2, "garbage")


async def test_claims_take_turns_between_tenants(store: JobStore) -> None:
    for _ in range(3):
        await store.submit(_job("big"))
    small, _ = await store.submit(_job("small"))
    assert await store.queue_position(small) == 1  # the real order: one "big" job before it, not three
    order = []
    while (job := await store.claim("w", 10)) is not None:
        order.append(job.tenant_id)
        assert job.state == JobState.RUNNING and job.attempts == 1
    assert order == ["big", "small", "big", "big"]


async def test_a_leased_submission_starts_at_once_only_when_nothing_is_queued(store: JobStore) -> None:
    lease = Lease("replica-a", 30)
    started, created = await store.submit(_job("acme"), lease=lease)
    assert created and started.state == JobState.RUNNING and started.owner == "replica-a"
    assert started.attempts == 1 and started.started_at is not None
    assert started.lease_until == pytest.approx(started.started_at + 30)
    assert (await store.get(started.job_id)).state == JobState.RUNNING
    assert await store.claim("replica-b", 10) is None  # it is not in the queue as well

    waiting, _ = await store.submit(_job("globex"))  # no lease: queued
    later, _ = await store.submit(_job("acme"), lease=lease)  # a job is queued: no overtaking
    assert waiting.state == later.state == JobState.QUEUED
    assert await store.queue_position(later) == 1
    again, created_again = await store.submit(_job("acme", request_id=started.request_id), lease=lease)
    assert not created_again and again.job_id == started.job_id

    # The started job is held like a claimed one: heartbeats keep it, finish ends it.
    assert await store.heartbeat("replica-a", [started.job_id], 30) == set()
    ended = await store.finish(started.job_id, "replica-a", JobState.SUCCEEDED, result=b"r")
    assert ended is not None and ended.state == JobState.SUCCEEDED
    claimed = await store.claim("replica-b", 10)
    assert claimed is not None and claimed.job_id == waiting.job_id


async def test_a_leased_submission_whose_replica_died_is_recovered(store: JobStore) -> None:
    started, _ = await store.submit(_job(), lease=Lease("replica-a", 0.05))
    await asyncio.sleep(0.1)
    assert await store.recover(max_attempts=3) == []
    requeued = await store.claim("replica-b", 10)
    assert requeued is not None and requeued.job_id == started.job_id and requeued.attempts == 2


async def test_cancel_queued_ends_it_and_running_flags_the_worker(store: JobStore) -> None:
    queued, _ = await store.submit(_job())
    running, _ = await store.submit(_job())
    claimed = await store.claim("w", 10)
    assert claimed is not None and claimed.job_id == queued.job_id
    cancelled = await store.cancel(running.job_id, "acme")  # still queued
    assert cancelled.state == JobState.CANCELLED
    assert await store.claim("w", 10) is None  # the cancelled one is never claimed
    flagged = await store.cancel(queued.job_id, "acme")
    assert flagged.state == JobState.RUNNING and flagged.cancel_requested
    assert await store.heartbeat("w", [queued.job_id], 10) == {queued.job_id}
    ended = await store.finish(queued.job_id, "w", JobState.CANCELLED)
    assert ended is not None and ended.state == JobState.CANCELLED
    with pytest.raises(errors.FailedPrecondition):
        await store.cancel(queued.job_id, "acme")


async def test_expired_lease_is_requeued_then_failed_after_max_attempts(store: JobStore) -> None:
    job, _ = await store.submit(_job())
    for attempt in (1, 2):
        claimed = await store.claim(f"dead-{attempt}", 0.05)
        assert claimed is not None and claimed.attempts == attempt
        await asyncio.sleep(0.1)
        ended_now = [j.job_id for j in await store.recover(max_attempts=2)]
        assert ended_now == ([] if attempt == 1 else [job.job_id])
    ended = await store.get(job.job_id)
    assert ended.state == JobState.FAILED and ended.failure is not None
    assert ended.failure.code == "UNAVAILABLE"
    # The dead owner cannot finish it any more.
    assert await store.finish(job.job_id, "dead-2", JobState.SUCCEEDED) is None


async def test_heartbeat_keeps_the_lease_and_release_requeues(store: JobStore) -> None:
    job, _ = await store.submit(_job())
    await store.claim("w", 0.2)
    for _ in range(3):
        await asyncio.sleep(0.1)
        assert await store.heartbeat("w", [job.job_id], 0.2) == set()
        assert await store.recover(max_attempts=3) == []
    assert (await store.get(job.job_id)).state == JobState.RUNNING
    await store.progress(job.job_id, 2, 3)
    assert (await store.get(job.job_id)).step == 2
    await store.release(job.job_id, "w")
    again = await store.claim("w2", 10)
    assert again is not None and again.job_id == job.job_id and again.attempts == 2 and again.step == 0


async def test_terminal_jobs_are_stored_as_they_are(store: JobStore) -> None:
    hit, created = await store.submit(_job(state=JobState.SUCCEEDED, cache_hit=True, result=b"\x01\x02"))
    assert created and hit.cache_hit and hit.result == b"\x01\x02"
    assert await store.claim("w", 10) is None


async def test_a_waiting_job_is_queued_for_everyone_but_stays_its_workers(store: JobStore) -> None:
    first, _ = await store.submit(_job())
    behind, _ = await store.submit(_job("globex"))
    claimed = await store.claim("w", 10)
    assert claimed is not None and claimed.job_id == first.job_id
    await store.progress(first.job_id, 2, 4)
    waiting = await store.wait(first.job_id, "w", "waiting for an inference replica")
    assert waiting is not None and waiting.state == JobState.QUEUED and waiting.held
    assert waiting.waiting == "waiting for an inference replica" and waiting.step == 0  # reruns from the start
    stored = await store.get(first.job_id)
    assert stored.state == JobState.QUEUED and stored.waiting == waiting.waiting
    assert await store.queue_position(stored) == 0 and await store.queue_position(behind) == 1
    # Nobody else claims it, and its worker's heartbeats keep it.
    other = await store.claim("w2", 10)
    assert other is not None and other.job_id == behind.job_id and await store.claim("w3", 10) is None
    assert await store.heartbeat("w", [first.job_id], 10) == set()
    assert await store.wait(first.job_id, "w2", "not theirs") is None
    assert await store.resume(first.job_id, "w2") is None

    resumed = await store.resume(first.job_id, "w")
    assert resumed is not None and resumed.state == JobState.RUNNING and resumed.waiting == ""
    assert resumed.attempts == 1  # the same attempt: inference outages do not use up attempts
    assert await store.queue_position(behind) == 0
    ended = await store.finish(first.job_id, "w", JobState.SUCCEEDED, result=b"r")
    assert ended is not None and ended.state == JobState.SUCCEEDED


async def test_a_waiting_job_ends_at_its_worker_or_is_cancelled_or_recovered(store: JobStore) -> None:
    failed, cancelled, orphaned = [(await store.submit(_job()))[0] for _ in range(3)]
    for job in (failed, cancelled, orphaned):
        assert await store.claim("w", 10 if job is not orphaned else 0.05) is not None
        assert await store.wait(job.job_id, "w", "waiting for inference capacity") is not None
    # Its worker ends it (its deadline passed while it waited).
    ended = await store.finish(failed.job_id, "w", JobState.FAILED)
    assert ended is not None and ended.state == JobState.FAILED and ended.waiting == ""
    # Cancelled while it waits: at once, and the worker's next heartbeat says to stop.
    assert (await store.cancel(cancelled.job_id, "acme")).state == JobState.CANCELLED
    assert await store.heartbeat("w", [cancelled.job_id], 10) == {cancelled.job_id}
    assert await store.resume(cancelled.job_id, "w") is None
    # Its worker died: once the lease is over, anyone may claim it, from the start.
    await asyncio.sleep(0.1)
    assert await store.recover(max_attempts=3) == []
    again = await store.claim("w2", 10)
    assert again is not None and again.job_id == orphaned.job_id and again.attempts == 2 and again.waiting == ""
    assert [await store.queue_position(j) for j in (failed, cancelled, orphaned)] == [0, 0, 0]


async def test_a_replica_restarting_alone_requeues_its_waiting_jobs(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "jobs.db")
    job, _ = await store.submit(_job())
    await store.claim("before-restart", 60)
    await store.wait(job.job_id, "before-restart", "waiting for an inference replica")
    assert await store.recover(max_attempts=3, all_running_except="after-restart") == []
    again = await store.claim("after-restart", 10)
    assert again is not None and again.job_id == job.job_id
    await store.close()
