"""The documentation site: the generated CLI reference, the API pages and the docstrings they show.

`make docs` (in `.ci/run`) builds the whole site with `mkdocs build --strict`; these tests cover
what a build alone would not catch: a subcommand or option missing from the CLI reference, a
public name missing from the API pages, a public name or method without a docstring, and the
client page's example going stale.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import io
import re
from contextlib import redirect_stdout
from pathlib import Path
from types import ModuleType
from typing import Any

import griffe
import pytest

from teacher_store.cli import build_parser
from tests.store_fixtures import build_store, make_attrs

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PACKAGES = ("teacher_store", "student")


def _hook(name: str = "cli_reference") -> ModuleType:
    """docs/_hooks/NAME.py, loaded by path as mkdocs loads it."""
    spec = importlib.util.spec_from_file_location(name, DOCS / "_hooks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def _section(markdown: str, name: str) -> str:
    """The text of the section headed `distill NAME`, up to the next section."""
    m = re.search(rf"^## `distill {re.escape(name)}`\n(.*?)(?=^## |\Z)", markdown, re.S | re.M)
    assert m, f"no section for distill {name}"
    return m.group(1)


def test_cli_reference_has_every_subcommand_and_option_of_the_real_parser():
    parser = build_parser()
    page = _hook().render_cli_reference(parser)
    subs = _subparsers(parser)
    assert len(subs) >= 9  # demo-data ... scale: the parser really was walked
    assert re.findall(r"^## `distill ([\w-]+)`$", page, re.M) == list(subs)
    for name, sub in subs.items():
        section = _section(page, name)
        usage = sub.format_usage().removeprefix("usage: ").strip()
        assert f"```text\n{usage}\n```" in section, name
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
                continue
            if isinstance(action, argparse._SubParsersAction):  # a group: a section per action
                for sub_name, nested in action.choices.items():
                    assert f"### `distill {name} {sub_name}`" in section, (name, sub_name)
                    for a in nested._actions:
                        if isinstance(a, argparse._HelpAction):
                            continue
                        option = a.option_strings[0] if a.option_strings else a.metavar or a.dest
                        assert f"`{option}" in section, (name, sub_name, option)
                continue
            for option in action.option_strings or [action.metavar or action.dest]:
                assert f"`{option}" in section or f", {option}" in section, (name, option)
        assert f"[`distill {name}`](#distill-{name})" in page  # the summary table links it


def test_cli_reference_replaces_the_marker_on_the_cli_page_only():
    hook = _hook()
    text = (DOCS / "cli.md").read_text()
    assert text.count(hook.MARKER) == 1
    assert "## `distill" not in text  # nothing written by hand
    out = hook.on_page_markdown(text, page=None, config=None, files=None)
    assert hook.MARKER not in out and "## `distill generate`" in out
    assert hook.on_page_markdown("# other page\n", None, None, None) == "# other page\n"


def test_cli_reference_fills_defaults_and_keeps_table_cells_intact():
    parser = argparse.ArgumentParser(prog="distill")
    sub = parser.add_subparsers(dest="command").add_parser("toy", help="a toy command")
    sub.add_argument("path", help="where <it> goes")
    sub.add_argument("--mode", choices=["a", "b"], default="a", help="one of %(choices)s | *x*")
    sub.add_argument("--size", type=int, nargs=2, default=[3, 4], help="(default %(default)s)")
    sub.add_argument("--quiet", action="store_true", help="say less")
    sub.add_argument("--hidden", help=argparse.SUPPRESS)
    page = _hook().render_cli_reference(parser)
    assert "| `path` |  | where &lt;it&gt; goes |" in page
    assert "| `--mode {a,b}` | `a` | one of a, b \\| \\*x\\* |" in page
    assert "| `--size SIZE SIZE` | `3 4` | (default [3, 4]) |" in page
    assert "| `--quiet` |  | say less |" in page
    assert "--hidden" not in page.split("```")[-1]  # only in the usage line, if at all
    assert "A toy command." in page


def _api_targets() -> dict[str, Any]:
    """Every `::: module.name` of the API pages, resolved to the object it documents."""
    targets: dict[str, Any] = {}
    for page in sorted((DOCS / "api").glob("*.md")):
        for path in re.findall(r"^::: ([\w.]+)$", page.read_text(), re.M):
            module, _, name = path.rpartition(".")
            try:  # a whole module (rendered for its docstring) or a name inside one
                targets[path] = importlib.import_module(path)
            except ModuleNotFoundError:
                targets[path] = getattr(importlib.import_module(module), name)
    return targets


@pytest.mark.parametrize("package", PACKAGES)
def test_api_pages_document_every_public_name(package):
    pkg = importlib.import_module(package)
    documented = _api_targets().values()
    missing = [n for n in pkg.__all__ if not any(obj is getattr(pkg, n) for obj in documented)]
    assert not missing, f"{package}.__all__ names without a ::: block in docs/api/: {missing}"


def _own_doc(obj: Any) -> str:
    """The docstring written for ``obj`` itself: not inherited, not dataclass's generated one."""
    doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__
    if inspect.isclass(obj) and doc and doc.startswith(f"{obj.__name__}("):
        return ""  # @dataclass fills in the signature when the class has no docstring
    return (doc or "").strip()


def _public_members(cls: type) -> list[tuple[str, Any]]:
    """Methods and properties written in the class body (what the API pages list under it)."""
    out = []
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        func = value.fget if isinstance(value, property) else getattr(value, "__func__", value)
        if inspect.isfunction(func):
            out.append((name, func))
    return out


def _attribute_doc(package: str, name: str) -> str:
    """A constant's docstring (the string after its assignment), as mkdocstrings reads it."""
    value = getattr(importlib.import_module(package), name)
    for path, obj in _api_targets().items():
        if obj is value and path.endswith(f".{name}"):
            module = path.rpartition(".")[0]
            loaded = griffe.load(module, search_paths=[str(ROOT)], resolve_aliases=False)
            doc = loaded.members[name].docstring
            return doc.value.strip() if doc else ""
    return ""


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_and_its_methods_have_a_docstring(package):
    pkg = importlib.import_module(package)
    missing = []
    for name in pkg.__all__:
        obj = getattr(pkg, name)  # resolves the lazy export
        if inspect.isclass(obj) or inspect.isfunction(obj):
            if not _own_doc(obj):
                missing.append(name)
        elif not _attribute_doc(package, name):
            missing.append(f"{name} (a constant: a docstring line after its assignment)")
        if inspect.isclass(obj):
            missing += [f"{name}.{m}" for m, f in _public_members(obj) if not _own_doc(f)]
    assert not missing, f"{package}: public names without a docstring: {missing}"


def test_the_docstring_check_catches_what_it_should():
    class Bare:
        def method(self) -> None:
            pass

    from dataclasses import dataclass

    @dataclass
    class Data:
        x: int

    assert _own_doc(Bare) == "" and _own_doc(Data) == ""
    assert [n for n, f in _public_members(Bare) if not _own_doc(f)] == ["method"]
    assert _own_doc(_own_doc).startswith("The docstring")  # a documented function passes


def test_sphinx_roles_in_docstrings_become_inline_code():
    plain = _hook("sphinx_roles").plain_roles
    text = "see :class:`~teacher_store.store.arrays.LocalStore`, :func:`open_store` and ``x``"
    assert plain(text) == "see `LocalStore`, `open_store` and ``x``"
    assert plain(":meth:`StoreLoader.set_epoch`") == "`StoreLoader.set_epoch`"


def test_client_page_example_runs_against_a_store_folder(tmp_path):
    text = (DOCS / "api" / "client.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", text, re.S)
    store = build_store(tmp_path / "s", make_attrs(num_samples=16, topk=5, chunk=8, shard=8))
    code, n = re.subn(r'open_store\("[^"]+"\)', f"open_store({str(store)!r})", code)
    assert n == 1
    out = io.StringIO()
    with redirect_stdout(out):
        exec(compile(code, "docs/api/client.md", "exec"), {})
    assert out.getvalue().split() == ["5", "(4,", "5)"]
