"""examples/ci/: the shell script runs green here, and the workflow runs that script."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import yaml

from tests.missing_parts import skip_or_fail

ROOT = Path(__file__).resolve().parents[2]
CI = ROOT / "examples" / "ci"
ARTIFACTS = {"smoke.xml", "quote.json", "finish.json", "sandbox.log"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_script_runs_a_full_flow_and_leaves_its_artifacts(tmp_path: Path) -> None:
    missing = [tool for tool in ("bash", "curl", "jq") if shutil.which(tool) is None]
    if missing:
        skip_or_fail(
            f"the CI recipe needs {', '.join(missing)}: apt-get install {' '.join(missing)}",
            tests="the CI recipe's test",
        )
    out = tmp_path / "artifacts"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPAPPROVE_")}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        OUT=str(out),
        SANDBOX_PORT=str(_free_port()),
        TMPDIR=str(tmp_path),
        XDG_CONFIG_HOME=str(tmp_path / "xdg"),
        NO_COLOR="1",
    )
    run = subprocess.run(
        ["bash", str(CI / "opapprove-ci.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "== passed; artifacts in" in run.stdout
    assert {p.name for p in out.iterdir()} == ARTIFACTS
    suite = ET.fromstring((out / "smoke.xml").read_text())  # noqa: S314 (our own file)
    assert suite.get("failures") == "0" and suite.get("errors") == "0"
    assert int(suite.get("tests") or 0) >= 5
    assert json.loads((out / "finish.json").read_text())["state"] == "completed"
    # The key and the store (tokens) are never among the artifacts, and are removed.
    assert not list(tmp_path.glob("opapprove-ci.*"))
    for path in out.iterdir():
        assert "PRIVATE KEY" not in path.read_text(errors="replace")


def test_the_workflow_runs_the_script_and_keeps_artifacts_even_on_failure() -> None:
    flow = yaml.safe_load((CI / "github-workflow.yml").read_text())
    steps = flow["jobs"]["approval-flow"]["steps"]
    run = next(s for s in steps if "opapprove-ci.sh" in s.get("run", ""))
    assert run["run"] == "bash examples/ci/opapprove-ci.sh"
    upload = next(s for s in steps if str(s.get("uses", "")).startswith("actions/upload-artifact"))
    assert upload["if"] == "always()"
    assert upload["with"]["path"].rstrip("/") == run["env"]["OUT"]
