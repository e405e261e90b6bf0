"""The package tree's import rules, checked on the source (no imports executed).

- No module imports another module's ``_private`` name (``from a.b import _x``, or ``b._x`` on
  an imported module).
- No import cycles between modules, counting imports inside functions too: a lazy import that
  closes a cycle is still a cycle in the design (imports under ``if TYPE_CHECKING:`` never run
  and do not count).
- Layering (imports point downwards): ``models`` ← ``teacher_store`` ← ``api`` / ``student``;
  ``api`` and ``student`` never import each other.
- Storage: only the storage room (``teacher_store.storage``) imports the storage libraries
  (fsspec, s3fs, botocore, aiohttp...), and it imports nothing of ours above it (only the typed
  errors and the address syntax). Test support (``teacher_store.testing``) may use them too.
- Reading: the reading side (``teacher_store.reader``: address, backends, client, retry) sits
  on ``storage`` and ``store`` and imports nothing above them; below it, only its address
  syntax (``teacher_store.reader.address``) is imported, by the storage and store rooms.
- Test support: no module imports ``teacher_store.testing`` but itself; it loads moto and
  uvicorn only inside functions (importing it starts nothing), and nothing else loads moto.
- One room per fact: the value-encoding names appear (as code, not prose) only in
  ``teacher_store.store.value_encodings``; the store's array names are defined once
  (``teacher_store.store.layout.ARRAYS``).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "teacher_store", "api", "student")
# What each package may import from the others.
ALLOWED = {
    "models": set(),
    "teacher_store": {"models"},
    "api": {"teacher_store", "models"},
    "student": {"teacher_store", "models"},
}


@dataclass(frozen=True)
class _Import:
    src: str  # importing module
    target: str  # imported module (resolved to a module of ours)
    name: str | None  # imported name, for `from target import name`
    line: int
    typing_only: bool = False  # under `if TYPE_CHECKING:` (never runs)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            found[_module_name(path)] = path
    return found


def _resolve(mod: str, level: int, module: str | None, is_pkg: bool) -> str:
    if level == 0:
        return module or ""
    base = mod.split(".")
    base = base if is_pkg else base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, module] if module else base)


def _typing_only(tree: ast.AST) -> set[int]:
    """ids of the nodes under ``if TYPE_CHECKING:``."""
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for stmt in node.body:
                ids.update(id(n) for n in ast.walk(stmt))
    return ids


def _imports(mods: dict[str, Path]) -> list[_Import]:
    out: list[_Import] = []
    for mod, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        is_pkg = path.name == "__init__.py"
        typing_only = _typing_only(tree)
        for node in ast.walk(tree):
            t = id(node) in typing_only
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] in PACKAGES:
                        out.append(_Import(mod, a.name, None, node.lineno, t))
            elif isinstance(node, ast.ImportFrom):
                target = _resolve(mod, node.level, node.module, is_pkg)
                if target.split(".")[0] not in PACKAGES:
                    continue
                for a in node.names:
                    sub = f"{target}.{a.name}"
                    if sub in mods:  # `from pkg import submodule`
                        out.append(_Import(mod, sub, None, node.lineno, t))
                    else:
                        out.append(_Import(mod, target, a.name, node.lineno, t))
    return out


def _private_attribute_uses(mods: dict[str, Path]) -> list[str]:
    """``alias._name`` where ``alias`` is a module of ours imported as a whole."""
    bad = []
    for mod, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        aliases: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] in PACKAGES:
                        aliases.add(a.asname or a.name.split(".")[0])
            elif isinstance(node, ast.ImportFrom):
                target = _resolve(mod, node.level, node.module, path.name == "__init__.py")
                for a in node.names:
                    if f"{target}.{a.name}" in mods:
                        aliases.add(a.asname or a.name)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                bad.append(f"{mod}:{node.lineno} uses {node.value.id}.{node.attr}")
    return bad


def _module_of(target: str, mods: dict[str, Path]) -> str | None:
    while target and target not in mods:
        target = target.rpartition(".")[0]
    return target or None


@pytest.fixture(scope="module")
def tree() -> tuple[dict[str, Path], list[_Import]]:
    mods = _modules()
    return mods, _imports(mods)


def test_the_walk_sees_the_tree(tree) -> None:
    mods, imports = tree
    assert {"teacher_store", "api", "student", "models"} <= set(mods)
    assert len(mods) > 40 and len(imports) > 100  # the walk really parsed the packages


def test_no_private_names_cross_modules(tree) -> None:
    mods, imports = tree
    bad = [
        f"{i.src}:{i.line} imports {i.target}.{i.name}"
        for i in imports
        if i.name
        and i.name.startswith("_")
        and not i.name.startswith("__")
        and _module_of(i.target, mods) != i.src
    ]
    bad += _private_attribute_uses(mods)
    assert not bad, "private names used across modules:\n" + "\n".join(bad)


def _edges(mods: dict[str, Path], imports: list[_Import]) -> dict[str, set[str]]:
    """Module → modules it imports. Package ``__init__`` files re-export lazily (PEP 562), so
    importing a name from a package is an edge to the module that defines it, found by the
    package's ``_EXPORTS`` table where it has one."""
    exports: dict[str, dict[str, str]] = {}
    for mod, path in mods.items():
        if path.name == "__init__.py":
            exports[mod] = _exports_table(path)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for i in imports:
        target = _module_of(i.target, mods)
        if target is None or i.typing_only:
            continue
        if i.name and target in exports and i.name in exports[target]:
            target = exports[target][i.name]
        if target != i.src and mods[target].name != "__init__.py":
            graph[i.src].add(target)
    return graph


def _exports_table(path: Path) -> dict[str, str]:
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, (ast.Assign, ast.AnnAssign))
            and isinstance(node.value, ast.Dict)
            and any(
                isinstance(t, ast.Name) and t.id == "_EXPORTS"
                for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
            )
        ):
            return {
                ast.literal_eval(k): ast.literal_eval(v)
                for k, v in zip(node.value.keys, node.value.values, strict=True)
            }
    return {}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return [*stack[stack.index(n) :], n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_import_cycles(tree) -> None:
    mods, imports = tree
    cycle = _cycle(_edges(mods, imports))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a"}}) is None


@dataclass(frozen=True)
class _External:
    src: str  # importing module
    top: str  # top-level name of the imported distribution module
    line: int
    lazy: bool  # inside a function (runs only when it is called)


def _externals(mods: dict[str, Path]) -> list[_External]:
    """Every import of a module outside our packages."""
    out = []
    for mod, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        in_function = {
            id(n)
            for f in ast.walk(tree)
            if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
            for n in ast.walk(f)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in PACKAGES:
                    out.append(_External(mod, top, node.lineno, id(node) in in_function))
    return out


STORAGE = "teacher_store.storage"
TESTING = "teacher_store.testing"
STORAGE_LIBRARIES = {"fsspec", "s3fs", "botocore", "aiobotocore", "boto3", "aiohttp", "gcsfs"}
# What the storage room may import of ours besides itself: it sits below everything else.
ADDRESS = "teacher_store.reader.address"
STORAGE_NEEDS = {"teacher_store.errors", ADDRESS}
READER = "teacher_store.reader"
# What the reading side may import of ours besides itself (views.codec: the codec version a
# service's store must match).
READER_NEEDS = ("teacher_store.errors", "teacher_store.storage", "teacher_store.store")
READER_NEEDS_MODULES = {"teacher_store.views.codec"}
# The rooms below the reading side.
BELOW_READER = ("teacher_store.storage", "teacher_store.store", "teacher_store.views")


def _inside(mod: str, room: str) -> bool:
    return mod == room or mod.startswith(room + ".")


def test_only_the_storage_room_imports_storage_libraries() -> None:
    mods = _modules()
    bad = [
        f"{e.src}:{e.line} imports {e.top}"
        for e in _externals(mods)
        if e.top in STORAGE_LIBRARIES and not (_inside(e.src, STORAGE) or _inside(e.src, TESTING))
    ]
    assert not bad, "storage libraries outside teacher_store.storage:\n" + "\n".join(bad)


def test_the_storage_room_imports_nothing_above_it(tree) -> None:
    mods, imports = tree
    bad = [
        f"{i.src}:{i.line} imports {i.target}"
        for i in imports
        if _inside(i.src, STORAGE)
        and not _inside(_module_of(i.target, mods) or "", STORAGE)
        and _module_of(i.target, mods) not in STORAGE_NEEDS
    ]
    assert not bad, "the storage room imports upwards:\n" + "\n".join(bad)
    assert any(_inside(i.src, STORAGE) for i in imports)  # the room exists and was walked


def test_the_reader_room_imports_only_storage_and_store(tree) -> None:
    mods, imports = tree
    bad = []
    for i in imports:
        target = _module_of(i.target, mods) or ""
        if not _inside(i.src, READER) or _inside(target, READER):
            continue
        if not any(_inside(target, r) for r in READER_NEEDS) and target not in READER_NEEDS_MODULES:
            bad.append(f"{i.src}:{i.line} imports {target}")
    assert not bad, "the reader room imports upwards:\n" + "\n".join(bad)
    walked = {i.src for i in imports if _inside(i.src, READER)}
    assert {f"{READER}.{m}" for m in ("address", "backends", "client")} <= walked


def test_below_the_reader_only_the_address_syntax_is_imported(tree) -> None:
    mods, imports = tree
    bad = [
        f"{i.src}:{i.line} imports {i.target}"
        for i in imports
        if any(_inside(i.src, r) for r in BELOW_READER)
        and _inside(i.target, READER)
        and _module_of(i.target, mods) != ADDRESS
    ]
    assert not bad, "a room below the reader imports it:\n" + "\n".join(bad)


def test_test_support_is_imported_by_nobody_and_starts_nothing(tree) -> None:
    mods, imports = tree
    users = [
        f"{i.src}:{i.line}"
        for i in imports
        if _inside(i.target, TESTING) and not _inside(i.src, TESTING)
    ]
    assert not users, "teacher_store.testing imported by the product:\n" + "\n".join(users)
    servers = [e for e in _externals(mods) if e.top in ("moto", "uvicorn")]
    eager = [f"{e.src}:{e.line} {e.top}" for e in servers if _inside(e.src, TESTING) and not e.lazy]
    assert not eager, "teacher_store.testing imports servers at import time:\n" + "\n".join(eager)
    moto = [f"{e.src}:{e.line}" for e in servers if e.top == "moto" and not _inside(e.src, TESTING)]
    assert not moto, "moto imported outside teacher_store.testing:\n" + "\n".join(moto)
    assert {e.top for e in servers if _inside(e.src, TESTING)} == {"moto", "uvicorn"}


def test_the_external_walk_sees_lazy_and_eager_imports() -> None:
    externals = _externals(_modules())
    got = {(e.src, e.top, e.lazy) for e in externals}
    assert ("teacher_store.storage.location", "fsspec", False) in got
    assert ("teacher_store.storage.s3", "botocore", True) in got


def test_layers_point_downwards(tree) -> None:
    _, imports = tree
    bad = [
        f"{i.src}:{i.line} imports {i.target}"
        for i in imports
        if (a := i.src.split(".")[0]) != (b := i.target.split(".")[0]) and b not in ALLOWED[a]
    ]
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def _code_strings(path: Path) -> list[tuple[int, str]]:
    """String constants of a module that are code, not docstrings: (line, value)."""
    tree = ast.parse(path.read_text(), str(path))
    docs: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docs.add(id(body[0].value))
    return [
        (n.lineno, n.value)
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs
    ]


ENCODINGS_ROOM = "teacher_store.store.value_encodings"


def test_only_the_encoding_table_names_encodings(tree) -> None:
    """Adding a value encoding touches one room: no other module branches on a name."""
    mods, _ = tree
    names: set[str] = set()
    for _, value in _code_strings(mods[ENCODINGS_ROOM]):
        names.add(value)
    names = {n for n in names if n.startswith(("logprob-", "prob-"))}
    assert {"logprob-f16", "prob-u8", "prob-u8x3"} <= names  # the scan reads the table
    bad = [
        f"{mod}:{line} names {value!r}"
        for mod, path in mods.items()
        if mod != ENCODINGS_ROOM
        for line, value in _code_strings(path)
        if value in names
    ]
    assert not bad, "value-encoding names outside the table:\n" + "\n".join(bad)


def test_store_arrays_are_named_once(tree) -> None:
    mods, _ = tree
    bad = []
    for mod, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets = node.targets if isinstance(node, ast.Assign) else []
            if any(isinstance(t, ast.Name) and t.id == "ARRAYS" for t in targets):
                bad.append(mod)
    assert bad == ["teacher_store.store.layout"], f"ARRAYS defined in {bad}"


def test_only_the_curricula_table_names_curricula(tree) -> None:
    """Adding a curriculum touches one room: no other student module branches on a name."""
    mods, _ = tree
    room = "student.curricula"
    names = {v for _, v in _code_strings(mods[room]) if v in ("efficientrain",)}
    names |= {v for _, v in _code_strings(mods[room]) if v.startswith("efficientnetv2-")}
    assert {"efficientrain", "efficientnetv2-progressive"} <= names  # the scan reads the table
    bad = [
        f"{mod}:{line} names {value!r}"
        for mod, path in mods.items()
        if mod.startswith("student") and mod != room
        for line, value in _code_strings(path)
        if value in names
    ]
    assert not bad, "curriculum names outside student/curricula.py:\n" + "\n".join(bad)


# Modules the CLI imports to build its parser, and the tables under them: no torch, and the
# tables never import the config that uses them (config -> recipes -> curricula, one way).
TORCH_FREE = (
    "student.cli",
    "student.config",
    "student.recipes",
    "student.curricula",
    "student.loader_config",
)
NOT_IMPORTING = {
    "student.recipes": {"student.config"},
    "student.curricula": {"student.config", "student.recipes", "student.curriculum"},
}


def test_student_tables_stay_below_the_config(tree) -> None:
    """Counting ``TYPE_CHECKING`` imports too: a type-only import back is still a cycle."""
    _, imports = tree
    bad = [
        f"{i.src}:{i.line} imports {i.target}"
        for i in imports
        if any(i.target == t or i.target.startswith(t + ".") for t in NOT_IMPORTING.get(i.src, ()))
    ]
    assert not bad, "\n".join(bad)


def test_student_parser_modules_import_no_torch(tree) -> None:
    mods, _ = tree
    bad = []
    for mod in TORCH_FREE:
        for node in ast.walk(ast.parse(mods[mod].read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            bad += [f"{mod}:{node.lineno} imports {n}" for n in names if n.split(".")[0] == "torch"]
    assert not bad, "\n".join(bad)


def test_the_service_takes_no_pixels_from_a_command_module(tree) -> None:
    """The dashboard renders through teacher_store.views, not `distill show`'s module."""
    _, imports = tree
    bad = [
        f"{i.src}:{i.line}"
        for i in imports
        if i.src.startswith("api")
        and i.target in ("teacher_store.show", "teacher_store.commands", "teacher_store.cli")
    ]
    assert not bad, "api imports a command module: " + ", ".join(bad)
