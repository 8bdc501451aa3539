"""Options that several commands take, declared once: same name, metavar, checks and help.

Each is an ``Annotated`` type a command's parameter uses as is (``since: SinceOption = None``),
so a command that reads grants from the store filters them the way every other one does.
``seconds_option`` is for the ``--timeout`` that each command words for itself. An
``*_OPTION`` is an option without its type (``amount: Annotated[str, AMOUNT_OPTION]``), for
one that a command requires and another may leave out.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer


def seconds_option(name: str, text: str) -> Any:
    """A number of seconds, 0 or more (``--timeout S``), with the command's own help text."""
    return typer.Option(name, metavar="S", min=0.0, help=text)


# -- the grants in the store (pending list/replay/cancel, report) ---------------------------
PendingIdsArgument = Annotated[
    list[str] | None, typer.Argument(metavar="ID", help="The grants' ids.", show_default=False)
]
StatesOption = Annotated[
    list[str] | None,
    typer.Option("--state", metavar="STATE", help="Only grants in this state; repeatable."),
]
StuckOption = Annotated[
    bool,
    typer.Option("--stuck", help="Only unfinished grants with no progress for stuck_after s."),
]
SinceOption = Annotated[
    str | None,
    typer.Option("--since", metavar="T", help="Grants created since: an ISO time, or 2h, 30m, 7d."),
]
SellerOption = Annotated[
    str | None, typer.Option("--seller", metavar="ID", help="The seller (default: the config's).")
]

# -- a payment's parties and terms (quote start, smoke) -------------------------------------
BuyerOption = Annotated[
    str, typer.Option("--buyer", metavar="WALLET", help="The buyer's wallet address.")
]
# Options without their type: `quote start` needs --offer and may take --pay instead of
# --amount; smoke needs --amount and makes up an offer id. Each command says which it needs.
OFFER_OPTION = typer.Option("--offer", metavar="ID", help="The offer (job) id.")
AMOUNT_OPTION = typer.Option(
    "--amount", metavar="AMOUNT", help="What the seller receives, in the seller's asset: 100.00"
)

# -- the embedded sandbox's money (sandbox, demo) ------------------------------------------
LatencyOption = Annotated[
    float, seconds_option("--latency", "Seconds the sandbox adds to every request.")
]
RateOption = Annotated[
    list[str] | None,
    typer.Option(
        "--rate",
        metavar="BASE/QUOTE=N",
        help="One BASE buys N QUOTE, e.g. EUR/USD=1.08; repeatable.",
    ),
]
FeeOption = Annotated[
    str | None,
    typer.Option(
        "--fee",
        metavar="P%+FIXED",
        help="The sending wallet's fee: a percent plus a fixed part in the debit asset"
        " (1%, 0.5%+0.10).",
    ),
]
