"""`darkroom-client`: upload folders with progress and resume, list and fetch photos.

The API's URL and token come from --url/--token, else DARKROOM_URL/DARKROOM_TOKEN, else
what `darkroom-client login` stored."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from darkroom_client.client import Client
from darkroom_client.errors import DarkroomError
from darkroom_client.state import config_path, load_login, save_login, state_path
from darkroom_client.upload_cmd import run_upload

FAILED, REJECTED, INTERRUPTED = 1, 2, 130


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="darkroom-client", description=__doc__)
    top.add_argument("--url", help="the API's base URL (DARKROOM_URL)")
    top.add_argument("--token", help="a user token or API key (DARKROOM_TOKEN)")
    commands = top.add_subparsers(dest="command", required=True)

    up = commands.add_parser("upload", help="upload files and folders (recursively)")
    up.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    up.add_argument("--album", help="upload into this album (its id)")
    up.add_argument("--concurrency", type=int, default=4, help="files at a time (4)")
    up.add_argument("--state", type=Path, help=f"the pending list (default {state_path()})")
    up.add_argument("--json", action="store_true", help="print the outcomes as JSON")
    up.add_argument("--no-progress", action="store_true", help="no progress bars")

    photos = commands.add_parser("photos", help="list your photos, newest first")
    photos.add_argument("--limit", type=int, default=50, help="how many (50; 0 for all)")
    photos.add_argument("--status", help="comma-separated: pending,verified,ready,rejected")
    photos.add_argument("--album", help="only those in this album")
    photos.add_argument("--json", action="store_true", help="JSON lines, one per photo")

    get = commands.add_parser("get", help="download a photo's original or a rendition")
    get.add_argument("id")
    get.add_argument("--rendition", default="original", help="original, thumb, preview...")
    get.add_argument("-o", "--output", type=Path, help="file to write (default: the id)")

    login = commands.add_parser("login", help=f"store the URL and token ({config_path()})")
    login.add_argument("--check", action="store_true", help="try them before storing")
    return top


def credentials(args: argparse.Namespace) -> tuple[str, str]:
    stored = load_login()
    url = args.url or os.environ.get("DARKROOM_URL") or stored.get("url")
    token = args.token or os.environ.get("DARKROOM_TOKEN") or stored.get("token")
    if not url or not token:
        raise SystemExit(
            "darkroom-client: no URL or token: pass --url and --token, set DARKROOM_URL "
            "and DARKROOM_TOKEN, or run `darkroom-client login`"
        )
    return url, token


async def photos_command(args: argparse.Namespace, out: Console) -> int:
    url, token = credentials(args)
    filters = {k: v for k, v in (("status", args.status), ("album_id", args.album)) if v}
    table = Table("id", "status", "file", "size", "created", "reason")
    async with Client(url, token, use_events=False) as client:
        count = 0
        async for photo in client.photos(limit=min(args.limit or 100, 100), **filters):
            if args.json:
                print(json.dumps(photo.raw, sort_keys=True))
            else:
                raw = photo.raw
                table.add_row(
                    photo.id,
                    photo.status + (" (sealed)" if photo.sealed else ""),
                    photo.filename or "",
                    str(raw.get("size") or ""),
                    str(raw.get("created_at") or ""),
                    photo.reason or "",
                )
            count += 1
            if args.limit and count >= args.limit:
                break
    if not args.json:
        out.print(table)
    return 0


async def get_command(args: argparse.Namespace, out: Console) -> int:
    url, token = credentials(args)
    target = args.output or Path(f"{args.id}-{args.rendition}")
    async with Client(url, token, use_events=False) as client:
        saved = await client.download(args.id, args.rendition, target)
    out.print(f"saved {saved}", highlight=False)
    return 0


async def login_command(args: argparse.Namespace, out: Console) -> int:
    url = args.url or os.environ.get("DARKROOM_URL")
    url = url or (await asyncio.to_thread(input, "URL: ")).strip()
    token = args.token or os.environ.get("DARKROOM_TOKEN")
    token = token or (await asyncio.to_thread(getpass.getpass, "token: ")).strip()
    if args.check:
        async with Client(url, token, use_events=False) as client:
            async for _ in client.photos(limit=1):
                break
    path = save_login(url, token)
    out.print(f"stored the URL and token in {path} (mode 0600)", highlight=False)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    out, err = Console(), Console(stderr=True)
    commands = {
        "upload": run_upload,
        "photos": photos_command,
        "get": get_command,
        "login": login_command,
    }
    if args.command == "upload":
        args.url, args.token = credentials(args)
    try:
        return asyncio.run(commands[args.command](args, out))
    except KeyboardInterrupt:
        err.print("interrupted: run the same command again to resume")
        return INTERRUPTED
    except DarkroomError as exc:
        err.print(f"darkroom-client: {exc}", highlight=False, markup=False)
        return FAILED


if __name__ == "__main__":
    sys.exit(main())
