"""Developer tools over a throw-away SQLite database brought to the newest revision:

python -m shared.migrations check              # fail if shared.tables and the
                                               # revisions disagree (make lint)
python -m shared.migrations revision ID MESSAGE  # autogenerate the next revision
                                               # from shared.tables; review it
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from alembic import command
from alembic.util.exc import CommandError

from shared.db import create_engine
from shared.migrations import alembic_config, upgrade


async def _upgraded(url: str) -> None:
    engine = create_engine(url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()


def main(argv: list[str]) -> int:
    if (
        not argv
        or argv[0] not in {"check", "revision"}
        or (argv[0] == "revision") != (len(argv) == 3)
    ):
        print(__doc__, file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as scratch:
        url = f"sqlite+aiosqlite:///{Path(scratch) / 'head.sqlite3'}"
        asyncio.run(_upgraded(url))
        config = alembic_config(url=url)
        try:
            if argv[0] == "check":
                command.check(config)
            else:
                command.revision(config, message=argv[2], rev_id=argv[1], autogenerate=True)
        except CommandError as exc:
            print(f"migrations: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
