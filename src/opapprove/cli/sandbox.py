"""``opapprove sandbox``: run the embedded sandbox; ``sandbox approve`` clicks Approve.

Placeholder until servers/sandbox lands (engineer B).
"""

from __future__ import annotations

import typer

app = typer.Typer(help="Run the embedded Open Payments sandbox (offline wallets).")
