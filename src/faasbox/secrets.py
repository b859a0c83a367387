"""Secrets: named values, encrypted at rest, that functions read as files.

Under the data directory: ``secret.key``, a Fernet key generated on first start (0600),
and ``secrets/<name>`` (0600, in a 0700 directory), one file per secret holding the
Fernet token of its value. Each write goes to a temporary file first, then takes the
name atomically. Plaintext leaves this module only through ``read``, which the replica
factory calls to hand a replica the secrets its function lists; names, never values,
appear in listings, log lines and error messages.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets as _random
import threading
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from faasbox.errors import Conflict, FaasboxError, InvalidName, NotFound

log = logging.getLogger("faasbox.secrets")

# DNS-1123 subdomain-like, as Kubernetes (and so OpenFaaS) names secrets, plus "_".
NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$")
MAX_NAME = 253
MAX_VALUE = 1024 * 1024
KEY_FILE = "secret.key"
SECRETS_DIR = "secrets"
_TMP_PREFIX = ".tmp-"


def check_secret_name(name: object) -> str:
    if not isinstance(name, str) or len(name) > MAX_NAME or not NAME_RE.fullmatch(name):
        shown = name[:64] if isinstance(name, str) else type(name).__name__
        raise InvalidName(
            f"invalid secret name {shown!r}: use lower-case letters, digits, '-', '_' and "
            f"'.', starting and ending with a letter or digit, at most {MAX_NAME} characters"
        )
    return name


class SecretNotFound(NotFound):
    def __init__(self, name: str) -> None:
        super().__init__(f"secret {name!r} not found")
        self.name = name


class SecretStore:
    """The secrets of one data directory. Methods do blocking file I/O: callers on the
    event loop run them in a thread. Writes are serialised by a lock."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir / SECRETS_DIR
        self.key_file = data_dir / KEY_FILE
        self._lock = threading.Lock()
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        # A damaged key does not stop the platform: functions without secrets still run,
        # and every use of a secret says what is wrong.
        self._fernet: Fernet | None = None
        self._key_error = ""
        try:
            self._fernet = Fernet(_load_or_create_key(self.key_file))
        except FaasboxError as exc:
            self._key_error = exc.message
        except OSError as exc:
            self._key_error = f"cannot use {self.key_file}: {exc.strerror}"
        if self._key_error:
            log.error("secrets unavailable: %s", self._key_error)
        for leftover in self.dir.glob(_TMP_PREFIX + "*"):  # from a crash mid-write
            with contextlib.suppress(OSError):
                leftover.unlink()

    def names(self) -> list[str]:
        return sorted(p.name for p in self.dir.iterdir() if NAME_RE.fullmatch(p.name))

    def exists(self, name: str) -> bool:
        return (self.dir / check_secret_name(name)).is_file()

    def create(self, name: str, value: bytes) -> None:
        """Store a new secret; ``Conflict`` if the name is taken."""
        path = self.dir / check_secret_name(name)
        with self._lock:
            tmp = self._write_tmp(value)
            try:
                # link() never replaces: the name is taken atomically, or not at all.
                os.link(tmp, path)
            except FileExistsError:
                raise Conflict(
                    f"secret {name!r} already exists; change its value with PUT /system/secrets"
                ) from None
            finally:
                tmp.unlink()
            _fsync_dir(self.dir)

    def update(self, name: str, value: bytes) -> None:
        """Replace the value of an existing secret; ``SecretNotFound`` if there is none."""
        path = self.dir / check_secret_name(name)
        with self._lock:
            if not path.is_file():
                raise SecretNotFound(name)
            tmp = self._write_tmp(value)
            os.replace(tmp, path)
            _fsync_dir(self.dir)

    def delete(self, name: str) -> None:
        path = self.dir / check_secret_name(name)
        with self._lock:
            try:
                path.unlink()
            except FileNotFoundError:
                raise SecretNotFound(name) from None
            _fsync_dir(self.dir)

    def read(self, name: str) -> bytes:
        """The plaintext value, for a replica that lists the secret."""
        path = self.dir / check_secret_name(name)
        try:
            token = path.read_bytes()
        except FileNotFoundError:
            raise SecretNotFound(name) from None
        try:
            return self._key().decrypt(token)
        except InvalidToken:
            raise FaasboxError(
                f"secret {name!r} cannot be decrypted with {self.key_file} (was the key "
                "replaced, or the file altered?); set it again with PUT /system/secrets"
            ) from None

    def _key(self) -> Fernet:
        if self._fernet is None:
            raise FaasboxError(f"secrets unavailable: {self._key_error}")
        return self._fernet

    def _write_tmp(self, value: bytes) -> Path:
        token = self._key().encrypt(value)
        tmp = self.dir / f"{_TMP_PREFIX}{_random.token_hex(8)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(token)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        return tmp


def _load_or_create_key(path: Path) -> bytes:
    """The key, created (0600) on first start. A new key is written to a temporary file
    and linked into place, so a crash never leaves a truncated key behind."""
    if not path.exists():
        key = Fernet.generate_key()
        tmp = path.with_name(f"{_TMP_PREFIX}{path.name}-{_random.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(key)
                f.flush()
                os.fsync(f.fileno())
            with contextlib.suppress(FileExistsError):  # another process won the race
                os.link(tmp, path)
        finally:
            tmp.unlink()
        _fsync_dir(path.parent)
        log.info("generated the secrets key %s", path)
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning("secrets key %s had mode %o; set to 600", path, mode)
        os.chmod(path, 0o600)
    key = path.read_bytes().strip()
    try:
        Fernet(key)
    except (ValueError, TypeError):
        raise FaasboxError(
            f"{path} is not a valid secrets key (32 url-safe base64-encoded bytes)"
        ) from None
    return key


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
