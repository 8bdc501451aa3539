"""JUnit XML, the report format CI dashboards read (one testsuite of testcases)."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True)
class JUnitCase:
    """One testcase: passed, failed (``failure`` message + ``details``) or ``skipped``."""

    name: str
    classname: str
    seconds: float = 0.0
    failure: str | None = None
    failure_type: str | None = None
    details: str | None = None
    skipped: str | None = None


def junit_xml(
    suite: str,
    cases: Sequence[JUnitCase],
    *,
    timestamp: float | None = None,
    properties: Mapping[str, str] | None = None,
) -> str:
    """The whole document: ``<testsuites>`` holding one ``<testsuite>``."""
    failures = sum(1 for c in cases if c.failure is not None)
    skipped = sum(1 for c in cases if c.failure is None and c.skipped is not None)
    total = sum(c.seconds for c in cases)
    when = datetime.fromtimestamp(time.time() if timestamp is None else timestamp, UTC)
    counts = {
        "tests": str(len(cases)),
        "failures": str(failures),
        "errors": "0",
        "skipped": str(skipped),
        "time": f"{total:.3f}",
    }
    root = ET.Element("testsuites", {"name": suite, **counts})
    node = ET.SubElement(
        root,
        "testsuite",
        {"name": suite, **counts, "timestamp": when.strftime("%Y-%m-%dT%H:%M:%S")},
    )
    if properties:
        props = ET.SubElement(node, "properties")
        for key, value in properties.items():
            ET.SubElement(props, "property", {"name": key, "value": value})
    for case in cases:
        element = ET.SubElement(
            node,
            "testcase",
            {"name": case.name, "classname": case.classname, "time": f"{case.seconds:.3f}"},
        )
        if case.failure is not None:
            failure = ET.SubElement(
                element,
                "failure",
                {"message": case.failure, "type": case.failure_type or "failure"},
            )
            failure.text = case.details or case.failure
        elif case.skipped is not None:
            ET.SubElement(element, "skipped", {"message": case.skipped})
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
