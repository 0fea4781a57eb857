"""Signing secrets: generating them, and refusing placeholders and guessable ones.

`python -m shared.secrets` prints a fresh pair as environment lines:

    DARKROOM_AUTH_JWT_SECRET=<64 characters of base64url: 48 random bytes>
    DARKROOM_WEBHOOK_SECRET=whsec_<base64 of 32 random bytes>

`python -m shared.secrets jwt` (or `webhook`) prints the value alone.

A secret's strength is estimated from what it is made of: the bytes a hex or base64
string encodes, otherwise its characters at the density of the classes they come from.
Text repeating a few characters, or running through neighbouring ones, is not random
whatever its length, and example values (CHANGE-ME, ...) are refused outright.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import math
import secrets
import string
import sys

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

JWT_MIN_BYTES = 32
WEBHOOK_MIN_BYTES = 24
WEBHOOK_PREFIX = "whsec_"

JWT_HOWTO = 'python -c "import secrets; print(secrets.token_urlsafe(48))"'
WEBHOOK_HOWTO = (
    "python -c \"import base64, secrets; print('whsec_' + "
    'base64.b64encode(secrets.token_bytes(32)).decode())"'
)
# What example files and tutorials put where a secret belongs. Random text holds one of
# these (five letters or more) about once in a million.
_PLACEHOLDERS = (
    "changeme",
    "change-me",
    "change_me",
    "replace",
    "example",
    "placeholder",
    "sample",
    "default",
    "secret",
    "password",
    "passw0rd",
    "token",
    "webhook",
)
_HEX = frozenset(string.hexdigits)
_BASE64 = frozenset(string.ascii_letters + string.digits + "-_+/=")
_CLASSES = (string.ascii_lowercase, string.ascii_uppercase, string.digits, string.punctuation)


def jwt_secret() -> str:
    return secrets.token_urlsafe(48)


def webhook_secret() -> str:
    return WEBHOOK_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def seal(secret: str, key: str) -> str:
    """`secret` for storage: AES-256-GCM under a key derived from `key` when one is set
    (a stolen database copy then holds no usable signing secret), else as it is."""
    if not key:
        return "plain:" + secret
    nonce = secrets.token_bytes(12)
    sealed = AESGCM(_sealing_key(key)).encrypt(nonce, secret.encode(), b"darkroom-webhook")
    return "v1:" + base64.b64encode(nonce + sealed).decode()


def unseal(stored: str, key: str) -> str:
    """The secret `seal` stored; ValueError if it was sealed under another key."""
    if stored.startswith("plain:"):
        return stored.removeprefix("plain:")
    if not key:
        raise ValueError("sealed secret but DARKROOM_WEBHOOK_SECRETS_KEY is empty")
    raw = base64.b64decode(stored.removeprefix("v1:"))
    try:
        opened = AESGCM(_sealing_key(key)).decrypt(raw[:12], raw[12:], b"darkroom-webhook")
    except InvalidTag as exc:
        raise ValueError("sealed under another DARKROOM_WEBHOOK_SECRETS_KEY") from exc
    return opened.decode()


def _sealing_key(key: str) -> bytes:
    return hashlib.sha256(b"darkroom-webhook-secrets:" + key.encode()).digest()


def jwt_secret_problem(secret: str) -> str | None:
    """Why `secret` cannot sign bearer tokens, or None when it can."""
    why = _weakness(secret, secret, JWT_MIN_BYTES)
    if why is None:
        return None
    return f"{why}: it needs at least {JWT_MIN_BYTES} random bytes; generate one with: {JWT_HOWTO}"


def webhook_secret_problem(secret: str) -> str | None:
    """Why `secret` cannot sign webhooks, or None when it can. A whsec_ secret is judged
    by the bytes its base64 part decodes to, as receivers key their HMAC with those."""
    material = secret
    if secret.startswith(WEBHOOK_PREFIX):
        try:
            raw = base64.b64decode(secret.removeprefix(WEBHOOK_PREFIX), validate=True)
        except binascii.Error:
            return f"not base64 after whsec_; generate one with: {WEBHOOK_HOWTO}"
        # One character per byte, so every byte value counts as a distinct "character".
        material = raw.decode("latin-1")
    why = _weakness(secret, material, WEBHOOK_MIN_BYTES, raw=secret.startswith(WEBHOOK_PREFIX))
    if why is None:
        return None
    return (
        f"{why}: it needs at least {WEBHOOK_MIN_BYTES} random bytes (whsec_ followed by "
        f"their base64); generate one with: {WEBHOOK_HOWTO}"
    )


def _weakness(shown: str, material: str, min_bytes: int, *, raw: bool = False) -> str | None:
    lowered = shown.lower()
    if any(word in lowered for word in _PLACEHOLDERS):
        return "an example value (it holds a word such as changeme or secret)"
    bits_per_symbol = 8.0 if raw else _density(material)
    if len(material) * bits_per_symbol < min_bytes * 8:
        return "too short"
    alphabet = 2**bits_per_symbol
    if _distinct_shortfall(material, alphabet) or _runs(material, alphabet):
        return "not random (it repeats or runs through characters)"
    return None


def _density(text: str) -> float:
    """Bits a character of `text` can carry, from the alphabet it is drawn from."""
    if set(text) <= _HEX:
        return 4.0
    if set(text) <= _BASE64:
        return 6.0
    alphabet = sum(len(c) for c in _CLASSES if any(ch in c for ch in text))
    alphabet += 128 * any(not ch.isascii() for ch in text)
    return math.log2(max(alphabet, 2))


def _distinct_shortfall(text: str, alphabet: float) -> bool:
    """Far fewer distinct symbols than random text of this length would show: a random
    string misses the mark by many standard deviations, `x` * 40 and words do not."""
    expected = alphabet * (1 - (1 - 1 / alphabet) ** len(text))
    return len(set(text)) < 0.6 * expected


def _runs(text: str, alphabet: float) -> bool:
    """Neighbouring characters in a row (abcd..., 1234..., aaaa...) far more often than
    the about 3 in `alphabet` steps of random text."""
    steps = [abs(ord(a) - ord(b)) <= 1 for a, b in itertools.pairwise(text)]
    return len(steps) > 0 and sum(steps) > len(steps) * max(0.25, 8 / alphabet)


def main(argv: list[str] | None = None) -> None:
    which = (argv if argv is not None else sys.argv[1:])[:1]
    if which == ["jwt"]:
        print(jwt_secret())
    elif which == ["webhook"]:
        print(webhook_secret())
    elif not which:
        print(f"DARKROOM_AUTH_JWT_SECRET={jwt_secret()}")
        print(f"DARKROOM_WEBHOOK_SECRET={webhook_secret()}")
    else:
        raise SystemExit("usage: python -m shared.secrets [jwt|webhook]")


if __name__ == "__main__":
    main()
