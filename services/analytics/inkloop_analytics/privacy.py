"""Server-side privacy rules for front-end fields that may carry a prompt or personal data.

The tracker is meant to send prompt labels already truncated and hashed; these rules hold even when
it does not (an old tracker, a hand-written `_trackEvent` call).
"""

from __future__ import annotations

from inkloop.prompts import PrivacyPolicy, redact_pii

# A label "looks like a prompt" when it is long, or holds spaces or Han characters and is longer than a
# typical entry name ("inpaint_button", "style:anime").
_SHORT_LABEL_CHARS = 16
_LONG_LABEL_CHARS = 48
PROMPT_LABEL_HASH_CHARS = 16


def looks_like_prompt(label: str) -> bool:
    if len(label) > _LONG_LABEL_CHARS:
        return True
    if len(label) <= _SHORT_LABEL_CHARS:
        return False
    return " " in label or any("\u3400" <= char <= "\u9fff" for char in label)


def scrub_label(label: str, policy: PrivacyPolicy) -> str:
    """Short labels keep their text (PII redacted); prompt-like ones become "excerpt#hash"."""
    if not label:
        return label
    if not looks_like_prompt(label):
        return redact_pii(label)
    return f"{policy.scrub(label)}#{policy.hash(label)[:PROMPT_LABEL_HASH_CHARS]}"


def scrub_url(url: str) -> str:
    """URLs keep their query string (campaign tags matter) but not emails or phone numbers in it."""
    return redact_pii(url)
