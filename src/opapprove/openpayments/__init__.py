"""The Open Payments protocol as a library: keys, signatures, models, amounts, a client.

Nothing here knows of the CLI or the store, and nothing here prints.
"""

import sys
import types

if "httpx" not in sys.modules:
    # httpx's __init__ imports its command-line client (rich, click, pygments) whenever
    # they are installed, and they are: the CLI depends on them. The library must not pay
    # for the CLI, so give httpx an empty _main; httpx then falls back to a stub main().
    sys.modules.setdefault("httpx._main", types.ModuleType("httpx._main"))
