"""The stack file model and loader, and the function bundle zip: real files in tmp_path."""

from __future__ import annotations

import io
import os
import stat
import textwrap
import zipfile
from pathlib import Path

import pytest

from faasbox.stack import StackError, load_stack, zip_directory

FULL = """\
version: 1
provider:
  name: openfaas
  gateway: http://10.0.0.1:8080
functions:
  hello:
    runtime: python3
    handler: main.run
    path: ./src/hello
    env: {GREETING: hi, PORT: 8080, DEBUG: true}
    secrets: [db-password]
    labels: {com.openfaas.scale.min: 0, com.openfaas.scale.max: "5"}
    annotations: {team: web}
    limits: {memory: 128Mi, cpu: 500m}
    timeout: 30s
    concurrency: 4
  minimal:
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_full_stack_gives_the_api_deploy_spec(tmp_path: Path) -> None:
    stack = load_stack(write(tmp_path / "faasbox.yml", FULL))
    assert stack.provider.gateway == "http://10.0.0.1:8080"
    assert stack.file == (tmp_path / "faasbox.yml").resolve()
    hello = stack.functions["hello"]
    assert hello.path == (tmp_path / "src" / "hello").resolve()
    assert hello.to_spec() == {
        "service": "hello",
        "runtime": "python3",
        "handler": "main.run",
        # YAML numbers and booleans are what users mean as text.
        "envVars": {"GREETING": "hi", "PORT": "8080", "DEBUG": "true"},
        "secrets": ["db-password"],
        "labels": {"com.openfaas.scale.min": "0", "com.openfaas.scale.max": "5"},
        "annotations": {"team": "web"},
        "limits": {"memory": "128Mi", "cpu": "500m"},
        "timeout": "30s",
        "concurrency": 4,
    }


def test_defaults_and_paths_relative_to_the_file_not_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "proj" / "faasbox.yml", FULL)
    monkeypatch.chdir(tmp_path)
    minimal = load_stack("proj/faasbox.yml").functions["minimal"]
    assert minimal.path == (tmp_path / "proj" / "minimal").resolve()
    assert minimal.path.is_absolute()
    assert minimal.to_spec() == {
        "service": "minimal",
        "runtime": "python3",
        "handler": "handler.handle",
        "envVars": {},
        "secrets": [],
        "labels": {},
        "annotations": {},
        "limits": {},
    }


def test_bare_number_timeout_means_seconds(tmp_path: Path) -> None:
    f = write(tmp_path / "faasbox.yml", "functions:\n  a:\n    timeout: 45\n")
    assert load_stack(f).functions["a"].to_spec()["timeout"] == "45s"


def test_empty_and_null_sections_are_fine(tmp_path: Path) -> None:
    f = write(tmp_path / "faasbox.yml", "version: 1\nprovider:\nfunctions:\n")
    stack = load_stack(f)
    assert stack.functions == {} and stack.provider.gateway is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "functions:\n  hello:\n    environment: {A: b}\n",
            "functions.hello.environment: unknown field 'environment' (did you mean 'env'?)",
        ),
        ("functions:\n  hello:\n    handlr: a.b\n", "did you mean 'handler'?"),
        (
            "functions:\n  hello:\n    limits: {memroy: 1Mi}\n",
            "functions.hello.limits.memroy: unknown field 'memroy' (did you mean 'memory'?)",
        ),
        (
            "functions:\n  Hello_World: {}\n",
            "functions.Hello_World.name: 'Hello_World' is not a valid function name",
        ),
        (f"functions:\n  {'a' * 64}: {{}}\n", "is longer than 63 characters"),
        (
            "functions:\n  hello:\n    handler: handle\n",
            "functions.hello.handler: 'handle' is not of the form module.function",
        ),
        (
            "functions:\n  hello:\n    limits: {memory: lots}\n",
            "functions.hello.limits.memory: invalid memory quantity 'lots'",
        ),
        (
            "functions:\n  hello:\n    limits: {cpu: fast}\n",
            "functions.hello.limits.cpu: invalid cpu quantity 'fast'",
        ),
        (
            "functions:\n  hello:\n    timeout: soon\n",
            "functions.hello.timeout: invalid duration 'soon'",
        ),
        (
            "functions:\n  hello:\n    concurrency: 0\n",
            "functions.hello.concurrency: Input should be greater than or equal to 1",
        ),
        ("functions:\n  hello:\n    env: [A, B]\n", "functions.hello.env:"),
        ("version: 2\n", "version: only version 1 is supported"),
        ("functions: [a, b]\n", "functions: expected a mapping"),
        ("functions:\n  hello: 3\n", "functions.hello: expected a mapping"),
        ("- just\n- a list\n", "expected a mapping"),
        ("fnctions: {}\n", "fnctions: unknown field 'fnctions' (did you mean 'functions'?)"),
    ],
)
def test_bad_stack_files_name_the_file_and_the_field(
    tmp_path: Path, text: str, expected: str
) -> None:
    f = write(tmp_path / "faasbox.yml", text)
    with pytest.raises(StackError) as info:
        load_stack(f)
    message = str(info.value)
    assert "faasbox.yml" in message
    assert expected in message


def test_invalid_yaml_says_where(tmp_path: Path) -> None:
    f = write(tmp_path / "faasbox.yml", "functions:\n  hello:\n    env: {A: b\n  other: 1\n")
    with pytest.raises(StackError, match=r"faasbox.yml: invalid YAML at line \d+, column \d+"):
        load_stack(f)


def test_missing_file_is_a_readable_error(tmp_path: Path) -> None:
    with pytest.raises(StackError, match=r"not found .*faasbox new NAME"):
        load_stack(tmp_path / "faasbox.yml")


# -- zip_directory ---------------------------------------------------------------------


def make_function_dir(root: Path) -> Path:
    files = {
        "handler.py": "def handle(event, context):\n    return 'hi'\n",
        "requirements.txt": "",
        "lib/util.py": "X = 1\n",
        "lib/data/table.csv": "a,b\n1,2\n",
        "__pycache__/handler.cpython-311.pyc": "junk",
        "lib/__pycache__/util.cpython-311.pyc": "junk",
        "stale.pyc": "junk",
        ".git/HEAD": "ref: refs/heads/main\n",
        ".venv/pyvenv.cfg": "home = /usr\n",
        ".env.example": "A=1\n",
    }
    for name, content in files.items():
        write(root / name, content)
    return root


def zip_names(data: bytes) -> list[str]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return zf.namelist()


def test_zip_has_the_files_sorted_and_skips_caches_vcs_and_venvs(tmp_path: Path) -> None:
    data = zip_directory(make_function_dir(tmp_path / "fn"))
    assert zip_names(data) == [
        ".env.example",
        "handler.py",
        "lib/data/table.csv",
        "lib/util.py",
        "requirements.txt",
    ]
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.read("lib/util.py") == b"X = 1\n"
        assert zf.testzip() is None


def test_zip_is_deterministic_across_mtimes_and_creation_order(tmp_path: Path) -> None:
    first = zip_directory(make_function_dir(tmp_path / "a"))
    # Same content, created later (other mtimes and inode order).
    b = make_function_dir(tmp_path / "b")
    os.utime(b / "handler.py", (1_000_000_000, 1_000_000_000))
    assert zip_directory(b) == first
    assert zip_directory(tmp_path / "a") == first
    (b / "handler.py").write_text("changed\n")
    assert zip_directory(b) != first


def test_zip_keeps_the_executable_bit_only(tmp_path: Path) -> None:
    fn = make_function_dir(tmp_path / "fn")
    write(fn / "run.sh", "#!/bin/sh\n")
    (fn / "run.sh").chmod(0o775)
    (fn / "handler.py").chmod(0o600)
    with zipfile.ZipFile(io.BytesIO(zip_directory(fn))) as zf:
        modes = {i.filename: stat.S_IMODE(i.external_attr >> 16) for i in zf.infolist()}
        assert all(i.date_time == (1980, 1, 1, 0, 0, 0) for i in zf.infolist())
    assert modes["run.sh"] == 0o755
    assert modes["handler.py"] == 0o644


def test_zip_refuses_a_symlinked_file(tmp_path: Path) -> None:
    fn = make_function_dir(tmp_path / "fn")
    (tmp_path / "secret").write_text("password\n")
    (fn / "lib" / "link.txt").symlink_to(tmp_path / "secret")
    with pytest.raises(StackError, match=r"fn/lib/link.txt: symlinks are not allowed"):
        zip_directory(fn)


def test_zip_refuses_a_symlinked_directory_without_following_it(tmp_path: Path) -> None:
    fn = make_function_dir(tmp_path / "fn")
    (tmp_path / "elsewhere").mkdir()
    (fn / "shared").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(StackError, match=r"fn/shared: symlinks are not allowed"):
        zip_directory(fn)


def test_zip_ignores_symlinks_inside_excluded_directories(tmp_path: Path) -> None:
    fn = make_function_dir(tmp_path / "fn")
    # A real virtualenv is full of symlinks (bin/python): it is skipped, not refused.
    (fn / ".venv" / "bin").mkdir(parents=True)
    (fn / ".venv" / "bin" / "python").symlink_to("/usr/bin/python3")
    assert "handler.py" in zip_names(zip_directory(fn))


def test_zip_refuses_special_files(tmp_path: Path) -> None:
    fn = make_function_dir(tmp_path / "fn")
    os.mkfifo(fn / "pipe")
    with pytest.raises(StackError, match="fn/pipe: not a regular file"):
        zip_directory(fn)


def test_zip_of_a_missing_or_symlinked_directory(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="does not exist"):
        zip_directory(tmp_path / "nope")
    make_function_dir(tmp_path / "real")
    (tmp_path / "alias").symlink_to(tmp_path / "real", target_is_directory=True)
    with pytest.raises(StackError, match="must not be a symlink"):
        zip_directory(tmp_path / "alias")
