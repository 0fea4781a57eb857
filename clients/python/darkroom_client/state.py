"""What the CLI keeps on disk: the login (URL and token, mode 0600) and the pending list
of uploads not finished yet, so a later run resumes them."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from darkroom_client.models import UploadState


def _base(variable: str, fallback: str) -> Path:
    value = os.environ.get(variable)
    # The XDG spec: relative values are invalid and ignored.
    return Path(value) if value and os.path.isabs(value) else Path.home() / fallback


def config_path() -> Path:
    return _base("XDG_CONFIG_HOME", ".config") / "darkroom" / "client.json"


def state_path() -> Path:
    return _base("XDG_STATE_HOME", ".local/state") / "darkroom" / "pending.json"


def _write_private(path: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically (a crash leaves the old file or the new one), readable by
    the owner alone: it may hold a token."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(temp, 0o600)  # in case a stale temp file kept other bits
    temp.replace(path)


def save_login(url: str, token: str, path: Path | None = None) -> Path:
    target = path or config_path()
    _write_private(target, {"url": url, "token": token})
    return target


def load_login(path: Path | None = None) -> dict[str, str]:
    try:
        raw = json.loads((path or config_path()).read_text())
    except (OSError, ValueError):
        return {}
    return {k: str(v) for k, v in raw.items() if k in ("url", "token")}


@dataclass
class Pending:
    """Uploads begun and not finished, by the file's SHA-256: a multipart upload's
    `state` (to resume its parts), or the `photo_id` of one sent and awaiting its
    outcome. Saved after every change."""

    path: Path
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Pending:
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError):
            raw = {}
        entries = raw.get("uploads", {}) if isinstance(raw, dict) else {}
        return cls(path, {k: v for k, v in entries.items() if isinstance(v, dict)})

    def save(self) -> None:
        _write_private(self.path, {"version": 1, "uploads": self.entries})

    def resumable(self, sha256: str) -> UploadState | None:
        state = self.entries.get(sha256, {}).get("state")
        return UploadState.from_json(state) if state else None

    def sent(self, sha256: str) -> str | None:
        photo_id = self.entries.get(sha256, {}).get("photo_id")
        return str(photo_id) if photo_id else None

    def keep_state(self, file: Path, state: UploadState) -> None:
        self.entries[state.sha256] = {"file": str(file), "state": state.to_json()}
        self.save()

    def mark_sent(self, file: Path, sha256: str, photo_id: str) -> None:
        self.entries[sha256] = {"file": str(file), "photo_id": photo_id}
        self.save()

    def forget(self, sha256: str) -> None:
        if self.entries.pop(sha256, None) is not None:
            self.save()
