"""``faasbox new``: write a function directory from a template and list it in the stack file.

Templates live beside this module, one folder per language (``python/``), as
``*.tmpl`` files rendered with ``string.Template`` (``${name}`` is the function name).
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template

import yaml

from faasbox.stack import DEFAULT_STACK_FILE, StackError, load_stack, valid_name

__all__ = ["LANGUAGES", "Language", "ScaffoldError", "Scaffolded", "scaffold_function"]


class ScaffoldError(Exception):
    """The function cannot be created; the message says why.

    ``param`` names the command-line parameter at fault (``NAME``, ``--lang``) when the
    request itself is wrong, as opposed to what is on disk."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class Language:
    template: str  # folder beside this module
    runtime: str
    handler: str


LANGUAGES: dict[str, Language] = {
    "python": Language(template="python", runtime="python3", handler="handler.handle"),
}
_ALIASES = {"python3": "python", "py": "python"}


@dataclass(frozen=True)
class Scaffolded:
    function_dir: Path
    files: list[Path]
    stack_file: Path
    stack_created: bool


def scaffold_function(
    name: str, *, lang: str = "python", directory: Path | None = None
) -> Scaffolded:
    """Create ``directory/name/`` from the language's template and add it to
    ``directory/faasbox.yml`` (created if missing). Leaves nothing behind on failure."""
    problem = valid_name(name)
    if problem:
        raise ScaffoldError(problem, param="NAME")
    language = LANGUAGES.get(_ALIASES.get(lang, lang))
    if language is None:
        raise ScaffoldError(
            f"unsupported language {lang!r} (available: {', '.join(LANGUAGES)})", param="--lang"
        )
    base = (directory or Path.cwd()).resolve()
    target = base / name
    stack_file = base / DEFAULT_STACK_FILE
    if target.exists() or target.is_symlink():
        raise ScaffoldError(f"{target} already exists")
    old_text: str | None = None
    if stack_file.exists():
        try:
            stack = load_stack(stack_file)
        except StackError as exc:
            raise ScaffoldError(f"cannot add {name!r}: {exc}") from None
        if name in stack.functions:
            raise ScaffoldError(f"function {name!r} is already listed in {stack_file}")
        old_text = stack_file.read_text(encoding="utf-8")

    base.mkdir(parents=True, exist_ok=True)
    target.mkdir()
    try:
        files = _render(language, name, target)
        stack_file.write_text(_stack_text(old_text, name, language), encoding="utf-8")
        stack = load_stack(stack_file)
        if name not in stack.functions:
            raise ScaffoldError(f"could not add {name!r} to {stack_file}")
    except BaseException as exc:
        shutil.rmtree(target, ignore_errors=True)
        if old_text is None:
            stack_file.unlink(missing_ok=True)
        else:
            stack_file.write_text(old_text, encoding="utf-8")
        if isinstance(exc, StackError):
            raise ScaffoldError(f"could not add {name!r} to {stack_file}: {exc}") from None
        raise
    return Scaffolded(target, files, stack_file, stack_created=old_text is None)


def _render(language: Language, name: str, target: Path) -> list[Path]:
    written = []
    folder = resources.files(__name__).joinpath(language.template)
    for item in sorted(folder.iterdir(), key=lambda t: t.name):
        if not item.name.endswith(".tmpl"):
            continue
        out = target / item.name.removesuffix(".tmpl")
        out.write_text(Template(item.read_text(encoding="utf-8")).substitute(name=name))
        written.append(out)
    return written


def _entry(name: str, language: Language) -> list[str]:
    return [
        f"{name}:",
        f"  runtime: {language.runtime}",
        f"  handler: {language.handler}",
        f"  path: ./{name}",
        "  # env: {GREETING: hello}",
        '  # labels: {com.openfaas.scale.min: "0", com.openfaas.scale.max: "5"}',
        "  # limits: {memory: 128Mi, cpu: 500m}",
        "  # timeout: 30s",
        "  # concurrency: 1",
    ]


_NEW_STACK = """\
# faasbox stack file: `faasbox deploy` deploys the functions listed here.
# Reference: docs/cli.md
version: 1
# provider:
#   gateway: http://127.0.0.1:8080   # --gateway and FAASBOX_GATEWAY take precedence
functions:
"""


def _stack_text(old: str | None, name: str, language: Language) -> str:
    entry = _entry(name, language)
    if old is None:
        return _NEW_STACK + "".join(f"  {line}\n" for line in entry)
    inserted = _insert_entry(old, entry)
    if inserted is not None:
        return inserted
    # The functions block is not a plain block mapping (e.g. `functions: {}`): rewrite the
    # document. Comments are lost, which is why this is only the fallback.
    data = yaml.safe_load(old) or {}
    functions = data.get("functions") or {}
    functions[name] = {
        "runtime": language.runtime,
        "handler": language.handler,
        "path": f"./{name}",
    }
    data["functions"] = functions
    return str(yaml.safe_dump(data, sort_keys=False))


def _insert_entry(text: str, entry: list[str]) -> str | None:
    """Add ``entry`` at the end of the top-level ``functions:`` block, keeping comments."""
    lines = text.splitlines()
    start = next((i for i, ln in enumerate(lines) if re.match(r"^functions:\s*(#.*)?$", ln)), None)
    if start is None:
        return None
    end = len(lines)
    for j in range(start + 1, len(lines)):
        ln = lines[j]
        if ln and not ln[0].isspace() and not ln.startswith("#"):
            end = j
            break
    indent = "  "
    for ln in lines[start + 1 : end]:
        if ln.strip() and not ln.lstrip().startswith("#"):
            indent = ln[: len(ln) - len(ln.lstrip())]
            break
    # Blank lines and unindented comments at the end of the block belong to what follows.
    at = end
    while at > start + 1 and (not lines[at - 1].strip() or lines[at - 1].startswith("#")):
        at -= 1
    # Entry lines are indented by two spaces per level; use the file's step instead.
    step = len(indent)
    added = [
        indent + " " * ((len(line) - len(line.lstrip())) // 2 * step) + line.lstrip()
        for line in entry
    ]
    new = lines[:at] + added + lines[at:]
    return "\n".join(new) + "\n"
