"""Read-only API keys from a file of hashes, such as a Kubernetes Secret mounted in the gateway.

The format is JSON lines, one key a line; blank lines and lines starting with `#` are skipped:

    {"key_id": "Q7xkP2mR9aTb", "tenant_id": "acme", "role": "user", "sha256": "<64 hex digits>"}

`sha256` is the SHA-256 of the whole secret (`ink_<key id>_…`), whose key id must be `key_id`; `role`
is user, analyst or admin. Optional: `name` (a label) and `created_at` (Unix seconds; default: the
file's modification time). `inkloop keys hash` writes such a line for a new or given secret and
`inkloop keys export` the lines of a key store's keys, so the file never holds a secret. These keys
cannot be revoked through the API: remove the line.

The file is checked (one `stat`) at most every `check_interval_s`, from the lookups themselves, and
re-read when its identity (device, inode, size, mtime) changes: kubelet updates a mounted Secret by
swapping a symlink to a new directory, so the path stays and the inode changes. A bad line is logged
with its number and skipped while the others load. A file that cannot be read keeps the keys read
before, except a missing file, which means no keys: deleting the file must not keep its keys alive.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path

from inkloop_gateway.admission.keys import KEY_ID, TENANT_ID, ApiKey, Role, StoredKey, key_id_of, prefix_of

log = logging.getLogger(__name__)

_REQUIRED = ("key_id", "tenant_id", "role", "sha256")
_OPTIONAL = ("name", "created_at")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_MISSING = (-1, -1, -1, -1)


def key_line(stored: StoredKey) -> str:
    """The file's line for a key."""
    key = stored.key
    entry: dict[str, object] = {
        "key_id": key.key_id,
        "tenant_id": key.tenant_id,
        "role": key.role.value,
        "sha256": stored.secret_hash.hex(),
    }
    if key.name:
        entry["name"] = key.name
    entry["created_at"] = round(key.created_at, 3)
    return json.dumps(entry, ensure_ascii=False)


def parse_line(line: str, default_created_at: float) -> StoredKey:
    """One key from one line; `ValueError` saying what is wrong (never repeating the line, which
    might hold a secret pasted by mistake)."""
    if key_id_of(line) is not None:
        raise ValueError("this is a secret, not its hash: write the output of `inkloop keys hash` instead")
    try:
        entry = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"not JSON ({error.msg}, column {error.colno})") from None
    if not isinstance(entry, dict):
        raise ValueError("not a JSON object")
    missing = [name for name in _REQUIRED if name not in entry]
    unknown = sorted(set(entry) - set(_REQUIRED) - set(_OPTIONAL))
    if missing or unknown:
        wrong = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"unknown {', '.join(unknown)}"] if unknown else []
        )
        raise ValueError("; ".join(wrong))
    key_id, tenant_id, role, sha256 = (entry[name] for name in _REQUIRED)
    name, created_at = entry.get("name", ""), entry.get("created_at", default_created_at)
    if not isinstance(key_id, str) or not KEY_ID.match(key_id):
        raise ValueError("key_id must be the 12 letters and digits after 'ink_' in the secret")
    if not isinstance(tenant_id, str) or not TENANT_ID.match(tenant_id):
        raise ValueError("tenant_id must be 1-64 characters of a-z, 0-9, '_' or '-'")
    if role not in [r.value for r in Role]:  # a list: an unhashable value is just wrong, not a TypeError
        raise ValueError(f"role must be one of {', '.join(Role)}")
    if not isinstance(sha256, str) or not _SHA256.match(sha256):
        raise ValueError("sha256 must be 64 hex digits (the SHA-256 of the whole secret)")
    if not isinstance(name, str):
        raise ValueError("name must be a string")
    if isinstance(created_at, bool) or not isinstance(created_at, int | float):
        raise ValueError("created_at must be Unix seconds")
    key = ApiKey(key_id, tenant_id, Role(role), name, prefix_of(key_id), float(created_at), from_key_file=True)
    return StoredKey(key, bytes.fromhex(sha256))


def parse_keys(text: str, default_created_at: float = 0.0) -> tuple[dict[str, StoredKey], list[str]]:
    """The keys of a file's text by key id, and one message per bad line ("line N: why")."""
    keys: dict[str, StoredKey] = {}
    lines_of: dict[str, int] = {}
    problems: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            stored = parse_line(line, default_created_at)
        except ValueError as error:
            problems.append(f"line {number}: {error}")
            continue
        key_id = stored.key.key_id
        if key_id in keys:
            problems.append(f"line {number}: key_id {key_id} is already on line {lines_of[key_id]}")
            continue
        keys[key_id], lines_of[key_id] = stored, number
    return keys, problems


class KeyFile:
    """The keys of one file, re-read when it changes. Lookups are dict reads; safe between threads."""

    def __init__(self, path: Path, *, check_interval_s: float = 1.0) -> None:
        self.path = path
        self.check_interval_s = check_interval_s
        self.problems: list[str] = []  # of the last read, one per skipped line
        self._keys: dict[str, StoredKey] = {}
        self._identity: tuple[int, int, int, int] | None = None
        self._next_check = 0.0
        self.refresh()

    def find(self, key_id: str) -> StoredKey | None:
        self._refresh_when_due()
        return self._keys.get(key_id)

    def entries(self) -> list[StoredKey]:
        self._refresh_when_due()
        return sorted(self._keys.values(), key=lambda stored: stored.key.created_at)

    def _refresh_when_due(self) -> None:
        if time.monotonic() >= self._next_check:
            self.refresh()

    def refresh(self) -> None:
        """Re-reads the file now if it changed since the last read."""
        self._next_check = time.monotonic() + self.check_interval_s
        try:
            stat = os.stat(self.path)  # follows the symlinks of a mounted Secret
        except FileNotFoundError:
            if self._identity != _MISSING:
                log.error("API key file %s not found: no keys from it until it appears", self.path)
            self._keys, self._identity, self.problems = {}, _MISSING, []
            return
        except OSError as error:
            log.error(
                "API key file %s cannot be read (%s); keeping the %d keys read before",
                self.path,
                error,
                len(self._keys),
            )
            return
        identity = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if identity == self._identity:
            return
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            log.error(
                "API key file %s cannot be read (%s); keeping the %d keys read before",
                self.path,
                error,
                len(self._keys),
            )
            return  # identity not recorded: tried again at the next check
        keys, problems = parse_keys(text, stat.st_mtime)
        for problem in problems:
            log.error("API key file %s, %s; line skipped", self.path, problem)
        log.info("loaded %d API keys from %s (%d bad lines)", len(keys), self.path, len(problems))
        self._keys, self._identity, self.problems = keys, identity, problems
