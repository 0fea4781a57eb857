"""Text from clients that ends up in keys, records and other people's screens: user ids,
file names and mail addresses.

Invisible characters are refused in user ids and stripped from file names: controls,
format characters (zero-width spaces, bidi overrides such as U+202E, which make
`photo‮gpj.exe` read as `photoexe.jpg`), line and paragraph separators, surrogates and
private-use code points. File names also lose unassigned code points; user ids keep
them (they show as a box, and the API's document can then state the whole rule as a
pattern: `HIDDEN_IN_IDS`). Both are NFC-normalised, so a name typed on a system that
sends decomposed accents (NFD) is the same name.
"""

from __future__ import annotations

import unicodedata
from email.errors import HeaderParseError
from email.headerregistry import Address

MAX_USER_ID = 255
_HIDDEN = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})
_INVISIBLE = _HIDDEN | {"Cn"}
# Every code point of the _HIDDEN categories in the Unicode of this Python (14.0), as
# inclusive ranges: the user id pattern of the API's document is built from them, and
# tests/test_text.py holds them equal to `unicodedata`.
HIDDEN_IN_IDS = (
    (0x0000, 0x001F), (0x007F, 0x009F), (0x00AD, 0x00AD), (0x0600, 0x0605),
    (0x061C, 0x061C), (0x06DD, 0x06DD), (0x070F, 0x070F), (0x0890, 0x0891),
    (0x08E2, 0x08E2), (0x180E, 0x180E), (0x200B, 0x200F), (0x2028, 0x202E),
    (0x2060, 0x2064), (0x2066, 0x206F), (0xD800, 0xDFFF), (0xE000, 0xF8FF), (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB), (0x110BD, 0x110BD), (0x110CD, 0x110CD), (0x13430, 0x13438),
    (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0xE0001, 0xE0001), (0xE0020, 0xE007F),
    (0xF0000, 0xFFFFD), (0x100000, 0x10FFFD),
)  # fmt: skip


def invisible(char: str) -> bool:
    return unicodedata.category(char) in _INVISIBLE


def normal_user_id(user_id: str) -> str:
    return unicodedata.normalize("NFC", user_id)


def user_id_problem(user_id: str) -> str | None:
    """Why `user_id` cannot name a user, or None when it can. Its length is counted as
    sent, as the API's document counts it (NFC can lengthen text)."""
    normal = normal_user_id(user_id)
    if not normal:
        return "it is empty"
    if len(user_id) > MAX_USER_ID:
        return f"it is longer than {MAX_USER_ID} characters"
    hidden = next((c for c in normal if unicodedata.category(c) in _HIDDEN), None)
    if hidden is not None:
        return f"it holds the invisible character U+{ord(hidden):04X}"
    return None


def visible_text(text: str) -> str:
    """`text` NFC-normalised, without invisible characters."""
    return "".join(c for c in unicodedata.normalize("NFC", text) if not invisible(c))


MAX_EMAIL = 254  # RFC 5321's limit on a forward path, less its angle brackets


def usable_email(value: object) -> str | None:
    """`value` as a mail address Darkroom may send to, or None: a string of one
    addr-spec (`local@domain`), nothing around it, no spaces or invisible characters, so
    that whatever a token claims cannot add recipients or headers to a mail."""
    if not isinstance(value, str) or not 3 <= len(value) <= MAX_EMAIL:
        return None
    if any(c.isspace() or invisible(c) or c in '<>,;"()[]\\' for c in value):
        return None
    local, at, domain = value.rpartition("@")
    if not at or not local or "@" in local or "." not in domain.strip("."):
        return None
    try:
        parsed = Address(addr_spec=value)
    except (ValueError, IndexError, HeaderParseError):
        return None
    return value if parsed.addr_spec == value else None
