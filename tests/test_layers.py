"""The layers of `app/` and the imports allowed between them (docs/architecture.md).

Imports run downward only: a module may import its own layer and the layers
below it. The pure core imports neither Flask nor SQLAlchemy nor a database
driver, nor anything of the app above `app.config`. The web edge reaches the
outbox through its callbacks, never through the worker. Function-level and
TYPE_CHECKING imports count too: a layer that needs something from above is
drawn wrong.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parent.parent / "app"

# Lowest first. A module belongs to the first prefix that matches its dotted name.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("app.config", "app.logs")),
    ("core", ("app.core",)),
    ("store", ("app.store",)),
    ("ledger", ("app.ledger",)),
    ("access", ("app.access",)),
    ("consent", ("app.consent",)),
    ("privacy", ("app.privacy",)),
    ("outbox", ("app.outbox",)),
    ("sending", ("app.sending",)),
    ("reports", ("app.reports",)),
    ("edges", ("app.web", "app.staff", "app.context")),
    ("top", ("app.cli", "app")),
]
# What the pure core may not import, besides the app above it.
CORE_FORBIDDEN = (
    "flask",
    "flask_wtf",
    "flask_limiter",
    "werkzeug",
    "jinja2",
    "sqlalchemy",
    "alembic",
    "psycopg",
    "sqlite3",
    "twilio",
    "requests",
)
# Specific edges that are never allowed, whatever the layers say.
FORBIDDEN_EDGES = [
    ("app.web", "app.outbox.worker", "the web tier imports the outbox's callbacks, not the worker"),
    ("app.staff", "app.outbox.worker", "the console never imports the worker"),
]


def layer_of(module: str) -> int:
    for index, (_name, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                return index
    raise AssertionError(f"{module} is in no layer: add it to LAYERS and docs/architecture.md")


@dataclass(frozen=True)
class Violation:
    module: str
    imported: str
    line: int
    why: str

    def __str__(self) -> str:
        return f"{self.module}:{self.line} imports {self.imported}: {self.why}"


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, module: str, modules: set[str]) -> list[tuple[str, int]]:
    """Every module `path` imports (absolute names; `from app import x` names app.x), by line."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.append((submodule if submodule in modules else base, node.lineno))
    return found


def violations(root: Path) -> list[Violation]:
    """Every import in the package at `root` that breaks the layering."""
    modules = {module_name(root, p): p for p in sorted(root.rglob("*.py")) if p.is_file()}
    core = [name for name, _ in LAYERS].index("core")
    found: dict[str, Violation] = {}
    for module, path in modules.items():
        own = layer_of(module)
        for imported, line in imports_of(path, module, set(modules)):
            top = imported.split(".")[0]
            if own == core and top in CORE_FORBIDDEN:
                v = Violation(module, imported, line, "the core stays pure")
                found[str(v)] = v
            if imported not in modules:
                continue  # not ours (or checked above)
            if layer_of(imported) > own:
                why = f"{LAYERS[own][0]} may not import {LAYERS[layer_of(imported)][0]}"
                v = Violation(module, imported, line, why)
                found[str(v)] = v
            for source, forbidden, why in FORBIDDEN_EDGES:
                if (module == source or module.startswith(source + ".")) and (
                    imported == forbidden or imported.startswith(forbidden + ".")
                ):
                    v = Violation(module, imported, line, why)
                    found[str(v)] = v
    return list(found.values())


def test_every_import_runs_down_the_layers():
    assert [str(v) for v in violations(APP)] == []


def test_no_module_is_longer_than_500_lines():
    long = {
        str(path.relative_to(APP.parent)): n
        for path in APP.rglob("*.py")
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > 500
    }
    assert long == {}


def write_tree(root: Path, files: dict[str, str]) -> Path:
    app = root / "app"
    for name, text in files.items():
        path = app / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    for directory in [app, *[p for p in app.rglob("*") if p.is_dir()]]:
        (directory / "__init__.py").touch()
    return app


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"core/keywords.py": "import flask\n"}, "app.core.keywords:1 imports flask"),
        (
            {"core/flows.py": "def f():\n    from sqlalchemy import select\n"},
            "app.core.flows:2 imports sqlalchemy",
        ),
        (
            {"core/flows.py": "from app.store import db\n", "store/db.py": ""},
            "app.core.flows:1 imports app.store.db: core may not import store",
        ),
        (
            {"store/db.py": "from app.consent.service import x\n", "consent/service.py": ""},
            "app.store.db:1 imports app.consent.service: store may not import consent",
        ),
        (
            {"web/webhooks.py": "from app.outbox import worker\n", "outbox/worker.py": ""},
            "the web tier imports the outbox's callbacks, not the worker",
        ),
    ],
)
def test_the_check_catches_a_broken_layer(tmp_path, files, expected):
    """The check itself fails when a layer is broken (here, in a scratch copy of the tree)."""
    found = [str(v) for v in violations(write_tree(tmp_path, files))]
    assert any(expected in line for line in found), found


def test_the_check_passes_an_allowed_import(tmp_path):
    files = {"consent/service.py": "from app.store.db import Database\n", "store/db.py": ""}
    assert violations(write_tree(tmp_path, files)) == []
