"""Every fenced ```bash and ```python block in README.md runs, as a newcomer would run it.

Rules (the README's contributors' note says the same):

- Each block runs on its own, in a fresh empty directory with a fresh ``HOME`` and XDG
  dirs, with this checkout's ``.venv/bin`` first on ``PATH`` (what activating the venv
  does). ``bash`` blocks run with ``bash -e -o pipefail``; ``python`` blocks with the venv's
  Python. A block must pass on its own: no state carries over from the block before.
- Offline: a block reaches only what it starts itself (``opapprove sandbox``, ``listen``).
  Port ``4000`` (the README's sandbox) and ``3999`` (the listener's default) are replaced
  by free ports, so parallel test runs on one machine do not collide.
- Background jobs a block starts (``opapprove sandbox ... &``) are ended with the block: it
  runs in its own session and the whole session is signalled once the block exits.
- A block that cannot run here (a real wallet, minutes of work) has the line
  ``<!-- not run: <reason> -->`` directly above its opening fence.
- A transcript is checked too: when the prose between a run block and the ```text block
  after it says what the block "printed", every line of that text must appear in the
  block's output, in order (lines the prose says were left out may be missing). Pending
  ids and loopback ports differ from run to run and are compared as placeholders.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.ports import free_port

README = Path(__file__).resolve().parent.parent / "README.md"
RUN_LANGUAGES = ("bash", "python")
NOT_RUN = re.compile(r"^<!--\s*not run:\s*(?P<reason>\S.*?)\s*-->\s*$")
FENCE = re.compile(r"^(?P<fence>```+|~~~+)\s*(?P<lang>[\w+-]*)")
BLOCK_TIMEOUT = 90.0


@dataclass(frozen=True)
class Block:
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    not_run: str | None  # the reason, when marked


def blocks(text: str) -> list[Block]:
    """The fenced blocks of a Markdown text, with the not-run marker above each, if any."""
    out: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        fence = opening["fence"]
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not lines[j].startswith(fence):
            body.append(lines[j])
            j += 1
        above = lines[i - 1].strip() if i > 0 else ""
        marker = NOT_RUN.match(above)
        out.append(
            Block(
                i + 1, opening["lang"].lower(), "\n".join(body) + "\n", marker and marker["reason"]
            )
        )
        i = j + 1
    return out


def transcripts(text: str) -> dict[int, Block]:
    """Run block's line → the ```text block after it that the prose calls what it printed."""
    lines = text.splitlines()
    found = blocks(text)
    out: dict[int, Block] = {}
    for block, after in itertools.pairwise(found):
        if block.lang not in RUN_LANGUAGES or after.lang != "text":
            continue
        end = block.line + len(block.code.splitlines())  # the closing fence's index
        between = " ".join(lines[end + 1 : after.line - 1])
        if "printed" in between:
            out[block.line] = after
    return out


# What differs between runs: a pending id (a ULID) and a loopback port.
_VOLATILE = (
    (re.compile(r"\b[0-9A-HJKMNP-TV-Z]{26}\b"), "<ID>"),
    (re.compile(r"127\.0\.0\.1:\d+"), "127.0.0.1:<PORT>"),
)


def normalised(line: str) -> str:
    for pattern, placeholder in _VOLATILE:
        line = pattern.sub(placeholder, line)
    return line.rstrip()


def missing_lines(expected: str, *streams: str) -> list[str]:
    """The expected lines not found, in order, in any of ``streams`` ([] when it holds).

    Each stream is read in order on its own: a terminal shows stdout and stderr interleaved,
    which two captured files cannot."""
    seen = [[normalised(line) for line in stream.splitlines()] for stream in streams]
    at = [0] * len(seen)
    missing = []
    for line in (normalised(x) for x in expected.splitlines() if x.strip()):
        for n, lines in enumerate(seen):
            if line in lines[at[n] :]:
                at[n] = lines.index(line, at[n]) + 1
                break
        else:
            missing.append(line)
    return missing


def runnable() -> list[Block]:
    return [b for b in blocks(README.read_text("utf-8")) if b.lang in RUN_LANGUAGES]


def with_ports(code: str, ports: dict[int, int]) -> str:
    for old, new in ports.items():
        code = re.sub(rf"(?<=[:= ]){old}\b", str(new), code)
    return code


def run_block(block: Block, tmp: Path) -> subprocess.CompletedProcess[str]:
    work, home = tmp / "work", tmp / "home"
    work.mkdir()
    home.mkdir()
    sandbox_port, listen_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPAPPROVE_")}
    env.update(
        {
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_DATA_HOME": str(home / ".local" / "share"),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            "NO_COLOR": "1",
            "OPAPPROVE_LISTEN_PORT": str(listen_port),
            "OPAPPROVE_BASE_URL": f"http://127.0.0.1:{listen_port}",
        }
    )
    code = with_ports(block.code, {4000: sandbox_port, 3999: listen_port})
    script = work.parent / f"block.{'sh' if block.lang == 'bash' else 'py'}"
    script.write_text(code, encoding="utf-8")
    argv = (
        ["bash", "-e", "-o", "pipefail", str(script)]
        if block.lang == "bash"
        else [sys.executable, str(script)]
    )
    # Output to files, not pipes: a background job would hold a pipe open past the block.
    out_path, err_path = tmp / "stdout", tmp / "stderr"
    with out_path.open("w") as out, err_path.open("w") as err:
        proc = subprocess.Popen(
            argv, cwd=work, env=env, stdout=out, stderr=err, start_new_session=True
        )
        try:
            returncode = proc.wait(timeout=BLOCK_TIMEOUT)
        except subprocess.TimeoutExpired:
            returncode = -1
        finally:
            _end_session(proc.pid)
    return subprocess.CompletedProcess(
        argv, returncode, out_path.read_text("utf-8"), err_path.read_text("utf-8")
    )


def _end_session(pgid: int) -> None:
    """Stop what the block left running in its session: TERM, then KILL after a grace."""
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 2.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)


BLOCKS = [b for b in runnable() if b.not_run is None]
# Blocks mostly wait (process start-up, the sandbox's continue.wait): run them side by side.
PARALLEL = 4


@pytest.fixture(scope="module")
def results(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[int, subprocess.CompletedProcess[str]]:
    def one(block: Block) -> tuple[int, subprocess.CompletedProcess[str]]:
        return block.line, run_block(block, tmp_path_factory.mktemp(f"readme-{block.line}"))

    tmp_path_factory.getbasetemp()  # made once here: making it is not thread-safe
    with ThreadPoolExecutor(PARALLEL) as pool:
        return dict(pool.map(one, BLOCKS))


@pytest.mark.parametrize("block", BLOCKS, ids=[f"README.md:{b.line}-{b.lang}" for b in BLOCKS])
def test_readme_block_runs(
    block: Block, results: dict[int, subprocess.CompletedProcess[str]]
) -> None:
    result = results[block.line]
    assert result.returncode == 0, (
        f"README.md line {block.line} ({block.lang}) exited {result.returncode}\n"
        f"--- block ---\n{block.code}--- stdout ---\n{result.stdout}--- stderr ---\n{result.stderr}"
    )


TRANSCRIPTS = transcripts(README.read_text("utf-8"))


CHECKED = [b for b in BLOCKS if b.line in TRANSCRIPTS]


@pytest.mark.parametrize("block", CHECKED, ids=[f"README.md:{b.line}-printed" for b in CHECKED])
def test_readme_transcript_is_what_the_block_prints(
    block: Block, results: dict[int, subprocess.CompletedProcess[str]]
) -> None:
    result = results[block.line]
    shown = TRANSCRIPTS[block.line]
    missing = missing_lines(shown.code, result.stdout, result.stderr)
    assert not missing, (
        f"README.md line {shown.line}: the transcript of the block at line {block.line} "
        f"no longer matches what it prints; missing (in order):\n"
        + "\n".join(missing)
        + f"\n--- stdout ---\n{result.stdout}--- stderr ---\n{result.stderr}"
    )


def test_transcript_matching() -> None:
    text = (
        "```bash\necho hi\n```\n\nWhat it printed:\n\n```text\nhi\n```\n"
        "```bash\nx\n```\n```text\ny\n```\n"
    )
    assert {line: b.code for line, b in transcripts(text).items()} == {1: "hi\n"}
    printed = "noise\npending 01M8F39R5TPZZW4T3491XR1GY6 at http://127.0.0.1:4312/x\nend\n"
    assert (
        missing_lines("pending 01KAAAAAAAAAAAAAAAAAAAAAAA at http://127.0.0.1:4000/x\nend", printed)
        == []
    )
    assert missing_lines(
        "end\npending 01KAAAAAAAAAAAAAAAAAAAAAAA at http://127.0.0.1:4000/x", printed
    ) == ["pending <ID> at http://127.0.0.1:<PORT>/x"]


def test_the_readme_has_runnable_blocks_and_marks_say_why() -> None:
    found = runnable()
    assert len([b for b in found if b.not_run is None]) >= 3
    for block in blocks(README.read_text("utf-8")):
        if block.not_run is not None:
            assert block.lang in RUN_LANGUAGES, (
                f"README.md:{block.line}: a not-run mark above a {block.lang or 'plain'} block "
                "(only bash and python blocks run; drop the mark)"
            )


def test_block_parser() -> None:
    text = (
        "intro\n"
        "```bash\necho one\n```\n"
        "<!-- not run: needs a real wallet -->\n"
        "```python\nprint(2)\n```\n"
        "````markdown\n```bash\nnested\n```\n````\n"
        "```text\nout\n```\n"
    )
    found = blocks(text)
    assert [(b.line, b.lang, b.not_run) for b in found] == [
        (2, "bash", None),
        (6, "python", "needs a real wallet"),
        (9, "markdown", None),
        (14, "text", None),
    ]
    assert found[0].code == "echo one\n"
    assert with_ports("--port 4000 http://127.0.0.1:4000/buyer 14000", {4000: 5}) == (
        "--port 5 http://127.0.0.1:5/buyer 14000"
    )
