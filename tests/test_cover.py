"""`inkloop.cover`: key phrases of a Chinese and an English article, the cover prompt, the seed, Markdown."""

from __future__ import annotations

from pathlib import Path

import pytest

from inkloop.cover import NEGATIVE, STYLE, article_seed, cover_prompt, key_phrases, parse_markdown

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"
ZH = (EXAMPLES / "article-zh.md").read_text(encoding="utf-8")
EN = (EXAMPLES / "article-en.md").read_text(encoding="utf-8")


def test_a_chinese_article_gives_its_nouns_through_jieba() -> None:
    cover = cover_prompt(ZH)
    assert cover.language == "zh" and cover.title == "城市屋顶花园：让夏天的城市凉快下来"
    assert cover.key_phrases[0] == "屋顶花园"
    assert {"城市", "雨水"} <= set(cover.key_phrases) and len(cover.key_phrases) == 5
    assert not any(a != b and a in b for a in cover.key_phrases for b in cover.key_phrases)


def test_an_english_article_gives_its_phrases_by_the_extractive_method() -> None:
    cover = cover_prompt(EN)
    assert cover.language == "en" and cover.title == "Why lighthouses still matter in the age of GPS"
    assert cover.key_phrases == ("lighthouses", "coastal navigation", "LED lamps", "solar panels", "GPS")


@pytest.mark.parametrize("markdown", [ZH, EN], ids=["zh", "en"])
def test_the_prompt_has_every_style_clause_the_phrases_and_a_negative_prompt(markdown: str) -> None:
    cover = cover_prompt(markdown)
    prompt = cover.prompt.lower()
    assert all(clause in prompt for clause in STYLE[cover.language])
    assert all(phrase.lower() in prompt for phrase in cover.key_phrases)
    assert cover.negative_prompt == NEGATIVE[cover.language]
    assert cover.language == "en" or "文章封面" in cover.prompt


def test_the_seed_is_fixed_by_the_article_text() -> None:
    seed = cover_prompt(EN).seed
    assert seed == article_seed(EN) == cover_prompt(EN.replace("\n", "\n\n")).seed  # whitespace aside
    assert cover_prompt(EN.replace("twenty", "thirty")).seed != seed
    assert 0 <= seed < 2**63 and cover_prompt(ZH).seed != seed


def test_phrase_count_is_honoured() -> None:
    assert len(cover_prompt(EN, phrases=2).key_phrases) == 2
    assert cover_prompt(EN, phrases=2).key_phrases == cover_prompt(EN).key_phrases[:2]


def test_markup_code_links_and_urls_are_not_text() -> None:
    article = parse_markdown(
        "Intro line\n\n"
        "Some **bold** words, a [link text](https://example.com/x) and ![alt words](img.png).\n"
        "```python\nsecret_function_name()\n```\n"
        "<div>html</div> see https://example.org/page\n"
        "> quoted\n- item one\n1. item two\n| a | b |\n|---|---|\n[ref]: https://example.net\n"
    )
    assert article.title == "Intro line"
    assert "secret_function_name" not in article.text and "https" not in article.text and "div" not in article.text
    assert "bold words" in article.text and "link text" in article.text and "alt words" in article.text
    assert "quoted" in article.text and "item one" in article.text and "**" not in article.text


def test_the_title_is_the_front_matter_or_the_first_heading() -> None:
    assert parse_markdown("---\ntitle: 'From front matter'\n---\n# Other\ntext").title == "From front matter"
    assert parse_markdown("some text\n\n## First *heading*\nmore").title == "First heading"
    front_and_heading = parse_markdown("---\ntitle: Same\n---\n# Same\nbody")
    assert front_and_heading.text == "body"


def test_a_chinese_article_quoting_english_terms_stays_chinese() -> None:
    article = parse_markdown(
        "# 用 AI 设计封面\n\n越来越多的编辑用 AI 和 Qwen-Image 为文章设计封面图片，封面设计要简洁。"
    )
    assert article.language == "zh"
    assert {"AI", "封面"} <= set(key_phrases(article))


def test_an_empty_article_is_refused() -> None:
    with pytest.raises(ValueError, match="no text"):
        cover_prompt("```\ncode only\n```\n")
