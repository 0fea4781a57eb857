"""The user id rule is stated twice, as code (`user_id_problem`) and as the pattern and
length the API's document gives for user ids: the two must let through exactly the same text, or
a request that keeps to the document is refused (schemathesis found one such: an
unassigned code point, which the pattern allowed and the code refused)."""

from __future__ import annotations

import re
import unicodedata

import pytest

from services.gateway.album_models import MemberPath
from shared.text import HIDDEN_IN_IDS, user_id_problem, visible_text

HIDDEN_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Zl", "Zp"}


def test_the_hidden_ranges_are_exactly_the_hidden_categories_of_this_python() -> None:
    listed = {cp for first, last in HIDDEN_IN_IDS for cp in range(first, last + 1)}
    hidden = {cp for cp in range(0x110000) if unicodedata.category(chr(cp)) in HIDDEN_CATEGORIES}
    assert listed == hidden, f"Unicode {unicodedata.unidata_version}: update HIDDEN_IN_IDS"


@pytest.mark.parametrize(
    ("user_id", "refused"),
    [
        ("alice", False),
        ("zoe\u0308", False),  # decomposed: normalised, not refused
        ("a\U000b3407", False),  # unassigned: shows as a box
        ("auth0|5f7c", False),
        ("ali\u200bce", True),  # zero-width space
        ("a\u0890", True),  # a format character new in Unicode 14
        ("a\U000e0041", True),  # a tag character
        ("a\U000f0001", True),  # supplementary private use
        ("al\x00ice", True),
        ("a" * 255, False),
        ("a" * 256, True),
        # 255 as sent, 510 once NFC-normalised (U+0958 is excluded from composition): the
        # document counts what is sent, and so does the code
        ("\u0958" * 255, False),
    ],
)
def test_the_document_and_the_code_agree_on_user_ids(user_id: str, refused: bool) -> None:
    schema = MemberPath.model_json_schema()["properties"]["user_id"]
    by_document = re.fullmatch(schema["pattern"], user_id) is None
    assert (by_document or len(user_id) > schema["maxLength"]) is refused
    assert (user_id_problem(user_id) is not None) is refused


def test_file_names_lose_unassigned_code_points_too() -> None:
    assert visible_text("ph\u200boto\U000b3407.jpg") == "photo.jpg"
