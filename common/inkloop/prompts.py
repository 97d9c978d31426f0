"""What analytics may keep of a prompt: its length, language class, a salted hash and a redacted excerpt.

Shared by the gateway (which computes the features before the raw prompt is dropped) and the analytics
service (which re-applies the redaction as a second line of defence):

    policy = PrivacyPolicy(store_text="redacted", max_chars=64, salt="per-deployment secret")
    features = prompt_features("call me at 13812345678, a cat on the moon", policy)
    features.redacted   # 'call me at [phone], a cat on the moon'
    features.to_pb()    # inkloop.v1.PromptFeatures

The raw prompt never leaves this module: `PromptFeatures` holds only derived values.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from typing import Literal

from inkloop.v1 import analytics_pb2

LanguageClassName = Literal["zh", "en", "mixed", "other"]
StoreText = Literal["none", "redacted"]

SIGNATURE_BITS = 64

# Han ideographs: CJK Unified (basic, extension A, B–F) and the compatibility block.
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef]")
# Latin letters, ASCII and the accented Latin-1 / Latin Extended-A/B ones (so "café" is English-ish).
_LATIN = re.compile(r"[A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f]")

# Order matters: ID-card numbers (18 characters) before phone numbers, whose 11-digit pattern would
# otherwise match inside them; emails first of all because their local part may hold digits.
_PII_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"), "[email]"),
    # Chinese resident ID: 17 digits and a check character (digit or X); any 18-digit run is treated as one.
    (re.compile(r"(?<![0-9A-Za-z])\d{17}[0-9Xx](?![0-9A-Za-z])"), "[id]"),
    # Chinese mobile numbers: 1[3-9]x xxxx xxxx, optionally +86 / 0086 and separators.
    (re.compile(r"(?<![\d+])(?:(?:\+|00)86[\s-]?)?1[3-9]\d[\s-]?\d{4}[\s-]?\d{4}(?!\d)"), "[phone]"),
    # Other phone numbers written with separators: +44 20 7946 0958, (555) 123-4567, 010-6552-9988.
    (
        re.compile(r"(?<![\w+])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?|\d{2,4}[\s.-])\d{3,4}[\s.-]\d{3,4}(?!\w)"),
        "[phone]",
    ),
)
# Fast path: text without a digit or an @ cannot hold any of the patterns above.
_MAY_HOLD_PII = re.compile(r"[\d@]")
_WHITESPACE = re.compile(r"\s+")


def language_class(text: str) -> LanguageClassName:
    """zh: Han characters and no Latin letters; en: the reverse; mixed: both; other: neither."""
    has_han = _HAN.search(text) is not None
    has_latin = _LATIN.search(text) is not None
    if has_han and has_latin:
        return "mixed"
    if has_han:
        return "zh"
    if has_latin:
        return "en"
    return "other"


def redact_pii(text: str) -> str:
    """`text` with emails, phone numbers and ID-card numbers replaced by [email], [phone], [id]."""
    if _MAY_HOLD_PII.search(text) is None:
        return text
    for pattern, token in _PII_PATTERNS:
        text = pattern.sub(token, text)
    return text


def normalise(prompt: str) -> str:
    """The form that is hashed: NFKC (full-width → ASCII), whitespace collapsed, lower case."""
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFKC", prompt)).strip().lower()


@dataclass(frozen=True, kw_only=True)
class PrivacyPolicy:
    """How much of a prompt is kept. `salt` keys the hash: equal prompts share a hash only within one salt."""

    store_text: StoreText = "redacted"
    max_chars: int = 64
    salt: str

    def __post_init__(self) -> None:
        if self.store_text not in ("none", "redacted"):
            raise ValueError(f"store_text must be 'none' or 'redacted', got {self.store_text!r}")
        if self.max_chars < 0:
            raise ValueError(f"max_chars must be >= 0, got {self.max_chars}")
        if not self.salt:
            raise ValueError("salt must not be empty: an unsalted hash of a short prompt is easy to reverse")

    def scrub(self, text: str) -> str:
        """Redacted and truncated text as this policy stores it ("" when it stores none)."""
        if self.store_text == "none":
            return ""
        return redact_pii(text)[: self.max_chars]

    def hash(self, text: str) -> str:
        """HMAC-SHA-256 of the normalised text keyed by the salt, hex."""
        return hmac.new(self.salt.encode(), normalise(text).encode(), hashlib.sha256).hexdigest()

    def signature(self, text: str) -> int:
        """64-bit SimHash (Charikar) of the normalised text's character trigrams, each hashed with BLAKE2b
        keyed by the salt: prompts a few characters apart are a few bits apart (analytics compares intents
        by Hamming distance), and without the salt no trigram can be tested against it. 0 for no text.

        Twenty lines instead of PyPI `simhash`: that package pulls numpy into the slim gateway and would
        need this keyed hash passed in anyway.
        """
        normalised = normalise(text)
        if not normalised:
            return 0
        grams = Counter(normalised[i : i + 3] for i in range(max(len(normalised) - 2, 1)))
        key = hashlib.sha256(self.salt.encode()).digest()
        weights = [0] * SIGNATURE_BITS
        for gram, count in grams.items():
            bits = int.from_bytes(hashlib.blake2b(gram.encode(), digest_size=8, key=key).digest(), "big")
            for position in range(SIGNATURE_BITS):
                weights[position] += count if bits >> position & 1 else -count
        return sum(1 << position for position, weight in enumerate(weights) if weight > 0)


_LANGUAGE_TO_PB: dict[LanguageClassName, analytics_pb2.LanguageClass] = {
    "zh": analytics_pb2.LANGUAGE_CLASS_ZH,
    "en": analytics_pb2.LANGUAGE_CLASS_EN,
    "mixed": analytics_pb2.LANGUAGE_CLASS_MIXED,
    "other": analytics_pb2.LANGUAGE_CLASS_OTHER,
}
_LANGUAGE_FROM_PB: dict[int, LanguageClassName] = {value: name for name, value in _LANGUAGE_TO_PB.items()}


@dataclass(frozen=True)
class PromptFeatures:
    """What is kept of one prompt."""

    length: int  # Unicode characters of the raw prompt
    language: LanguageClassName
    hash: str  # PrivacyPolicy.hash of the prompt
    redacted: str  # PrivacyPolicy.scrub of the prompt
    signature: int = 0  # PrivacyPolicy.signature of the prompt

    def to_pb(self) -> analytics_pb2.PromptFeatures:
        return analytics_pb2.PromptFeatures(
            length=self.length,
            language=_LANGUAGE_TO_PB[self.language],
            hash=self.hash,
            redacted=self.redacted,
            signature=self.signature,
        )

    @classmethod
    def from_pb(cls, message: analytics_pb2.PromptFeatures) -> PromptFeatures:
        """The features as sent; an unset language reads as "other"."""
        language = _LANGUAGE_FROM_PB.get(message.language, "other")
        return cls(message.length, language, message.hash, message.redacted, message.signature)


def prompt_features(prompt: str, policy: PrivacyPolicy) -> PromptFeatures:
    return PromptFeatures(
        length=len(prompt),
        language=language_class(prompt),
        hash=policy.hash(prompt),
        redacted=policy.scrub(prompt),
        signature=policy.signature(prompt),
    )
