"""The error hierarchy. The consumer runtime decides what to do with a message by its class.

- `TransientError`: the same message may succeed later (broker, storage or database
  unavailable, an object not visible yet). Retried with capped exponential backoff; but
  while the database or storage is down for everyone, the message is held until it is
  back instead, spending no attempt (`shared.runtime`).
- `PermanentError`: retrying cannot help (malformed payload, unknown event version).
  Parked in the queue's dead-letter queue with the reason, for an operator to inspect.

Anything else escaping a handler is a bug; it is retried like a transient error, so a fix
deployed in time saves the message, and parked once the attempts run out.
"""

from __future__ import annotations


class DarkroomError(Exception):
    """Base for every error Darkroom raises on purpose."""


class ConfigurationError(DarkroomError):
    """Settings that cannot work together; raised at start-up, never mid-flight."""


class TransientError(DarkroomError):
    """Try again later."""

    what = "a backing service"  # named in HTTP 503 answers


class PermanentError(DarkroomError):
    """Retrying the same input cannot succeed."""


class BrokerUnavailable(TransientError):
    """The broker did not confirm a publish in time, or the connection is down."""

    what = "the message broker"


class StorageUnavailable(TransientError):
    """Object storage failed or timed out."""

    what = "object storage"


class DatabaseUnavailable(TransientError):
    """The metadata store failed or timed out."""

    what = "the metadata store"


class NotYet(TransientError):
    """Something this message depends on has not happened yet (an object, an intent)."""


class InvalidMessage(PermanentError):
    """A message body that does not parse or does not match its schema."""
