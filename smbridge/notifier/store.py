"""Small JSON state files of the reference Notifier: private, written atomically.

The trust store (notifier/trust.py) and the pair roster (notifier/pair_roster.py)
keep what must survive a restart in one JSON file each under the work path. A
write goes to a temporary file in the same directory, is flushed and fsynced,
then renamed over the old file (``os.replace``) and the directory fsynced, so a
crash leaves either the old file or the new one, never half of one. Missing
directories are created with mode 0700 (parents as needed; existing ones are left
alone) and the file itself is 0600: it names the bridges a site trusts.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


class StoreError(Exception):
    """A state file could not be read or written (the message says which and why)."""


def make_private_dirs(directory: Path) -> None:
    """Create ``directory`` and any missing parents, each with mode 0700."""
    missing: list[Path] = []
    current = directory
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for path in reversed(missing):
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            continue  # created meanwhile by someone else: leave its mode alone
        os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask


def write_json(path: Path, data: Any) -> None:
    """Replace ``path`` with ``data`` as JSON, atomically (StoreError when it cannot)."""
    try:
        make_private_dirs(path.parent)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise StoreError(f"cannot write {path}: {e.strerror or e}") from e
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(data, out, indent=2, sort_keys=True)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise StoreError(f"cannot write {path}: {e.strerror or e}") from e
    _sync_directory(path.parent)


def _sync_directory(directory: Path) -> None:
    """Make the rename itself durable (best effort: not every platform opens directories)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when there is no file.

    A file that is not a JSON object is renamed to ``NAME.corrupt`` (kept for the
    operator) and StoreError raised, so the caller starts afresh and says so.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StoreError(f"cannot read {path}: {e.strerror or e}") from e
    try:
        data = json.loads(raw.decode("utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except ValueError as e:
        aside = path.with_name(path.name + ".corrupt")
        try:
            os.replace(path, aside)
        except OSError:
            pass
        raise StoreError(f"{path} is unreadable ({e}); moved to {aside.name}") from e
    return data
