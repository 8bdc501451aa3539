"""A database driver's error message as a one-line :class:`StoreError`: what it means to a
user and what to do, looked up in each backend's table of known messages."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

from opapprove.approvals.backend import StoreError


class Meaning(NamedTuple):
    """One known message: the words that give it away (a regular expression, any case),
    what happened and what to do (``str.format`` templates)."""

    words: str
    message: str
    hint: str


def explained(text: str, meanings: Sequence[Meaning], **names: object) -> StoreError | None:
    """The error of the first of ``meanings`` whose words ``text`` holds (``None``: none of
    them); ``text`` and ``names`` fill in its templates."""
    for meaning in meanings:
        if re.search(meaning.words, text, re.IGNORECASE):
            return StoreError(
                meaning.message.format(text=text, **names), meaning.hint.format(**names)
            )
    return None
