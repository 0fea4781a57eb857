"""AWS Signature Version 4 for presigned S3 requests: query-string URLs and POST policies.

botocore spends 0.34-0.58 ms per presigned URL, almost all of it in request-building
machinery around an HMAC chain of 20-40 us, and it blocks the event loop meanwhile. Only
the signing is done here, with the day's signing key cached; the output is byte for byte
what botocore produces for the same request (tests/test_sigv4.py checks this), so any S3
server that accepts botocore's URLs accepts these.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from json.encoder import encode_basestring_ascii
from typing import Any, NamedTuple
from urllib.parse import quote, urlsplit

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
_AMZ_DATE = "%Y%m%dT%H%M%SZ"
_POLICY_EXPIRATION = "%Y-%m-%dT%H:%M:%SZ"


# Tuples: one of each is made per grant, and a frozen dataclass costs 6-8k instructions
# to make against 1-2k.
class Credentials(NamedTuple):
    access_key: str
    secret_key: str
    token: str | None = None


class PresignedPost(NamedTuple):
    url: str
    fields: dict[str, str]


@dataclass(frozen=True)
class _Second:
    """What every POST policy signed in one second with one lifetime and one credential
    shares: its dates, and the policy's JSON before the conditions and after the key."""

    at: datetime  # signed_at, to the second
    until: datetime  # a second later
    expires_in: int
    access_key: str
    token: str | None
    day: str
    fields: dict[str, str]  # the signature's own form fields (algorithm, credential, ...)
    head: str  # '{"expiration": ..., "conditions": ['
    tail: str  # the algorithm, credential, date (and token) conditions, and the close


def _json(value: Any) -> str:
    """json.dumps(value), for the strings, whole numbers, lists and string-keyed dicts of
    policy conditions, without json.dumps's encoder set-up on every call; anything else
    (a str or int subclass too) goes to json.dumps. Exact types and map() rather than
    isinstance and generators: 22k against 30k instructions for a grant's conditions."""
    kind = type(value)
    if kind is str:
        return encode_basestring_ascii(value)
    if kind is int:
        return str(value)
    if kind is list or kind is tuple:
        return "[" + ", ".join(map(_json, value)) + "]"
    if kind is dict and all(type(k) is str for k in value):
        return (
            "{"
            + ", ".join([f"{encode_basestring_ascii(k)}: {_json(v)}" for k, v in value.items()])
            + "}"
        )
    return json.dumps(value)


def _quote(value: str, safe: str = "-_.~") -> str:
    return quote(value, safe=safe)


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


class _Mac:
    """HMAC-SHA256 (RFC 2104) under one key, with the key's two padded blocks hashed once:
    a signature then costs two copies of a hash state, where `hmac.digest` set up
    OpenSSL's MAC and hashed the key again every time (1.9 against 4.1 us a policy)."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        block = key.ljust(hashlib.sha256().block_size, b"\0")  # a 32-byte derived key
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))

    def digest(self, message: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


class Signer:
    """Presigns requests to one bucket at one endpoint, path-style (`endpoint/bucket/key`)."""

    def __init__(self, endpoint_url: str, bucket: str, region: str) -> None:
        parts = urlsplit(endpoint_url)
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._host = parts.netloc
        self._bucket_path = f"{parts.path.rstrip('/')}/{_quote(bucket, safe='-_.~')}"
        self._bucket_condition = json.dumps({"bucket": bucket})
        self._region = region
        self._keys: dict[tuple[str, str], _Mac] = {}
        self._second: _Second | None = None

    def presign_url(
        self,
        credentials: Credentials,
        method: str,
        key: str,
        *,
        signed_at: datetime,
        expires_in: int,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        """A URL for `method` on `key`; `headers` must be sent exactly as given."""
        path = f"{self._bucket_path}/{_quote(key, safe='/~')}"
        day, amz_date = signed_at.strftime("%Y%m%d"), signed_at.strftime(_AMZ_DATE)
        signed = {"host": self._host} | {k.lower(): v.strip() for k, v in (headers or {}).items()}
        names = ";".join(sorted(signed))
        params = [
            *(query or {}).items(),
            ("X-Amz-Algorithm", ALGORITHM),
            ("X-Amz-Credential", f"{credentials.access_key}/{self._scope(day)}"),
            ("X-Amz-Date", amz_date),
            ("X-Amz-Expires", str(expires_in)),
            ("X-Amz-SignedHeaders", names),
        ]
        if credentials.token:
            params.append(("X-Amz-Security-Token", credentials.token))
        encoded = [(_quote(k), _quote(v)) for k, v in params]
        canonical = "\n".join(
            [
                method,
                path,
                "&".join(f"{k}={v}" for k, v in sorted(encoded)),
                "".join(f"{name}:{signed[name]}\n" for name in sorted(signed)),
                names,
                UNSIGNED_PAYLOAD,
            ]
        )
        to_sign = "\n".join(
            [ALGORITHM, amz_date, self._scope(day), hashlib.sha256(canonical.encode()).hexdigest()]
        )
        signature = self._signing_key(credentials.secret_key, day).digest(to_sign.encode()).hex()
        query_string = "&".join(f"{k}={v}" for k, v in encoded)
        return f"{self._origin}{path}?{query_string}&X-Amz-Signature={signature}"

    def presign_post(
        self,
        credentials: Credentials,
        key: str,
        *,
        signed_at: datetime,
        expires_in: int,
        fields: Mapping[str, str],
        conditions: Sequence[Any],
    ) -> PresignedPost:
        """A form POST whose policy holds `conditions` plus the bucket, key and signature's
        own fields; the client sends `fields`, then the file as the last field."""
        second = self._second_of(credentials, signed_at, expires_in)
        own = {"key": key, **second.fields}
        # The JSON json.dumps gives the whole policy, built from pieces: json.dumps of the
        # policy was 1.6% of a grant's CPU; only the conditions and the key vary.
        given = ", ".join(map(_json, conditions))
        policy_json = (
            f"{second.head}{given}{', ' if given else ''}{self._bucket_condition}"
            f', {{"key": {_json(key)}}}, {second.tail}'
        )
        policy = binascii.b2a_base64(policy_json.encode(), newline=False)
        signature = self._signing_key(credentials.secret_key, second.day).digest(policy).hex()
        form = dict(fields) | own | {"policy": policy.decode(), "x-amz-signature": signature}
        return PresignedPost(f"{self._origin}{self._bucket_path}", form)

    def _second_of(self, credentials: Credentials, signed_at: datetime, expires_in: int) -> _Second:
        """The shared parts of this second's policies, formatted once a second."""
        known = self._second
        if (
            known is not None
            and known.at.tzinfo is signed_at.tzinfo
            and known.at <= signed_at < known.until
            and known.expires_in == expires_in
            and known.access_key == credentials.access_key
            and known.token == credentials.token
        ):
            return known
        at = signed_at.replace(microsecond=0)
        day, amz_date = at.strftime("%Y%m%d"), at.strftime(_AMZ_DATE)
        credential = f"{credentials.access_key}/{self._scope(day)}"
        expiration = (at + timedelta(seconds=expires_in)).strftime(_POLICY_EXPIRATION)
        fields = {
            "x-amz-algorithm": ALGORITHM,
            "x-amz-credential": credential,
            "x-amz-date": amz_date,
        }
        if credentials.token:
            fields["x-amz-security-token"] = credentials.token
        tail = json.dumps([{name: value} for name, value in fields.items()])
        self._second = _Second(
            at,
            at + timedelta(seconds=1),
            expires_in,
            credentials.access_key,
            credentials.token,
            day,
            fields,
            f'{{"expiration": {json.dumps(expiration)}, "conditions": [',
            f"{tail[1:-1]}]}}",
        )
        return self._second

    def _scope(self, day: str) -> str:
        return f"{day}/{self._region}/s3/aws4_request"

    def _signing_key(self, secret_key: str, day: str) -> _Mac:
        cached = self._keys.get((secret_key, day))
        if cached is None:
            key = _hmac(f"AWS4{secret_key}".encode(), day)
            for part in (self._region, "s3", "aws4_request"):
                key = _hmac(key, part)
            cached = _Mac(key)
            self._keys = {(secret_key, day): cached}  # one day's key; yesterday's is dropped
        return cached
