"""Which module first imports a package, seen from a fresh interpreter.

"The library pulls in no CLI" is about our imports: httpx's ``__init__`` imports its own
command-line client (rich, click) whenever they are installed, and the library leaves that
to httpx (only the CLI's entry point stubs it out, opapprove.cli.startup).
"""

from __future__ import annotations

import json
import subprocess
import sys

_WATCH = """
import json, sys
watched, found = {watched!r}, {{}}

class Watch:
    def find_spec(self, name, path=None, target=None):
        if name in watched and name not in found:
            frame = sys._getframe(1)
            while frame is not None and frame.f_globals.get("__name__", "").startswith(
                ("importlib", "_frozen_importlib")
            ):
                frame = frame.f_back
            found[name] = frame.f_globals.get("__name__") if frame is not None else None
        return None

sys.meta_path.insert(0, Watch())
{imports}
print(json.dumps(found))
"""


def first_importers(modules: list[str], watched: tuple[str, ...]) -> dict[str, str | None]:
    """``{package: the module that imported it first}`` for ``import <modules>``."""
    code = _WATCH.format(watched=watched, imports="\n".join(f"import {m}" for m in modules))
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    found: dict[str, str | None] = json.loads(out.stdout)
    return found


def imported_by_opapprove(modules: list[str], watched: tuple[str, ...]) -> dict[str, str]:
    """The watched packages that an opapprove module imports (directly) on the way."""
    found = first_importers(modules, watched)
    return {name: who for name, who in found.items() if who and who.startswith("opapprove")}
