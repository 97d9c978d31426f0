"""inkloop.prompts: language classes, PII redaction, the privacy policy and the protobuf form."""

from __future__ import annotations

import pytest

from inkloop.prompts import PrivacyPolicy, PromptFeatures, language_class, normalise, prompt_features, redact_pii
from inkloop.v1 import analytics_pb2

POLICY = PrivacyPolicy(salt="test-salt")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("一只猫在月球上", "zh"),
        ("一只猫，4K，超清", "mixed"),  # the K is a Latin letter
        ("a cat on the moon", "en"),
        ("café au lait", "en"),
        ("一只 cat", "mixed"),
        ("𠀀𠀁", "zh"),  # extension B
        ("12345 !!!", "other"),
        ("", "other"),
        ("кошка на луне", "other"),  # Cyrillic is neither
        ("ねこ", "other"),  # kana only
    ],
)
def test_language_class(text: str, expected: str) -> None:
    assert language_class(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail me at jane.doe+art@example.co.uk please", "mail me at [email] please"),
        ("手机13812345678联系", "手机[phone]联系"),
        ("call +86 138 1234 5678 now", "call [phone] now"),
        ("call +8613812345678", "call [phone]"),
        ("call 0086-139-1234-5678", "call [phone]"),
        ("身份证11010519491231002X号", "身份证[id]号"),
        ("id 110105194912310021", "id [id]"),
        ("US (555) 123-4567 or 555-123-4567", "US [phone] or [phone]"),
        ("London +44 20 7946 0958", "London [phone]"),
        ("北京 010-6552-9988", "北京 [phone]"),
        # Not PII: sizes, dates, seeds, short numbers, a 12-digit number that is no mobile number.
        ("1024x1024 4k 2024-01-15 seed 42", "1024x1024 4k 2024-01-15 seed 42"),
        ("render 23812345678", "render 23812345678"),
        ("a cat on the moon", "a cat on the moon"),
    ],
)
def test_redact_pii(text: str, expected: str) -> None:
    assert redact_pii(text) == expected


def test_id_card_is_not_mistaken_for_a_phone_number() -> None:
    # 18 digits that contain a valid-looking mobile number must come out as one [id], not [phone] bits.
    assert redact_pii("110113812345678901") == "[id]"


def test_normalise_folds_width_case_and_whitespace() -> None:
    assert normalise("  Ａ  Cat\n\tON  the MOON ") == "a cat on the moon"


def test_prompt_features_of_a_prompt_with_pii() -> None:
    prompt = "A cat, email jane@example.com, phone 13812345678, then a very long tail of words " * 2
    features = prompt_features(prompt, POLICY)
    assert features.length == len(prompt)
    assert features.language == "en"
    assert len(features.hash) == 64 and int(features.hash, 16) >= 0
    assert len(features.redacted) == 64
    assert features.redacted.startswith("A cat, email [email], phone [phone], then")
    assert "jane" not in features.redacted and "1381234" not in features.redacted


def test_hash_is_salted_and_ignores_case_width_and_spacing() -> None:
    first = prompt_features("A  cat on the Moon", POLICY).hash
    assert prompt_features("a cat on the moon", POLICY).hash == first
    assert prompt_features("ａ cat on the moon", POLICY).hash == first  # full-width a
    assert prompt_features("a dog on the moon", POLICY).hash != first
    assert prompt_features("a cat on the moon", PrivacyPolicy(salt="other")).hash != first


def test_policy_storing_no_text_keeps_only_numbers_and_hash() -> None:
    features = prompt_features("一只猫 13812345678", PrivacyPolicy(store_text="none", salt="s"))
    assert features.redacted == ""
    assert (features.length, features.language) == (15, "zh")


def test_truncation_counts_characters_not_bytes() -> None:
    features = prompt_features("猫" * 100, PrivacyPolicy(max_chars=10, salt="s"))
    assert features.redacted == "猫" * 10


@pytest.mark.parametrize(
    "kwargs",
    [{"salt": ""}, {"salt": "s", "max_chars": -1}, {"salt": "s", "store_text": "raw"}],
)
def test_policy_refuses_bad_settings(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        PrivacyPolicy(**kwargs)


def test_to_pb_and_back() -> None:
    features = prompt_features("一只 cat", POLICY)
    message = features.to_pb()
    assert isinstance(message, analytics_pb2.PromptFeatures)
    assert message.language == analytics_pb2.LANGUAGE_CLASS_MIXED
    assert (message.length, message.hash, message.redacted) == (6, features.hash, "一只 cat")
    assert PromptFeatures.from_pb(message) == features


def _bits_apart(a: str, b: str, policy: PrivacyPolicy = POLICY) -> int:
    return bin(policy.signature(a) ^ policy.signature(b)).count("1")


@pytest.mark.parametrize(
    ("first", "edited"),
    [
        ("a lighthouse on a cliff at dusk, oil painting", "a lighthouse on a cliff at dusk, oil painting, 4k"),
        ("一只在雪地里奔跑的红狐狸，电影感光影", "一只在雪地里奔跑的红狐狸，电影感光影，高清"),
        ("赛博朋克城市夜景 neon rain", "赛博朋克城市夜景 neon rain!"),
    ],
)
def test_a_small_edit_keeps_the_signature_near_and_another_prompt_is_far(first: str, edited: str) -> None:
    assert _bits_apart(first, edited) <= 12
    assert _bits_apart(first, "product shot of a ceramic mug on a wooden table") > 16
    assert _bits_apart(first, first.upper()) == 0  # the normalised form is signed


def test_the_signature_is_keyed_by_the_salt_and_empty_text_has_none() -> None:
    prompt = "a cat on the moon"
    assert POLICY.signature(prompt) == POLICY.signature(prompt) != PrivacyPolicy(salt="other").signature(prompt)
    assert 0 < POLICY.signature(prompt) < 2**64
    assert POLICY.signature("   ") == 0 and prompt_features("", POLICY).signature == 0
    assert prompt_features(prompt, POLICY).to_pb().signature == POLICY.signature(prompt)
