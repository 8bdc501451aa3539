"""The layers of design.md, held by reading every module's imports (and its print calls)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "opapprove"

# package -> the opapprove packages it may import (besides itself); every layer may import
# ``errors``, the leaf that holds the shared error base and the one exit-code table.
ALLOWED = {
    "errors": set(),
    "openpayments": {"errors"},
    "servers.sandbox": {"openpayments", "errors"},
    "approvals": {"openpayments", "settings", "paths", "errors"},
    "servers": {"approvals", "openpayments", "servers.sandbox", "settings", "errors"},
    "diagnostics": {"approvals", "openpayments", "settings", "paths", "servers", "errors"},
    "settings": {"paths", "errors"},
    "paths": set(),
    # The sandbox for other people's tests: built on servers, never on the CLI.
    "testing": {"openpayments", "servers", "servers.sandbox", "settings"},
}


# What is secret and how it is masked: one module, which imports nothing of opapprove (a
# test below holds that), so that paths and settings can mask a store URL's password too.
REDACTION = "opapprove.openpayments.redaction"


def _package_of(module: Path) -> str:
    rel = module.relative_to(SRC).with_suffix("")
    parts = rel.parts
    if parts[:2] == ("servers", "sandbox"):
        return "servers.sandbox"
    return parts[0]


def _opapprove_imports(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            if name == REDACTION:
                found.add("redaction")  # the leaf every layer may use (design.md)
            elif name.startswith("opapprove."):
                rest = name.split(".")[1:]
                if rest[:2] == ["servers", "sandbox"]:
                    found.add("servers.sandbox")
                elif rest:
                    found.add(rest[0])
    return found


MODULES = sorted(p for p in SRC.rglob("*.py"))


@pytest.mark.parametrize("module", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_module_keeps_to_its_layer(module: Path) -> None:
    package = _package_of(module)
    if package not in ALLOWED:
        return  # cli/, demo.py, __main__: the top of the stack may import anything
    tree = ast.parse(module.read_text("utf-8"))
    used = _opapprove_imports(tree) - {package}
    if package == "servers.sandbox":
        used.discard("servers")  # servers/serving.py's CLOSE_EXTENSION, by name only
    forbidden = used - ALLOWED[package] - {"redaction"}
    assert not forbidden, f"{module.relative_to(SRC)} ({package}) imports {sorted(forbidden)}"
    if package != "cli":
        prints = [
            n.lineno
            for n in ast.walk(tree)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print"
        ]
        assert not prints, f"{module.relative_to(SRC)} prints (lines {prints}); only cli/ prints"


def test_the_redaction_leaf_imports_nothing_of_opapprove() -> None:
    tree = ast.parse((SRC / "openpayments" / "redaction.py").read_text("utf-8"))
    assert _opapprove_imports(tree) == set()


# Spelled in pieces so this file does not match its own search.
SHARED_PATHS = ("/".join(("..", "shared")), "/".join(("", "work", "shared")))


def test_nothing_reads_the_shared_folder() -> None:
    root = SRC.parents[1]
    for folder in ("src", "tests", "bench"):
        for path in (root / folder).rglob("*.py"):
            if path.resolve() == Path(__file__).resolve():
                continue
            text = path.read_text("utf-8")
            assert not any(bad in text for bad in SHARED_PATHS), path


def test_library_import_pulls_in_no_cli() -> None:
    code = (
        "import opapprove.openpayments.client, opapprove.openpayments.signatures, sys;"
        "bad = [m for m in ('typer', 'rich', 'click') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
