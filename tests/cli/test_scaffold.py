"""`faasbox new` and the templates: in-process units and the real command in a subprocess."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from faasbox.scaffold import ScaffoldError, scaffold_function
from faasbox.stack import load_stack, zip_directory


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "FAASBOX_GATEWAY"}
    return subprocess.run(
        [sys.executable, "-m", "faasbox", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )


def test_new_function_gets_a_handler_requirements_and_a_stack_file(tmp_path: Path) -> None:
    made = scaffold_function("hello", directory=tmp_path)
    assert made.function_dir == tmp_path / "hello"
    assert sorted(p.name for p in made.files) == ["handler.py", "requirements.txt"]
    assert made.stack_created
    assert (tmp_path / "hello" / "requirements.txt").read_text().startswith("#")
    stack = load_stack(tmp_path / "faasbox.yml")
    fn = stack.functions["hello"]
    assert fn.path == (tmp_path / "hello").resolve()
    assert (fn.runtime, fn.handler) == ("python3", "handler.handle")
    assert zip_directory(fn.path)  # deployable as it is


def test_the_template_handler_answers_a_dict_and_prints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scaffold_function("greeter", directory=tmp_path)
    spec = importlib.util.spec_from_file_location(
        "greeter_handler", tmp_path / "greeter" / "handler.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    event = SimpleNamespace(body=b"hi", method="POST", path="/", query={}, headers={})
    context = SimpleNamespace(call_id="abc", function_name="greeter")
    result = module.handle(event, context)
    assert result == {"message": "Hello from greeter!", "method": "POST", "received": "hi"}
    assert "greeter called: POST /" in capsys.readouterr().out


def test_a_second_function_is_appended_keeping_comments(tmp_path: Path) -> None:
    scaffold_function("one", directory=tmp_path)
    made = scaffold_function("two", directory=tmp_path)
    assert not made.stack_created
    text = (tmp_path / "faasbox.yml").read_text()
    assert text.count("# faasbox stack file") == 1
    assert list(load_stack(tmp_path / "faasbox.yml").functions) == ["one", "two"]


def test_appending_respects_indentation_and_later_sections(tmp_path: Path) -> None:
    (tmp_path / "faasbox.yml").write_text(
        "version: 1\n"
        "functions:\n"
        "    api:   # the public one\n"
        "        handler: main.handle\n"
        "\n"
        "# who to talk to\n"
        "provider:\n"
        "    gateway: http://127.0.0.1:9999\n"
    )
    scaffold_function("worker", directory=tmp_path)
    text = (tmp_path / "faasbox.yml").read_text()
    assert "# the public one" in text and "# who to talk to" in text
    assert "\n    worker:\n        runtime: python3\n" in text
    stack = load_stack(tmp_path / "faasbox.yml")
    assert list(stack.functions) == ["api", "worker"]
    assert stack.provider.gateway == "http://127.0.0.1:9999"


def test_a_flow_style_functions_map_is_rewritten(tmp_path: Path) -> None:
    (tmp_path / "faasbox.yml").write_text("version: 1\nfunctions: {}\n")
    scaffold_function("fresh", directory=tmp_path)
    assert list(load_stack(tmp_path / "faasbox.yml").functions) == ["fresh"]


@pytest.mark.parametrize(
    ("name", "lang", "message"),
    [
        ("Hello", "python", "not a valid function name"),
        ("-x", "python", "not a valid function name"),
        ("a" * 64, "python", "longer than 63"),
        ("ok", "cobol", "unsupported language 'cobol' (available: python)"),
    ],
)
def test_bad_names_and_languages_are_refused(
    tmp_path: Path, name: str, lang: str, message: str
) -> None:
    with pytest.raises(ScaffoldError, match=message.replace("(", r"\(").replace(")", r"\)")):
        scaffold_function(name, lang=lang, directory=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_existing_directory_or_listed_function_is_refused(tmp_path: Path) -> None:
    scaffold_function("taken", directory=tmp_path)
    with pytest.raises(ScaffoldError, match="already exists"):
        scaffold_function("taken", directory=tmp_path)
    (tmp_path / "faasbox.yml").write_text("functions:\n  listed:\n    path: ./elsewhere\n")
    with pytest.raises(ScaffoldError, match="'listed' is already listed"):
        scaffold_function("listed", directory=tmp_path)
    assert not (tmp_path / "listed").exists()


def test_a_broken_stack_file_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / "faasbox.yml").write_text("functions: [oops\n")
    with pytest.raises(ScaffoldError, match="invalid YAML"):
        scaffold_function("hello", directory=tmp_path)
    assert (tmp_path / "faasbox.yml").read_text() == "functions: [oops\n"
    assert not (tmp_path / "hello").exists()


def test_python3_is_an_alias_and_dir_is_created(tmp_path: Path) -> None:
    made = scaffold_function("aliased", lang="python3", directory=tmp_path / "new" / "place")
    assert made.stack_file == (tmp_path / "new" / "place" / "faasbox.yml").resolve()


# -- through the real command ----------------------------------------------------------


def test_faasbox_new_command(tmp_path: Path) -> None:
    r = cli("new", "hello", "--lang", "python", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "created" in r.stdout and "faasbox deploy" in r.stdout
    assert (tmp_path / "hello" / "handler.py").is_file()
    assert (tmp_path / "hello" / "requirements.txt").is_file()
    assert "hello" in load_stack(tmp_path / "faasbox.yml").functions

    r = cli("new", "world", "--dir", "sub", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "faasbox deploy -f sub/faasbox.yml world" in r.stdout
    assert (tmp_path / "sub" / "world" / "handler.py").is_file()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["new", "Bad_Name"], 2, "error: Invalid value for 'NAME': 'Bad_Name' is not a valid"),
        (
            ["new", "hello", "--lang", "rust"],
            2,
            "error: Invalid value for --lang: unsupported language 'rust'",
        ),
        (["new", "exists"], 1, "error: "),
    ],
)
def test_faasbox_new_errors_are_readable_and_usage_errors_exit_2(
    tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    (tmp_path / "exists").mkdir()
    r = cli(*args, cwd=tmp_path)
    assert r.returncode == code
    assert r.stderr.startswith(message), r.stderr
    assert "Traceback" not in r.stderr
    if code == 2:
        assert r.stderr.splitlines()[1:] == [
            "Usage: faasbox new [OPTIONS] NAME",
            "Try 'faasbox new --help' for help.",
        ]
    else:
        assert len(r.stderr.splitlines()) == 1
    assert not (tmp_path / "faasbox.yml").exists()


COMMANDS = [
    "new",
    "deploy",
    "invoke",
    "list",
    "describe",
    "rm",
    "scale",
    "logs",
    "activations",
    "activation",
    "up",
]


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_of_every_command(tmp_path: Path, command: str | None) -> None:
    r = cli(*([command] if command else []), "--help", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Usage: faasbox" in r.stdout
    if command is None:
        for name in COMMANDS:
            assert name in r.stdout
    # Metavars read like a command line's (NAME, FILE, TEXT), flags have none: no Python
    # types, no `{NAME}` in the usage line, no `[x>=0]` ranges.
    for placeholder in re.findall(r"<[^<>\s]+(?: range)?>|\{[A-Z_]+\}|\[x[<>]=", r.stdout):
        pytest.fail(f"{placeholder!r} in `faasbox {command or ''} --help`:\n{r.stdout}")
    options = [line for line in r.stdout.splitlines() if re.match(r"^│ +--", line)]
    assert options, r.stdout
    for line in options:
        if "--help" in line or "--version" in line or "--json" in line:
            assert re.match(r"^│ +--[a-z-]+(?: +-[a-z])? {2,}[A-Z]", line), line


def test_help_for_a_flag_and_a_valued_option(tmp_path: Path) -> None:
    out = cli("invoke", "--help", cwd=tmp_path).stdout
    assert re.search(r"--verbose +-v +Print the status line", out)
    assert re.search(r"--data-file +-D +FILE +Read the request body", out)
    assert re.search(r"--timeout +SECONDS +How long", out)
    assert "Usage: faasbox invoke [OPTIONS] NAME" in out


def test_version(tmp_path: Path) -> None:
    r = cli("--version", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("faasbox ")


def test_usage_errors_exit_2_without_traceback(tmp_path: Path) -> None:
    r = cli("scale", "hello", "-1", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    r = cli("nosuchcommand", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
