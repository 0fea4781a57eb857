"""Share-link passwords: argon2 hashes, checked off the event loop, one guess at a time.

Wrong guesses are limited per link (DARKROOM_LINK_PASSWORD_ATTEMPTS a minute). The limit is
read before a guess is verified and charged after it fails, so guesses sent in parallel
would all pass the read first (200 parallel wrong guesses were all verified under a limit
of 10): each link's guesses are therefore verified one at a time in a process, and at most
ARGON2_AT_ONCE verifications run in it at all, so guessing cannot fill the thread pool.
"""

from __future__ import annotations

import asyncio
import weakref

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

ARGON2_AT_ONCE = 4


class Passwords:
    def __init__(self) -> None:
        self._hasher = PasswordHasher()
        self._links: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._slots = asyncio.Semaphore(ARGON2_AT_ONCE)

    def turn(self, link_id: str) -> asyncio.Lock:
        """Held while one guess at this link is checked and, if wrong, counted."""
        lock = self._links.get(link_id)
        if lock is None:
            lock = self._links[link_id] = asyncio.Lock()
        return lock

    async def matches(self, hashed: str, given: str) -> bool:
        async with self._slots:
            try:
                # argon2 is slow on purpose: off the event loop.
                return await asyncio.to_thread(self._hasher.verify, hashed, given)
            except (VerificationError, InvalidHashError):
                return False

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(self._hasher.hash, password)
