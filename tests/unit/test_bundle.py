from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

import pytest

from faasbox.build.bundle import unpack
from faasbox.errors import InvalidBundle


def _zip(entries: dict[str | zipfile.ZipInfo, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_unpack_is_content_addressed_and_idempotent(tmp_path: Path) -> None:
    data = _zip({"handler.py": b"x = 1\n", "pkg/mod.py": b"y = 2\n"})
    sha, d = unpack(data, tmp_path)
    assert d == tmp_path / sha and (d / "pkg" / "mod.py").read_bytes() == b"y = 2\n"
    assert unpack(data, tmp_path) == (sha, d)
    assert [p.name for p in tmp_path.iterdir()] == [sha], "no temporary directories left"


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("/abs.py", "absolute"),
        ("a/../../up.py", ".."),
        ("C:/win.py", "absolute"),
        ("back\\slash", "invalid"),
    ],
)
def test_unsafe_names(tmp_path: Path, name: str, why: str) -> None:
    with pytest.raises(InvalidBundle, match=why.replace(".", r"\.")):
        unpack(_zip({name: b"x"}), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_symlinks_and_devices_are_refused(tmp_path: Path) -> None:
    link = zipfile.ZipInfo("link")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    with pytest.raises(InvalidBundle, match="symlink"):
        unpack(_zip({link: b"/etc/passwd"}), tmp_path)
    fifo = zipfile.ZipInfo("fifo")
    fifo.external_attr = (stat.S_IFIFO | 0o644) << 16
    with pytest.raises(InvalidBundle, match="regular"):
        unpack(_zip({fifo: b""}), tmp_path)


def test_size_limit_counts_real_bytes(tmp_path: Path) -> None:
    data = _zip({"big.bin": b"\0" * 5000})
    with pytest.raises(InvalidBundle, match="MiB"):
        unpack(data, tmp_path, max_size=4000)
    assert list(tmp_path.iterdir()) == []


def test_not_a_zip(tmp_path: Path) -> None:
    with pytest.raises(InvalidBundle, match="not a valid zip"):
        unpack(b"PK\x03\x04garbage", tmp_path)


def test_python_files_are_compiled_once_naming_their_final_place(tmp_path: Path) -> None:
    import importlib.util
    import marshal
    import sys

    files: dict[str | zipfile.ZipInfo, bytes] = {
        "handler.py": b"def handle(event, context):\n    return 1\n",
        "pkg/mod.py": b"X = 2\n",
        "broken.py": b"def (:\n",  # the build's import check reports this one
    }
    _, dest = unpack(_zip(files), tmp_path)
    tag = sys.implementation.cache_tag
    pyc = dest / "__pycache__" / f"handler.{tag}.pyc"
    assert pyc.exists() and (dest / "pkg" / "__pycache__" / f"mod.{tag}.pyc").exists()
    assert not (dest / "__pycache__" / f"broken.{tag}.pyc").exists()
    data = pyc.read_bytes()
    assert data[:4] == importlib.util.MAGIC_NUMBER
    assert marshal.loads(data[16:]).co_filename == str(dest / "handler.py")
    assert stat.S_IMODE(pyc.stat().st_mode) == 0o644
    assert stat.S_IMODE(pyc.parent.stat().st_mode) == 0o755
