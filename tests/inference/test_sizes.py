"""The sizes a model recommends to clients (ModelInfo.defaults.sizes): Qwen-Image's own at its scale,
and the same aspect ratios at the area of a small preset's default."""

from __future__ import annotations

from inkloop_inference.protocol import QWEN_IMAGE_SIZES, Defaults, recommended_sizes


def _sizes(width: int, height: int) -> list[tuple[str, int, int]]:
    return recommended_sizes(Defaults(width, height, 20, 4.0), multiple=16, min_size=64, max_size=2048)


def test_at_qwen_image_scale_the_published_sizes_come_back_unchanged() -> None:
    assert _sizes(1328, 1328) == list(QWEN_IMAGE_SIZES)


def test_a_small_default_gets_every_aspect_ratio_at_its_own_area() -> None:
    sizes = _sizes(128, 128)
    assert sizes[0] == ("1:1", 128, 128)
    ratios = [ratio for ratio, _, _ in sizes]
    # At this scale 3:2 rounds to 16:9's 160×96 and is offered once, as 16:9.
    assert ratios == ["1:1", "16:9", "9:16", "4:3", "3:4"]
    for ratio, width, height in sizes:
        assert width % 16 == 0 and height % 16 == 0 and min(width, height) >= 64
        wide, high = (int(side) for side in ratio.split(":"))
        assert abs(width / height - wide / high) < 0.35, (ratio, width, height)
        assert 0.7 < width * height / 128**2 < 1.4


def test_a_default_off_the_table_comes_first_and_sizes_never_repeat() -> None:
    sizes = _sizes(64, 64)
    assert sizes[0][1:] == (64, 64)
    assert len({(w, h) for _, w, h in sizes}) == len(sizes)
    assert all(min(w, h) >= 64 for _, w, h in sizes)
