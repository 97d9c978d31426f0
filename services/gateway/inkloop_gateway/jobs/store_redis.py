"""The job store shared by several gateway replicas: Redis, every state change one Lua script.

Keys (prefix `inkloop:`): `job:<id>` a hash of the job's fields; `req:<tenant>:<request id>` the
idempotency index; `tenant:<tenant>` a sorted set of the tenant's job ids by submission order
(listings); per priority class r (0 interactive, 1 batch) `queued:<r>` a sorted set of every queued
job of the class (queue positions) and `ready:<r>` of those any worker may claim, both scored by the
job's fair tag (`store.next_fair_tag`) with the member `<seq, 12 digits>:<job id>` (ties in
submission order), `clock:<r>` the class's virtual clock and `tags:<r>` each tenant's last tag; a
claim takes the first of `ready:0`, else of `ready:1`. `running` a sorted set of running jobs by
lease expiry (recovery of jobs whose replica died), which also holds the queued jobs a worker keeps
waiting for inference (`wait`): those are in `queued:<r>` (they count in queue positions) but not in
`ready:<r>` (nobody else claims them).

Every script that changes a job publishes `<change> <job id>` on the channel `changes` in the same
script, so the notification is atomic with the change: a replica that hears of it and re-reads the
job sees the change (`notify.ChangeRelay` hands them to the hub and the dispatcher). The changes:
`submitted` (a new job joined the queue), `requeued` (a job went back to the queue: release,
recovery), `dequeued` (a job left the queue: claimed or cancelled; queue positions moved),
`cancelling` (cancellation requested of a running job: its replica stops it), `waiting` (a job went
back to the queue, held by its worker until inference takes it: progress reset) and `changed`
(anything else a watcher shows: started at submission, progress, end). Lease extensions publish
nothing. Besides, the replica running a job announces each step as `step <job id> <step>/<total>`
without storing it (`announce_progress`), so other replicas' watchers follow every step while the
store gets progress only now and then. Pub/sub is at-most-once: a replica that was not subscribed
misses changes, hence polling.

The scripts build key names from the prefix, so this expects one Redis (or a cluster slot), not a
sharded cluster.
"""

from __future__ import annotations

import json
import time
from typing import Any

from inkloop import errors
from inkloop_gateway import redis_client
from inkloop_gateway.jobs.store import (
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
    not_found,
)

PREFIX = "inkloop:"
#: The channel (after the prefix) of change notifications.
CHANGES = "changes"

# Where a job stands in its class's sets (see the module docstring), and leaving them.
QUEUE = """
local function rank_of(key)
  return redis.call('HGET', key, 'priority') == 'batch' and 1 or 0
end
local function member_of(key, id)
  return string.format('%012d', tonumber(redis.call('HGET', key, 'seq'))) .. ':' .. id
end
local function enqueue(p, id, key, claimable)
  local r, tag = rank_of(key), redis.call('HGET', key, 'fair_tag')
  redis.call('ZADD', p..'queued:'..r, tag, member_of(key, id))
  if claimable then redis.call('ZADD', p..'ready:'..r, tag, member_of(key, id)) end
end
local function unqueue(p, id, key)
  local r = rank_of(key)
  redis.call('ZREM', p..'queued:'..r, member_of(key, id))
  redis.call('ZREM', p..'ready:'..r, member_of(key, id))
end
local function anything_queued(p)
  return redis.call('ZCARD', p..'queued:0') + redis.call('ZCARD', p..'queued:1') > 0
end
"""

# ARGV[5..7]: the lease to start the job under at once when nothing is queued ('' = none).
SUBMIT = (
    QUEUE
    + """
local p, tenant, req, id = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local owner, lease_until, now = ARGV[5], ARGV[6], ARGV[7]
local existing = redis.call('GET', p..'req:'..tenant..':'..req)
if existing then return {0, existing} end
local seq = redis.call('INCR', p..'seq')
local key = p..'job:'..id
redis.call('HSET', key, unpack(ARGV, 8))
redis.call('HSET', key, 'seq', seq)
redis.call('SET', p..'req:'..tenant..':'..req, id)
redis.call('ZADD', p..'tenant:'..tenant, seq, id)
if redis.call('HGET', key, 'state') == 'queued' then
  -- Start-time fair queueing (store.next_fair_tag), in the class's own clock.
  local r = rank_of(key)
  local clock = tonumber(redis.call('GET', p..'clock:'..r) or '0')
  local last = tonumber(redis.call('HGET', p..'tags:'..r, tenant) or '0')
  local tag = math.max(clock, last) + 1 / tonumber(redis.call('HGET', key, 'weight') or '1')
  redis.call('HSET', p..'tags:'..r, tenant, tag)
  redis.call('HSET', key, 'fair_tag', tag)
  if owner ~= '' and not anything_queued(p) then
    local attempts = tonumber(redis.call('HGET', key, 'attempts') or '0') + 1
    redis.call('HSET', key, 'state', 'running', 'owner', owner, 'lease_until', lease_until,
               'started_at', now, 'attempts', attempts)
    redis.call('ZADD', p..'running', lease_until, id)
    if tag > clock then redis.call('SET', p..'clock:'..r, tag) end
    redis.call('PUBLISH', p..'changes', 'changed '..id)
  else
    enqueue(p, id, key, true)
    redis.call('PUBLISH', p..'changes', 'submitted '..id)
  end
end
return {1, id}
"""
)

CLAIM = (
    QUEUE
    + """
local p, owner, lease_until, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
for r = 0, 1 do
  while true do
    local first = redis.call('ZRANGE', p..'ready:'..r, 0, 0, 'WITHSCORES')
    if #first == 0 then break end
    redis.call('ZREM', p..'ready:'..r, first[1])
    local id = string.sub(first[1], 14)
    local key = p..'job:'..id
    if redis.call('HGET', key, 'state') == 'queued' and (redis.call('HGET', key, 'owner') or '') == '' then
      unqueue(p, id, key)
      if tonumber(first[2]) > tonumber(redis.call('GET', p..'clock:'..r) or '0') then
        redis.call('SET', p..'clock:'..r, first[2])
      end
      local attempts = tonumber(redis.call('HGET', key, 'attempts') or '0') + 1
      redis.call('HSET', key, 'state', 'running', 'owner', owner, 'lease_until', lease_until,
                 'started_at', now, 'attempts', attempts)
      redis.call('ZADD', p..'running', lease_until, id)
      redis.call('PUBLISH', p..'changes', 'dequeued '..id)
      return redis.call('HGETALL', key)
    end
  end
end
return false
"""
)

# Jobs ahead of one in the queue: every queued job of a class before it, and those before it in its own.
POSITION = (
    QUEUE
    + """
local p, id = ARGV[1], ARGV[2]
local key = p..'job:'..id
local r = rank_of(key)
local ahead = redis.call('ZRANK', p..'queued:'..r, member_of(key, id))
if not ahead then return 0 end
if r == 1 then ahead = ahead + redis.call('ZCARD', p..'queued:0') end
return ahead
"""
)

# A job `owner` holds: running, or queued while it waits for inference (owner is never '' here).
HELD = """
local function held(key, owner)
  local state = redis.call('HGET', key, 'state')
  return redis.call('HGET', key, 'owner') == owner and (state == 'running' or state == 'queued')
end
"""

HEARTBEAT = (
    HELD
    + """
local p, owner, lease_until = ARGV[1], ARGV[2], ARGV[3]
local stop = {}
for i = 4, #ARGV do
  local key = p..'job:'..ARGV[i]
  if not held(key, owner) then
    stop[#stop + 1] = ARGV[i]
  else
    redis.call('HSET', key, 'lease_until', lease_until)
    redis.call('ZADD', p..'running', lease_until, ARGV[i])
    if redis.call('HGET', key, 'cancel_requested') == '1' then stop[#stop + 1] = ARGV[i] end
  end
end
return stop
"""
)

FINISH = (
    HELD
    + QUEUE
    + """
local p, id, owner = ARGV[1], ARGV[2], ARGV[3]
local key = p..'job:'..id
if not held(key, owner) then return false end
redis.call('HSET', key, unpack(ARGV, 4))
redis.call('ZREM', p..'running', id)
unqueue(p, id, key)
redis.call('PUBLISH', p..'changes', 'changed '..id)
return redis.call('HGETALL', key)
"""
)

# Stays in `running` (its lease is still watched) and joins `queued:<r>` (queue positions), not `ready:<r>`.
WAIT = (
    HELD
    + QUEUE
    + """
local p, id, owner, reason = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local key = p..'job:'..id
if not held(key, owner) then return false end
redis.call('HSET', key, 'state', 'queued', 'step', '0', 'total_steps', '0', 'waiting', reason)
enqueue(p, id, key, false)
redis.call('PUBLISH', p..'changes', 'waiting '..id)
return redis.call('HGETALL', key)
"""
)

RESUME = (
    QUEUE
    + """
local p, id, owner, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local key = p..'job:'..id
if redis.call('HGET', key, 'owner') ~= owner or redis.call('HGET', key, 'state') ~= 'queued' then return false end
redis.call('HSET', key, 'state', 'running', 'started_at', now, 'waiting', '')
unqueue(p, id, key)
redis.call('PUBLISH', p..'changes', 'dequeued '..id)
return redis.call('HGETALL', key)
"""
)

# Back in the queue with its own tag: near the front, as it was when it was claimed.
REQUEUE_FRONT = (
    QUEUE
    + """
local function requeue(p, id, key)
  redis.call('HSET', key, 'state', 'queued', 'owner', '', 'lease_until', '0', 'step', '0', 'total_steps', '0',
             'waiting', '')
  redis.call('ZREM', p..'running', id)
  enqueue(p, id, key, true)
  redis.call('PUBLISH', p..'changes', 'requeued '..id)
end
"""
)

RELEASE = (
    REQUEUE_FRONT
    + HELD
    + """
local p, id, owner = ARGV[1], ARGV[2], ARGV[3]
local key = p..'job:'..id
if held(key, owner) then
  requeue(p, id, key)
end
return 1
"""
)

# Only while running, as in SQLite: a late write from a stopped worker must not touch an ended job.
PROGRESS = """
local p, id, step, total_steps = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local key = p..'job:'..id
if redis.call('HGET', key, 'state') ~= 'running' then return 0 end
redis.call('HSET', key, 'step', step, 'total_steps', total_steps)
redis.call('PUBLISH', p..'changes', 'changed '..id)
return 1
"""

CANCEL = (
    QUEUE
    + """
local p, id, tenant, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local key = p..'job:'..id
if redis.call('HGET', key, 'tenant_id') ~= tenant then return {'not_found'} end
local state = redis.call('HGET', key, 'state')
if state == 'queued' then
  redis.call('HSET', key, 'state', 'cancelled', 'cancel_requested', '1', 'finished_at', now, 'waiting', '')
  unqueue(p, id, key)
  redis.call('PUBLISH', p..'changes', 'dequeued '..id)
elseif state == 'running' then
  redis.call('HSET', key, 'cancel_requested', '1')
  redis.call('PUBLISH', p..'changes', 'cancelling '..id)
else
  return {'ended', state}
end
return {'ok'}
"""
)

RECOVER = (
    REQUEUE_FRONT
    + """
local p, now, max_attempts, failure = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local ended = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', p..'running', '-inf', now)) do
  local key = p..'job:'..id
  redis.call('ZREM', p..'running', id)
  local state = redis.call('HGET', key, 'state')
  if state == 'running' or (state == 'queued' and (redis.call('HGET', key, 'owner') or '') ~= '') then
    unqueue(p, id, key)
    if redis.call('HGET', key, 'cancel_requested') == '1' then
      redis.call('HSET', key, 'state', 'cancelled', 'owner', '', 'finished_at', now)
      redis.call('PUBLISH', p..'changes', 'changed '..id)
      ended[#ended + 1] = id
    elseif tonumber(redis.call('HGET', key, 'attempts') or '0') >= max_attempts then
      redis.call('HSET', key, 'state', 'failed', 'owner', '', 'finished_at', now, 'failure', failure)
      redis.call('PUBLISH', p..'changes', 'changed '..id)
      ended[#ended + 1] = id
    else
      requeue(p, id, key)
    end
  end
end
return ended
"""
)


def _fields(reply: list[Any]) -> dict[str, str]:
    items = [item.decode() if isinstance(item, bytes) else str(item) for item in reply]
    return dict(zip(items[::2], items[1::2], strict=True))


def _flat(fields: dict[str, str]) -> list[str]:
    return [item for pair in fields.items() for item in pair]


class RedisJobStore:
    def __init__(self, url: str, prefix: str = PREFIX) -> None:
        self._redis = redis_client.connect(url)
        self._p = prefix
        self._submit = self._redis.register_script(SUBMIT)
        self._claim = self._redis.register_script(CLAIM)
        self._heartbeat = self._redis.register_script(HEARTBEAT)
        self._finish = self._redis.register_script(FINISH)
        self._release = self._redis.register_script(RELEASE)
        self._progress = self._redis.register_script(PROGRESS)
        self._cancel = self._redis.register_script(CANCEL)
        self._recover = self._redis.register_script(RECOVER)
        self._wait = self._redis.register_script(WAIT)
        self._resume = self._redis.register_script(RESUME)
        self._position = self._redis.register_script(POSITION)

    async def _load(self, job_id: str) -> Job | None:
        reply = await self._redis.hgetall(f"{self._p}job:{job_id}")
        return Job.from_fields(_fields([x for kv in reply.items() for x in kv])) if reply else None

    async def submit(self, job: Job, *, lease: Lease | None = None) -> tuple[Job, bool]:
        fields = job.to_fields()
        del fields["seq"]
        now = time.time()
        start = [lease.owner, repr(now + lease.lease_s), repr(now)] if lease is not None else ["", "0", "0"]
        created, job_id = await self._submit(
            args=[self._p, job.tenant_id, job.request_id, job.job_id, *start, *_flat(fields)]
        )
        stored = await self._load(job_id.decode() if isinstance(job_id, bytes) else job_id)
        assert stored is not None
        return stored, bool(created)

    async def get(self, job_id: str, tenant_id: str | None = None) -> Job:
        job = await self._load(job_id)
        if job is None or (tenant_id is not None and job.tenant_id != tenant_id):
            raise not_found(job_id)
        return job

    async def find_request(self, tenant_id: str, request_id: str) -> Job | None:
        job_id: bytes | None = await self._redis.get(f"{self._p}req:{tenant_id}:{request_id}")  # type: ignore[assignment]
        return await self._load(job_id.decode()) if job_id else None

    async def list(self, tenant_id: str, state: JobState | None, page_size: int, page_token: str) -> Page:
        below = decode_page_token(page_token)
        upper: str = f"({below}" if below is not None else "+inf"
        found: JobList = []
        # Read the tenant's index newest first in chunks, keeping the jobs in `state`, until one more
        # than a page is known (that one only proves a next page exists).
        while len(found) <= page_size:
            ids: list[tuple[bytes, float]] = await self._redis.zrevrangebyscore(  # type: ignore[assignment]
                f"{self._p}tenant:{tenant_id}", upper, "-inf", start=0, num=max(page_size * 2, 20), withscores=True
            )
            if not ids:
                break
            async with self._redis.pipeline(transaction=False) as pipe:
                for job_id, _score in ids:
                    pipe.hgetall(f"{self._p}job:{job_id.decode()}")
                replies = await pipe.execute()
            for reply in replies:
                if reply:
                    job = Job.from_fields(_fields([x for kv in reply.items() for x in kv]))
                    if state is None or job.state == state:
                        found.append(job)
            upper = f"({int(ids[-1][1])}"
        jobs = found[:page_size]
        token = encode_page_token(jobs[-1].seq) if len(found) > page_size else ""
        return Page(jobs, token)

    async def queue_position(self, job: Job) -> int:
        return int(await self._position(args=[self._p, job.job_id]))

    async def claim(self, owner: str, lease_s: float) -> Job | None:
        now = time.time()
        reply = await self._claim(args=[self._p, owner, repr(now + lease_s), repr(now)])
        return Job.from_fields(_fields(reply)) if reply else None

    async def heartbeat(self, owner: str, job_ids: JobIds, lease_s: float) -> set[str]:
        if not job_ids:
            return set()
        stop = await self._heartbeat(args=[self._p, owner, repr(time.time() + lease_s), *job_ids])
        return {item.decode() for item in stop}

    announces_progress = True

    async def announce_progress(self, job_id: str, step: int, total_steps: int) -> None:
        await self._redis.publish(f"{self._p}{CHANGES}", f"step {job_id} {step}/{total_steps}")

    async def progress(self, job_id: str, step: int, total_steps: int) -> None:
        await self._progress(args=[self._p, job_id, step, total_steps])

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
        changes = Job.to_fields_of(state=state, result=result, failure=failure, finished_at=time.time())
        changes["lease_until"], changes["waiting"] = "0", ""
        if progress is not None:
            changes["step"], changes["total_steps"] = str(progress[0]), str(progress[1])
        reply = await self._finish(args=[self._p, job_id, owner, *_flat(changes)])
        return Job.from_fields(_fields(reply)) if reply else None

    async def release(self, job_id: str, owner: str) -> None:
        await self._release(args=[self._p, job_id, owner])

    async def wait(self, job_id: str, owner: str, reason: str) -> Job | None:
        reply = await self._wait(args=[self._p, job_id, owner, reason])
        return Job.from_fields(_fields(reply)) if reply else None

    async def resume(self, job_id: str, owner: str) -> Job | None:
        reply = await self._resume(args=[self._p, job_id, owner, repr(time.time())])
        return Job.from_fields(_fields(reply)) if reply else None

    async def cancel(self, job_id: str, tenant_id: str) -> Job:
        outcome = [item.decode() for item in await self._cancel(args=[self._p, job_id, tenant_id, repr(time.time())])]
        if outcome[0] == "not_found":
            raise not_found(job_id)
        if outcome[0] == "ended":
            raise errors.FailedPrecondition(f"job {job_id!r} already ended ({outcome[1]})")
        return await self.get(job_id)

    async def recover(self, max_attempts: int, *, all_running_except: str | None = None) -> JobList:
        # Replicas share this store, so only expired leases are anyone's to recover.
        failure = json.dumps(lost_failure(max_attempts).__dict__)
        ended = await self._recover(args=[self._p, repr(time.time()), max_attempts, failure])
        jobs = [await self._load(job_id.decode()) for job_id in ended]
        return [job for job in jobs if job is not None]

    async def close(self) -> None:
        await self._redis.aclose()
