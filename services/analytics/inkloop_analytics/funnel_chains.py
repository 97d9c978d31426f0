"""Funnels that windowFunnel cannot count on 18.16: strict and any order, and exclusions.

Each actor's step events become one sorted array, and each candidate start of the funnel gets its
chain by array functions that both engines have (18.16 has no windowFunnel modes, no arrayFold and
no window functions). The rules are in funnel.py's docstring; this module is how they are computed.

Linear time per actor, never quadratic: a ClickHouse lambda copies every column it captures once
per element of the array it maps over, so `arrayMap(i -> T[i], positions)` costs |positions| × |T|,
which for an actor with thousands of events is gigabytes. Lambdas here take aligned arrays as
arguments and capture nothing (18.16 cannot even resolve a column a lambda captures unless the same
SELECT also names it outside any lambda; `*` does not count). The one lookup the chains need, "the
first time in this sorted array at or after each of these times", is a merge: both arrays in one
descending sort, the data carried forward by a running sum of its differences (`_first_at_or_after`).

18.16 also inlines an alias of the same SELECT wherever it is named: each stage is its own SELECT
over the stage before, referring only to that stage's columns.
"""

from __future__ import annotations

from collections.abc import Sequence

#: Row codes: a step's index (0-based) below SLOTS, exclusion e at EXCLUSION_CODE + e.
SLOTS = 16
EXCLUSION_CODE = 32
#: "Not done": later than any time an actor can have, and still exact in Int64 sums.
NEVER = 2**40

PER_ACTOR = """
SELECT bd_value{exclusion_columns},
    arrayMap(x -> toInt64(intDiv(x, {slots})), ev) AS T, arrayMap(x -> toUInt8(modulo(x, {slots})), ev) AS S
FROM (
    SELECT actor, {bd_value} AS bd_value,
        arraySort(groupArrayIf(toUInt64(t) * {slots} + s, s < {slots})) AS ev{exclusion_arrays}
    FROM ({events})
    GROUP BY actor
    HAVING countIf({can_start} AND t < %(end_s)s) > 0
)
"""

# Per actor: the level reached (0 = dropped by an exclusion) and seconds from step 1 to each step,
# from the earliest chain that reaches the furthest level and is not excluded.
CHOSEN = """
SELECT bd_value, if(chosen = 0, 0, top) AS level, {offsets}
FROM (
    SELECT *, indexOf({kept_levels}, top) AS chosen
    FROM (SELECT *, arrayReduce('max', L) AS top FROM ({chains}))
)
"""


def render(
    order: str, steps: int, exclusions: Sequence[tuple[int, int]], events: str, bd_value: str, figures: str
) -> str:
    """SQL giving, per breakdown value, `figures` over one row per actor: `level` and `d1`..`dN`.

    `events` yields (actor, t, bd, s) with s a row code; `exclusions` are (from_step, to_step).
    Parameters: %(end_s)s (range end, epoch seconds) and %(window)s.
    """
    codes = [EXCLUSION_CODE + index for index in range(len(exclusions))]
    per_actor = PER_ACTOR.format(
        slots=SLOTS,
        bd_value=bd_value,
        # Any order starts at any step; the other orders at step 1.
        can_start=f"s < {SLOTS}" if order == "any" else "s = 0",
        exclusion_arrays="".join(
            f",\n        arraySort(groupArrayIf(toInt64(t), s = {code})) AS X{i}" for i, code in enumerate(codes)
        ),
        exclusion_columns="".join(f", X{i}" for i in range(len(codes))),
        events=events,
    )
    if order == "strict":
        chains = _strict(per_actor, steps)
    elif order == "any":
        chains = _any(per_actor, steps)
    else:
        chains = _ordered(per_actor, steps)
    chains = _exclusions(chains, exclusions)
    names = [f"x{index}" for index in range(len(exclusions))]
    kept_levels = "L"  # the levels of the chains not excluded, 0 for the others
    if names:
        arrays = "".join(f", E{index}" for index in range(len(exclusions)))
        kept_levels = f"arrayMap((l, {', '.join(names)}) -> if({' OR '.join(names)}, 0, l), L{arrays})"
    chosen = CHOSEN.format(
        offsets=", ".join(["toInt64(0) AS d1"] + [f"D{j}[chosen] AS d{j}" for j in range(2, steps + 1)]),
        kept_levels=kept_levels,
        chains=chains,
    )
    return f"SELECT bd_value, {figures}\nFROM ({chosen})\nWHERE level > 0\nGROUP BY bd_value"


def _stage(source: str, columns: Sequence[str]) -> str:
    return f"SELECT *, {', '.join(columns)}\nFROM ({source})"


def _ordered(per_actor: str, steps: int) -> str:
    """Each in-range step-1 event starts a chain; each next step is the first of its events at or
    after the previous step's second (later steps of one second come after earlier ones)."""
    sql = _stage(
        per_actor,
        ["arrayFilter((t, x) -> x = 0 AND t < %(end_s)s, T, S) AS T1"]
        + [f"arrayFilter((t, x) -> x = {i}, T, S) AS P{i}" for i in range(1, steps)],
    )
    for k in range(2, steps + 1):  # one stage each: T{k} needs T{k-1}
        sql = _stage(sql, [f"{_first_at_or_after(f'P{k - 1}', f'T{k - 1}')} AS T{k}"])
    times = [f"T{k}" for k in range(1, steps + 1)]
    reached = " + ".join(f"(b{k} <= a + %(window)s)" for k in range(2, steps + 1))
    columns = [
        f"arrayMap(({', '.join(['a'] + [f'b{k}' for k in range(2, steps + 1)])}) -> toUInt8(1 + {reached}),"
        f" {', '.join(times)}) AS L"
    ]
    columns += [f"arrayMap((a, b) -> b - a, T1, T{k}) AS D{k}" for k in range(2, steps + 1)]
    return _stage(sql, columns)


def _strict(per_actor: str, steps: int) -> str:
    """Chains over runs of consecutive events of one step: a chain is a step-1 run followed directly
    by a step-2 run, a step-3 run, …; it starts at the run's last step-1 event inside the range and
    takes each later run's first event."""
    sql = _stage(
        per_actor,
        [
            "arrayMap((x, y) -> x != y, S, arrayPushFront(arrayPopBack(S), toUInt8(255))) AS run_start",
            "arrayReduce('max', arrayFilter(t -> t < %(end_s)s, T)) AS last_in_range",
        ],
    )
    sql = _stage(
        sql,
        [
            "arrayFilter((x, b) -> b, S, run_start) AS RS",  # each run's step
            "arrayFilter((t, b) -> b, T, run_start) AS RF",  # its first second
            "arrayFilter((t, b) -> b, T, arrayPushBack(arrayPopFront(run_start), toUInt8(1))) AS RL",  # its last
        ],
    )
    # RS{i}/RF{i}: the same, i runs later (aligned with RS; past the end: step 255, never).
    last = "arrayResize([last_in_range], length(RL), last_in_range)"  # not captured: see above
    columns = [f"arrayMap((t, last) -> if(t < %(end_s)s, t, last), RL, {last}) AS T1"]
    for i in range(1, steps):
        columns.append(f"arraySlice(arrayResize(RS, length(RS) + {i}, toUInt8(255)), {i + 1}) AS RS{i}")
        columns.append(f"arraySlice(arrayResize(RF, length(RF) + {i}, toInt64({NEVER})), {i + 1}) AS RF{i}")
    sql = _stage(sql, columns)
    names = ["s0", "f0", "a"] + [name for i in range(1, steps) for name in (f"s{i}", f"f{i}")]
    arrays = ["RS", "RF", "T1"] + [name for i in range(1, steps) for name in (f"RS{i}", f"RF{i}")]
    stops = ", ".join(f"NOT (s{i} = {i} AND f{i} <= a + %(window)s), {i}" for i in range(1, steps))
    level = f"if(s0 = 0 AND f0 < %(end_s)s, multiIf({stops}, {steps}), 0)"
    columns = [f"arrayMap(({', '.join(names)}) -> toUInt8({level}), {', '.join(arrays)}) AS L"]
    columns += [f"arrayMap((a, f) -> f - a, T1, RF{k - 1}) AS D{k}" for k in range(2, steps + 1)]
    return _stage(sql, columns)


def _any(per_actor: str, steps: int) -> str:
    """Each second with an event inside the range anchors a window; a step counts from its first
    event in [anchor, anchor + window]; the k-th step reached is the k-th earliest of those."""
    sql = _stage(
        per_actor,
        ["arrayFilter((t, u) -> t != u AND t < %(end_s)s, T, arrayPushFront(arrayPopBack(T), toInt64(-1))) AS T1"]
        + [f"arrayFilter((t, x) -> x = {i}, T, S) AS P{i}" for i in range(steps)],
    )
    sql = _stage(sql, [f"{_first_at_or_after(f'P{i}', 'T1')} AS N{i}" for i in range(steps)])
    never = f"toInt64({NEVER})"
    sql = _stage(
        sql, [f"arrayMap((a, n) -> if(n <= a + %(window)s, n - a, {never}), T1, N{i}) AS O{i}" for i in range(steps)]
    )
    names = ", ".join(f"o{i}" for i in range(steps))
    arrays = ", ".join(f"O{i}" for i in range(steps))
    done = " + ".join(f"(o{i} != {NEVER})" for i in range(steps))
    sql = _stage(
        sql,
        [
            f"arrayMap(({names}) -> toUInt8({done}), {arrays}) AS L",
            f"arrayMap(({names}) -> arraySort([{names}]), {arrays}) AS sorted_offsets",
        ],
    )
    return _stage(sql, [f"arrayMap(x -> x[{k}], sorted_offsets) AS D{k}" for k in range(2, steps + 1)])


def _exclusions(chains: str, exclusions: Sequence[tuple[int, int]]) -> str:
    """E{e}: the chain reached exclusion e's from_step and an excluded event came strictly after
    that step's second and strictly before its to_step's (or, short of it, by the window's end)."""
    if not exclusions:
        return chains

    queries = [
        "arrayMap(a -> a + 1, T1)" if low == 1 else f"arrayMap((a, d) -> a + d + 1, T1, D{low})"
        for low, _ in exclusions
    ]
    sql = _stage(chains, [f"{query} AS XQ{e}" for e, query in enumerate(queries)])
    sql = _stage(sql, [f"{_first_at_or_after(f'X{e}', f'XQ{e}')} AS XN{e}" for e in range(len(exclusions))])
    columns = []
    for e, (low, high) in enumerate(exclusions):
        until = f"if(l >= {high}, a + b, a + %(window)s + 1)"
        columns.append(f"arrayMap((l, n, a, b) -> l >= {low} AND n < {until}, L, XN{e}, T1, D{high}) AS E{e}")
    return _stage(sql, columns)


def _first_at_or_after(data: str, queries: str) -> str:
    """For each element of the array `queries`, the first element of the ascending array `data` that
    is at or after it (NEVER where none), in the order of `queries`.

    Both go into one array sorted descending, data before queries on a tie (keys 2x+1 and 2x); each
    data element carries its difference from the previous one (the first from NEVER), queries 0, so
    the running sum at a query is the last data element seen: the smallest one at or after it. Two
    sorts by the same keys may order equal keys differently, which changes nothing: equal data keys
    are never split by a query, and queries with equal keys carry the same value.
    """
    descending = f"arrayReverse({data})"
    keys = f"arrayConcat(arrayMap(x -> x * 2 + 1, {descending}), arrayMap(x -> x * 2, {queries}))"
    differences = (
        f"arrayConcat(arrayPopFront(arrayDifference(arrayPushFront({descending}, toInt64({NEVER})))),"
        f" arrayMap(x -> toInt64(0), {queries}))"
    )
    owners = f"arrayConcat(arrayMap(x -> toUInt32(0), {descending}), arrayEnumerate({queries}))"
    carried = f"arrayMap(x -> x + {NEVER}, arrayCumSum(arraySort((v, k) -> -k, {differences}, {keys})))"
    sorted_owners = f"arraySort((i, k) -> -k, {owners}, {keys})"
    return (
        f"arraySort((v, i) -> i, arrayFilter((v, i) -> i != 0, {carried}, {sorted_owners}),"
        f" arrayFilter(i -> i != 0, {sorted_owners}))"
    )
