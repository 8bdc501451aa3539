"""The layers of design.md, held by reading every module's imports (and its print calls)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.import_watch import first_importers, imported_by_opapprove

SRC = Path(__file__).resolve().parents[1] / "src" / "opapprove"

# package -> the opapprove packages it may import (besides itself). Every layer may import
# ``errors`` (the shared error base and the one exit-code table) and ``opapprove`` itself
# (the root ``__init__``: the version, nothing else). docs/architecture.md draws this.
ALLOWED = {
    "opapprove": set(),
    "errors": set(),
    "paths": set(),
    "openpayments": {"errors"},
    "settings": {"paths", "errors"},
    "servers.sandbox": {"openpayments", "errors"},
    "approvals": {"openpayments", "settings", "paths", "errors"},
    "servers": {"approvals", "openpayments", "servers.sandbox", "settings", "errors"},
    "diagnostics": {"approvals", "openpayments", "settings", "paths", "servers", "errors"},
    # The sandbox for other people's tests: built on servers, never on the CLI.
    "testing": {"openpayments", "servers", "servers.sandbox", "settings"},
    # `opapprove demo`'s engine: the whole library, the CLI only shows what it returns.
    "demo": {"approvals", "openpayments", "servers", "servers.sandbox", "settings", "paths"},
}
# What is secret and how it is masked: one module, which imports nothing of opapprove (a
# test below holds that), so that paths and settings can mask a store URL's password too.
REDACTION = "opapprove.openpayments.redaction"
for _uses in ALLOWED.values():
    _uses |= {"opapprove", "errors", "redaction"}
# The top of the stack: it may import anything, and it alone prints.
TOP = {"cli", "__main__"}


def _package_of(module: Path) -> str:
    rel = module.relative_to(SRC).with_suffix("")
    parts = rel.parts
    if parts[:2] == ("servers", "sandbox"):
        return "servers.sandbox"
    if parts == ("__init__",):
        return "opapprove"
    return parts[0]


def _package_named(dotted: str) -> str:
    rest = dotted.split(".")[1:]
    if rest[:2] == ["servers", "sandbox"]:
        return "servers.sandbox"
    return rest[0] if rest else "opapprove"


def _opapprove_imports(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module == "opapprove" and not node.level:
            # `from opapprove import settings` imports a module; `__version__` the root.
            names = [f"opapprove.{a.name}" for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module]
        else:
            continue
        for name in names:
            if name == REDACTION:
                found.add("redaction")  # the leaf every layer may use (design.md)
            elif name == "opapprove" or name.startswith("opapprove."):
                package = _package_named(name)
                found.add(package if package in ALLOWED or package in TOP else "opapprove")
    return found


MODULES = sorted(p for p in SRC.rglob("*.py"))


@pytest.mark.parametrize("module", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_module_keeps_to_its_layer(module: Path) -> None:
    package = _package_of(module)
    assert package in ALLOWED or package in TOP, (
        f"{module.relative_to(SRC)}: package {package!r} has no layer: add it to ALLOWED"
        " here and to docs/architecture.md"
    )
    tree = ast.parse(module.read_text("utf-8"))
    relative = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level]
    assert not relative, f"{module.relative_to(SRC)}: relative imports (lines {relative})"
    if package in TOP:
        return
    used = _opapprove_imports(tree) - {package}
    if package == "servers.sandbox":
        used.discard("servers")  # servers/serving.py's CLOSE_EXTENSION, by name only
    forbidden = used - ALLOWED[package]
    assert not forbidden, f"{module.relative_to(SRC)} ({package}) imports {sorted(forbidden)}"
    prints = [
        n.lineno
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print"
    ]
    assert not prints, f"{module.relative_to(SRC)} prints (lines {prints}); only cli/ prints"


@pytest.mark.parametrize(
    ("source", "package", "found"),
    [
        ("from opapprove import settings", "approvals", {"settings"}),
        ("from opapprove import __version__", "openpayments", {"opapprove"}),
        ("import opapprove.servers.sandbox.app", "openpayments", {"servers.sandbox"}),
        ("from opapprove.cli.output import Output", "approvals", {"cli"}),
    ],
)
def test_every_spelling_of_an_import_is_seen(source: str, package: str, found: set[str]) -> None:
    assert _opapprove_imports(ast.parse(source)) == found


def test_the_redaction_leaf_imports_nothing_of_opapprove() -> None:
    tree = ast.parse((SRC / "openpayments" / "redaction.py").read_text("utf-8"))
    assert _opapprove_imports(tree) == set()


# Spelled in pieces so this file does not match its own search.
SHARED_PATHS = ("/".join(("..", "shared")), "/".join(("", "work", "shared")))


def test_nothing_reads_the_shared_folder() -> None:
    root = SRC.parents[1]
    for folder in ("src", "tests", "bench", "examples"):
        for path in (root / folder).rglob("*.py"):
            if path.resolve() == Path(__file__).resolve():
                continue
            text = path.read_text("utf-8")
            assert not any(bad in text for bad in SHARED_PATHS), path


def test_library_import_pulls_in_no_cli() -> None:
    library = ["opapprove.openpayments", "opapprove.openpayments.client"]
    library += ["opapprove.openpayments.sync_client", "opapprove.openpayments.signatures"]
    bad = imported_by_opapprove(library, ("typer", "rich", "click"))
    assert not bad, bad


def test_the_library_leaves_sys_modules_to_its_host() -> None:
    # httpx imports its CLI (click) only because nothing stubbed it: the library did not.
    found = first_importers(["opapprove.openpayments.client"], ("click",))
    assert found.get("click") in (None, "httpx._main"), found
