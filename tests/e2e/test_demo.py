"""``opapprove demo`` as `make demo` runs it: a fresh machine, no config, no store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.cli.conftest import Cli


def test_demo_json_on_a_fresh_machine(cli: Cli, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "opapprove", "demo", "--json"],
        capture_output=True,
        text=True,
        env=cli.subprocess_env(),
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads(done.stdout)
    assert doc["ok"] is True and doc["state"] == "completed"
    assert [s["step"] for s in doc["steps"]] == list(range(1, 9))
    # Step 8 says it includes the sandbox's continue.wait of 1 s, so its time must: the
    # listener's page answers at once, the payment follows in the background. The client
    # counts the wait from the grant (step 6), so steps 7 and 8 hold it between them.
    seven, eight = doc["steps"][6], doc["steps"][7]
    assert "continue.wait of 1 s" in eight["detail"], eight
    assert seven["ms"] + eight["ms"] >= 900, (seven, eight)
    assert doc["balancesBefore"]["buyer"] == "1000.00 USD"
    assert doc["balancesAfter"] == {"buyer": "987.66 USD", "seller": "12.34 USD"}
    assert doc["approvalUrl"].startswith("http://127.0.0.1:")
    assert doc["store"] is None
    # It used a store of its own: nothing was written where the user's would be.
    assert not (tmp_path / "xdg-data").exists() and not cli.store.exists()
