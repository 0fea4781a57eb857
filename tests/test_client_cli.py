"""`darkroom-client` as a person runs it: a real subprocess against the running system."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

import pytest
from darkroom_client import Client

from shared.settings import Settings
from tests import images
from tests.client_harness import cli_env, run_cli, stack, table_rows

pytestmark = [pytest.mark.processes, pytest.mark.timeout(300)]  # runs the CLI as a process


def photo_folder(root: Path) -> tuple[list[str], list[str]]:
    """20 photos (jpeg and png) in nested folders, 2 of them not images at all, and a
    text file the CLI must leave alone. Answers the valid and the invalid names."""
    valid: list[str] = []
    for n in range(18):
        folder = root / ("trip" if n % 2 else "party/day2")
        folder.mkdir(parents=True, exist_ok=True)
        name = f"photo{n:02}.{'png' if n % 3 == 0 else 'jpg'}"
        data = images.png(40 + n, 30) if n % 3 == 0 else images.jpeg(40 + n, 30)
        (folder / name).write_bytes(data)
        valid.append(name)
    (root / "trip" / "broken.jpg").write_bytes(b"these bytes are no photo" * 40)
    (root / "party" / "cut.png").write_bytes(images.png(64, 64)[:120])
    (root / "party" / "notes.txt").write_text("not a photo, and not uploaded")
    return valid, ["broken.jpg", "cut.png"]


async def test_a_folder_with_two_invalid_photos_ends_in_a_table_and_exit_code_2(
    settings: Settings, tmp_path: Path
) -> None:
    valid, invalid = photo_folder(tmp_path / "photos")
    async with stack(settings) as dr:
        env = cli_env(tmp_path, DARKROOM_URL=dr.url, DARKROOM_TOKEN=dr.token())
        code, out, err = await run_cli(env, "upload", str(tmp_path / "photos"), "--no-progress")
        rows = table_rows(out)
        assert code == 2, out + err
        assert set(rows) == set(valid) | set(invalid), out
        for name in valid:
            assert "ready" in rows[name] and "rejected" not in rows[name], rows[name]
        # Rejected rows name the photo and the API's reason.
        assert re.search(r"rejected\s*│\s*[0-9a-f]{32}\s*│\s*unsupported_type: ", rows[invalid[0]])
        assert re.search(r"rejected\s*│\s*[0-9a-f]{32}\s*│\s*truncated: ", rows[invalid[1]])
        assert "18 ready, 2 rejected, 0 failed" in out
        # Nothing is left pending: every file reached an outcome.
        pending = json.loads((tmp_path / "state" / "darkroom" / "pending.json").read_text())
        assert pending["uploads"] == {}

        # Again: the server knows the 18 by their SHA-256 and nothing of them is sent.
        code, out, err = await run_cli(env, "upload", str(tmp_path / "photos"), "--no-progress")
        rows = table_rows(out)
        assert code == 2, out + err
        for name in valid:
            assert "already uploaded" in rows[name], rows[name]


async def test_exit_code_is_0_when_every_file_is_ready_and_photos_lists_them(
    settings: Settings, tmp_path: Path
) -> None:
    folder = tmp_path / "few"
    folder.mkdir()
    for n in range(3):
        (folder / f"p{n}.jpg").write_bytes(images.jpeg(50 + n, 40))
    async with stack(settings) as dr:
        async with Client(dr.url, dr.token()) as client:
            album = await client.create_album("weekend")
        env = cli_env(tmp_path, DARKROOM_URL=dr.url, DARKROOM_TOKEN=dr.token())
        code, out, err = await run_cli(
            env, "upload", str(folder), "--album", album["id"], "--json", "--no-progress"
        )
        assert code == 0, out + err
        outcomes = [json.loads(line) for line in out.splitlines()]
        assert sorted(Path(o["file"]).name for o in outcomes) == ["p0.jpg", "p1.jpg", "p2.jpg"]
        assert {o["status"] for o in outcomes} == {"ready"}

        code, out, err = await run_cli(env, "photos", "--json")
        assert code == 0, err
        listed = [json.loads(line) for line in out.splitlines()]
        assert {p["id"] for p in listed} == {o["photo_id"] for o in outcomes}
        assert {p["album_id"] for p in listed} == {album["id"]}

        thumb = tmp_path / "thumb.webp"
        photo_id = outcomes[0]["photo_id"]
        code, out, err = await run_cli(
            env, "get", photo_id, "--rendition", "thumb", "-o", str(thumb)
        )
        assert code == 0, err
        assert thumb.read_bytes()[8:12] == b"WEBP"


async def test_a_file_that_cannot_be_read_fails_with_exit_code_1(
    settings: Settings, tmp_path: Path
) -> None:
    missing = tmp_path / "gone.jpg"
    async with stack(settings) as dr:
        env = cli_env(tmp_path, DARKROOM_URL=dr.url, DARKROOM_TOKEN=dr.token())
        code, out, _ = await run_cli(env, "upload", str(missing), "--no-progress")
    assert code == 1
    assert "failed" in table_rows(out)["gone.jpg"]


async def test_login_stores_url_and_token_readable_by_the_owner_alone(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    code, _, err = await run_cli(
        env, "--url", "http://127.0.0.1:9", "--token", "secret-token", "login"
    )
    assert code == 0, err
    stored = tmp_path / "config" / "darkroom" / "client.json"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert stat.S_IMODE(stored.parent.stat().st_mode) == 0o700
    assert json.loads(stored.read_text()) == {"url": "http://127.0.0.1:9", "token": "secret-token"}
