"""Cover images for articles: key phrases extracted offline, a cover prompt, a seed from the article.

    cover = cover_prompt(Path("post.md").read_text())
    cover.key_phrases   # ('lighthouses', 'coastal navigation', 'gps', …)
    cover.prompt        # 'Cover illustration for an article on …: …. Modern, minimal, low saturation, …'
    cover.seed          # the same article always gives the same seed, so the gateway's cache answers again

Chinese articles go through jieba's TF-IDF keyword extraction (its dictionary and IDF table ship with
the package; nothing is downloaded), English ones through a plain extractive method: candidate phrases
are runs of up to three words between stop words and punctuation, scored by how often they and their
words occur. The title counts twice. No model is involved.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import Counter
from dataclasses import dataclass
from typing import Literal

Language = Literal["zh", "en"]

#: The look every cover shares, one clause per requirement, in each language.
STYLE: dict[Language, tuple[str, ...]] = {
    "en": (
        "modern",
        "minimal",
        "low saturation",
        "lots of white space",
        "no faces",
        "no text, logos or watermarks",
        "soft studio lighting",
    ),
    "zh": ("现代", "极简", "低饱和度", "大量留白", "不出现人脸", "不含文字、标志或水印", "柔和的影棚光"),
}
NEGATIVE: dict[Language, str] = {
    "en": "faces, people, text, letters, logos, watermark, signature, cluttered, oversaturated, low quality",
    "zh": "人脸，人物，文字，字母，标志，水印，签名，杂乱，过饱和，低质量",
}
#: Titles longer than this (characters) are not used as the topic; the first key phrase is.
_MAX_TOPIC_CHARS: dict[Language, int] = {"en": 80, "zh": 30}

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN_WORD = re.compile(r"[A-Za-z]+")


@dataclass(frozen=True)
class Article:
    """An article's title (front matter `title:`, else its first heading) and its text without markup."""

    title: str
    text: str

    @property
    def language(self) -> Language:
        """zh when Han characters outnumber Latin words (a Chinese text quoting some English stays zh)."""
        han = len(_HAN.findall(self.title + self.text))
        latin = len(_LATIN_WORD.findall(self.title + self.text))
        return "zh" if han > latin else "en"


@dataclass(frozen=True)
class CoverPrompt:
    language: Language
    title: str
    key_phrases: tuple[str, ...]
    prompt: str
    negative_prompt: str
    seed: int


def cover_prompt(markdown: str, *, phrases: int = 5) -> CoverPrompt:
    """The cover prompt of a Markdown article: its key phrases in the language's template."""
    article = parse_markdown(markdown)
    language = article.language
    found = tuple(key_phrases(article, phrases))
    if not found and not article.title:
        raise ValueError("the article has no text to take key phrases from")
    title = article.title
    topic = title if title and len(title) <= _MAX_TOPIC_CHARS[language] else (found[0] if found else title)
    style = STYLE[language]
    if language == "zh":
        elements = f"，画面元素：{'、'.join(found)}" if found else ""
        prompt = f"文章封面插图，主题：{topic}{elements}。{'，'.join(style)}。"
    else:
        elements = f", showing {', '.join(found)}" if found else ""
        if topic[:1].isupper() and not topic.split()[0].isupper():
            topic = topic[0].lower() + topic[1:]  # mid-sentence: "an article on why …", "… on GPS"
        prompt = f"Cover illustration for an article on {topic}{elements}. {', '.join(style).capitalize()}."
    return CoverPrompt(language, title, found, prompt, NEGATIVE[language], article_seed(markdown))


def article_seed(markdown: str) -> int:
    """A seed fixed by the article's text (whitespace aside): 63 bits of its SHA-256."""
    normalized = " ".join(markdown.split())
    return int.from_bytes(hashlib.sha256(normalized.encode("utf-8")).digest()[:8], "big") >> 1


# 1. Markdown to plain text.

_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?)\n---[ \t]*\n", re.DOTALL)
_FENCED_CODE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.DOTALL | re.MULTILINE)
_HTML = re.compile(r"<!--.*?-->|<[^>\n]+>", re.DOTALL)
_IMAGE_OR_LINK = re.compile(r"!?\[([^\]]*)\](?:\([^)]*\)|\[[^\]]*\])")
_LINK_DEFINITION = re.compile(r"^\s*\[[^\]]+\]:\s*\S+.*$", re.MULTILINE)
_URL = re.compile(r"https?://\S+")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")
_LINE_MARKUP = re.compile(r"^\s*(?:>\s*)*(?:[-*+]\s+|\d+[.)]\s+)?")
_RULE_OR_TABLE_SEPARATOR = re.compile(r"^\s*(?:[-*_]\s*){3,}$|^\s*\|?\s*:?-{3,}")
_EMPHASIS = re.compile(r"[*_~`|]+")


def parse_markdown(markdown: str) -> Article:
    text = markdown.replace("\r\n", "\n").lstrip("\ufeff")
    title = ""
    front = _FRONT_MATTER.match(text)
    if front:
        for line in front.group(1).splitlines():
            key, _, value = line.partition(":")
            if key.strip().lower() == "title":
                title = value.strip().strip("'\"")
        text = text[front.end() :]
    text = _FENCED_CODE.sub("", text)
    text = _HTML.sub(" ", text)
    text = _LINK_DEFINITION.sub("", text)
    text = _IMAGE_OR_LINK.sub(r"\1", text)
    text = _URL.sub(" ", text)
    lines = []
    for line in text.splitlines():
        heading = _HEADING.match(line)
        if heading:
            line = _EMPHASIS.sub("", heading.group(1)).strip()
            if not title:
                title = line
                continue
            if line == title:  # the front matter's title again
                continue
        elif _RULE_OR_TABLE_SEPARATOR.match(line):
            continue
        lines.append(_EMPHASIS.sub("", _LINE_MARKUP.sub("", line)).strip())
    body = "\n".join(lines).strip()
    if not title and body:
        first, _, body = body.partition("\n")
        title, body = first.strip(), body.strip()
    return Article(title=title, text=body)


# 2. Key phrases.


def key_phrases(article: Article, count: int = 5) -> list[str]:
    """The article's `count` most characteristic phrases, most characteristic first; none repeats one
    before it: in Chinese none contains another, in English none shares a word with another."""
    text = f"{article.title}\n{article.title}\n{article.text}"
    if article.language == "zh":
        ranked = _chinese_phrases(text, count * 4)
        chosen: list[str] = []
        for phrase in ranked:
            if not any(phrase in other or other in phrase for other in chosen):
                chosen.append(phrase)
        return chosen[:count]
    chosen = []
    used: set[str] = set()
    for phrase in _english_phrases(text):
        words = set(_lemmas(phrase))
        if not words & used:
            chosen.append(phrase)
            used |= words
    return chosen[:count]


#: Parts of speech jieba may return: nouns (general, proper, place, organisation, verbal), idioms, English words.
_ZH_PARTS_OF_SPEECH = ("n", "nz", "ns", "nt", "nr", "vn", "l", "i", "eng")


def _chinese_phrases(text: str, limit: int) -> list[str]:
    import jieba
    import jieba.analyse

    jieba.setLogLevel(logging.WARNING)  # not its "Building prefix dict…" chatter on every run
    tags = jieba.analyse.extract_tags(text, topK=limit, allowPOS=_ZH_PARTS_OF_SPEECH)
    return [tag for tag in tags if len(tag) >= 2 and not tag.isdigit()]


_CLAUSE_BREAK = re.compile(r"[.,;:!?()\[\]{}\"“”‘’«»…—–/\\\n]+|\s-\s|'(?=\s)|(?<=\s)'")
_TOKEN = re.compile(r"[A-Za-z][A-Za-z0-9'’-]*|\d+")
_MAX_PHRASE_WORDS = 3
_EN_STOP_WORDS_TEXT = """
    a about above across after again against ago all almost along already also although always am among an
    and another any anyone anything are around as ask asked at away back be became because become been before
    being below best better between both but by came can cannot could day did do does doing done down during
    each either else enough even ever every few first for from further get gets getting give given gives go
    goes going gone good got had has have having he her here hers herself him himself his how however i if in
    instead into is it its itself just keep keeps kept know known last least less let like likely made make
    makes making many may me might more most mostly much must my myself need needs never new next no none nor
    not nothing now of off often old on once one only onto or other others our ours ourselves out over own
    part per put quite rather really right run runs said same say says see seen shall she should since so
    some something soon still such take takes than that the their theirs them themselves then there these
    they thing things this those though through thus till to today together too took toward towards two
    under until up upon us use used uses using very via want was way ways we well went were what whatever
    when where whether which while who whole whom whose why will with within without would yet you your
    yours yourself yourselves three four five six seven eight nine ten hundred thousand
"""
_EN_STOP_WORDS = frozenset(_EN_STOP_WORDS_TEXT.split())


def _english_phrases(text: str) -> list[str]:
    """Runs of up to three non-stop words, scored by occurrences × the summed frequency of their words,
    longer phrases weighing more (they say more about a picture than one word)."""
    runs: list[list[str]] = []
    for clause in _CLAUSE_BREAK.split(text):
        run: list[str] = []
        for token in [*_TOKEN.findall(clause), ""]:  # "" closes the last run
            word = token.strip("'’-")
            if word and word.lower() not in _EN_STOP_WORDS and not word.isdigit() and _long_enough(word):
                run.append(word)
                continue
            if run:
                runs.append(run)
            run = []
    frequency = Counter(_lemma(word) for run in runs for word in run)
    seen: Counter[tuple[str, ...]] = Counter()
    written: dict[tuple[str, ...], Counter[str]] = {}
    for run in runs:
        for size in range(1, _MAX_PHRASE_WORDS + 1):
            for start in range(len(run) - size + 1):
                words = run[start : start + size]
                phrase = tuple(_lemma(word) for word in words)
                seen[phrase] += 1
                written.setdefault(phrase, Counter())[" ".join(words)] += 1
    score = {
        phrase: count * sum(frequency[lemma] for lemma in phrase) * len(phrase)
        for phrase, count in seen.items()
        if count > 1  # said once is not key
    }
    ranked = sorted(score, key=lambda phrase: (-score[phrase], -len(phrase), phrase))
    return [_written_form(written[phrase]) for phrase in ranked]


def _written_form(forms: Counter[str]) -> str:
    """How a phrase is written most often; lower case unless it is always capitalised (a name, "GPS")."""
    common = forms.most_common(1)[0][0]
    words = [form.split() for form in forms]
    kept = [all(form[i][:1].isupper() for form in words) or word.isupper() for i, word in enumerate(common.split())]
    return " ".join(word if keep else word.lower() for word, keep in zip(common.split(), kept, strict=True))


def _lemmas(phrase: str) -> list[str]:
    return [_lemma(word) for word in phrase.split()]


def _long_enough(word: str) -> bool:
    return len(word) > 2 or (len(word) == 2 and word.isupper())  # "AI", "UK", not "an"


def _lemma(word: str) -> str:
    """Lower case, possessive and a plural -s dropped: "Lighthouses" and "lighthouse's" are "lighthouse"."""
    folded = word.lower().replace("’", "'")
    folded = folded.removesuffix("'s")
    if len(folded) > 3 and folded.endswith("s") and not folded.endswith(("ss", "us", "is")):
        folded = folded[:-1]
    return folded
