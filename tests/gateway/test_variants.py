"""A/B variants: weighted sticky assignment, validation, and changes seen by other replicas without restart."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from harness.redis import RedisServer
from inkloop import errors
from inkloop_gateway.admission.variants import (
    RedisVariantStore,
    SqliteVariantStore,
    Variant,
    VariantStore,
    assign,
    validate_variants,
    variant_store_from_settings,
)

USERS = [f"user-{i}" for i in range(10_000)]
CONTROL = Variant("control", "10.0.0.1:50052", 90)
CANDIDATE = Variant("candidate", "10.0.0.2:50052", 10)
DEFAULT = [Variant("default", "127.0.0.1:50052", 1)]
T = "inference:50052"


def shares(variants: list[Variant]) -> dict[str, float]:
    counts = Counter(assign(variants, user).name for user in USERS)
    return {name: count / len(USERS) for name, count in counts.items()}


def test_traffic_follows_the_weights() -> None:
    split = shares([Variant("a", T, 70), Variant("b", T, 20), Variant("c", T, 10)])
    # 10k users: the binomial standard deviation of a share is at most 0.5%; allow 4 of them.
    assert split["a"] == pytest.approx(0.70, abs=0.02)
    assert split["b"] == pytest.approx(0.20, abs=0.02)
    assert split["c"] == pytest.approx(0.10, abs=0.02)


def test_zero_weight_variants_get_no_traffic() -> None:
    split = shares([Variant("a", T, 1), Variant("off", T, 0), Variant("b", T, 1)])
    assert "off" not in split
    assert split["a"] == pytest.approx(0.5, abs=0.02)


def test_assignment_is_sticky_within_and_across_processes() -> None:
    variants = [CONTROL, CANDIDATE]
    mine = [assign(variants, user).name for user in USERS[:200]]
    assert mine == [assign(variants, user).name for user in USERS[:200]]
    code = (
        "from inkloop_gateway.admission.variants import Variant, assign\n"
        "v = [Variant('control', 'a', 90), Variant('candidate', 'b', 10)]\n"
        "print(','.join(assign(v, f'user-{i}').name for i in range(200)))"
    )
    # A new interpreter has a different str hash seed: assignment must not depend on it.
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other.stdout.strip().split(",") == mine


def test_raising_the_last_variants_weight_only_moves_users_into_it() -> None:
    before = {user: assign([CONTROL, CANDIDATE], user).name for user in USERS}
    after = {user: assign([CONTROL, Variant("candidate", CANDIDATE.target, 30)], user).name for user in USERS}
    moved = [user for user in USERS if before[user] != after[user]]
    assert all(before[user] == "control" and after[user] == "candidate" for user in moved)
    assert len(moved) / len(USERS) == pytest.approx(0.9 - 90 / 120, abs=0.02)  # only the boundary moved


def test_validation_names_each_field() -> None:
    with pytest.raises(errors.InvalidArgument) as caught:
        validate_variants([Variant("a", T, 1), Variant("a", T, 1), Variant("", T, 1), Variant("c", " ", -1)])
    fields = [v.field for v in caught.value.violations]
    assert fields == ["variants[1].name", "variants[2].name", "variants[3].target", "variants[3].weight"]


@pytest.mark.parametrize(
    "target",
    [
        "",
        "inference",  # no port
        "inference:0",
        "inference:65536",
        "inference:port",
        "dns:///inference",
        "dns:///:50052",
        "10.0.0.1:50052,",  # an empty address in a list
        "10.0.0.1:50052,inference",
        "http://inference:50052",
        "infer ence:50052",
    ],
)
def test_a_target_dispatch_could_not_dial_is_refused(target: str) -> None:
    with pytest.raises(errors.InvalidArgument) as caught:
        validate_variants([Variant("a", target, 1)])
    assert [v.field for v in caught.value.violations] == ["variants[0].target"]


@pytest.mark.parametrize(
    "target", ["inference:50052", "10.0.0.1:50052, 10.0.0.2:50052", "[::1]:50052", "dns:///inference.inkloop:50052"]
)
def test_every_target_form_dispatch_serves_is_accepted(target: str) -> None:
    assert validate_variants([Variant("a", target, 1)])[0].target == target


@pytest.mark.parametrize("variants", [[], [Variant("a", T, 0)]])
def test_at_least_one_variant_needs_weight(variants: list[Variant]) -> None:
    with pytest.raises(errors.InvalidArgument) as caught:
        validate_variants(variants)
    assert [v.field for v in caught.value.violations] == ["variants"]


def test_assign_without_weight_is_a_failed_precondition() -> None:
    with pytest.raises(errors.FailedPrecondition):
        assign([Variant("a", T, 0)], "user")


StoreFactory = Callable[[float], VariantStore]


@pytest.fixture(params=["sqlite", "redis"])
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """Builds stores on one shared backend: each store is one gateway replica."""
    made: list[VariantStore] = []

    def make(cache_s: float) -> VariantStore:
        store: VariantStore
        if request.param == "sqlite":
            store = SqliteVariantStore(tmp_path / "variants.db", DEFAULT, cache_s=cache_s)
        else:
            store = RedisVariantStore(request.getfixturevalue("redis_url"), DEFAULT, cache_s=cache_s)
        made.append(store)
        return store

    yield make
    for store in made:
        await store.aclose()


async def test_store_serves_the_default_until_set(make_store: StoreFactory) -> None:
    store = make_store(1.0)
    assert await store.list() == DEFAULT
    await store.set([CONTROL, CANDIDATE])
    assert await store.list() == [CONTROL, CANDIDATE]


async def test_a_weight_change_reaches_another_replica_without_restart(make_store: StoreFactory) -> None:
    admin_replica, serving_replica = make_store(0.1), make_store(0.1)
    await admin_replica.set([CONTROL, CANDIDATE])
    await asyncio.sleep(0.15)
    assert await serving_replica.list() == [CONTROL, CANDIDATE]
    shifted = [Variant("control", CONTROL.target, 0), Variant("candidate", CANDIDATE.target, 100)]
    await admin_replica.set(shifted)
    assert await serving_replica.list() == [CONTROL, CANDIDATE]  # still inside its short cache
    await asyncio.sleep(0.15)
    current = await serving_replica.list()
    assert current == shifted
    assert {assign(current, user).name for user in USERS[:500]} == {"candidate"}


async def test_store_rejects_invalid_variants_and_keeps_the_old_ones(make_store: StoreFactory) -> None:
    store = make_store(0.0)
    await store.set([CONTROL])
    with pytest.raises(errors.InvalidArgument):
        await store.set([Variant("x", T, 0)])
    assert await store.list() == [CONTROL]


def test_invalid_default_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(errors.InvalidArgument):
        SqliteVariantStore(tmp_path / "v.db", [Variant("a", "", 1)])


async def test_redis_store_keeps_serving_the_last_split_through_an_outage(tmp_path: Path) -> None:
    with RedisServer(tmp_path) as server:  # a private server: stopping it disturbs no other test
        store = RedisVariantStore(server.url, DEFAULT, cache_s=0.0)
        try:
            await store.set([CONTROL])
            server.stop()
            assert await store.list() == [CONTROL]
            with pytest.raises(errors.Unavailable):
                await store.set([CANDIDATE])
        finally:
            await store.aclose()


async def test_variant_store_from_settings_picks_the_backend(redis_url: str, tmp_path: Path) -> None:
    embedded = variant_store_from_settings(None, tmp_path, DEFAULT)
    shared = variant_store_from_settings(redis_url, tmp_path, DEFAULT)
    try:
        assert isinstance(embedded, SqliteVariantStore) and isinstance(shared, RedisVariantStore)
    finally:
        await embedded.aclose()
        await shared.aclose()
