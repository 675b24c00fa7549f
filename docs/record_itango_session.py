"""Record the transcript of docs/itango-session.md from a real session, so it cannot drift.

    python3 docs/record_itango_session.py           # run the session, rewrite the page's records
    python3 docs/record_itango_session.py --check   # run it, exit 1 with a diff if they differ

It brings up a whole system (``sdpbatch up``) in a temporary data root, drives
``mid_sdp/elt/subarray_1`` with ``tango.DeviceProxy`` exactly as the page's iTango session does
(``examples/sbi-small.json``), runs ``sdpbatch status`` and ``sdpbatch logs --follow`` as the
session's ``!`` lines do, sends the bad configurations the page lists, and ``sdpbatch down``.
What it saw replaces the page's parts between ``<!-- recorded: NAME -->`` and
``<!-- end recorded: NAME -->``, written as iTango shows them (``Out[n]:`` is the value's repr,
a refused command its reason and description), with what changes from run to run made stable:
the data root, process ids and ports.  ``--check`` also sets aside durations and the
digits of measured values (peaks, sizes, core counts), which differ between machines and runs.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "itango-session.md"
SBI_FILE = ROOT / "examples" / "sbi-small.json"
SHOWN_ROOT = "/home/me/sdp-data"
CLIENT_ENV = ("TANGO_HOST", "SDP_CONFIG_HOST", "SDP_CONFIG_PORT", "SDP_CONFIG_BACKEND")
BATCH_TIMEOUT = 600.0  # s for the batch block of sbi-small.json on a busy machine


def sdpbatch(*args: str, env: dict[str, str], timeout: float = 300) -> str:
    """``sdpbatch ARGS`` (this checkout's) in a subprocess; its output (it must succeed)."""
    result = subprocess.run(
        [sys.executable, "-m", "sdpbatch.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise RuntimeError(f"sdpbatch {' '.join(args)}:\n{result.stdout}{result.stderr}")
    return result.stdout


def wait_until(what: str, check: Callable[[], bool], timeout: float) -> None:
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            raise RuntimeError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.25)


class Transcript:
    """iTango's numbered inputs and their outputs."""

    def __init__(self):
        self.lines: list[str] = []
        self.n = 0

    def entry(self, code: str, output: str = "", *, out: bool = False) -> None:
        self.n += 1
        self.lines.append(f"In [{self.n}]: {code}")
        if out:
            self.lines.append(f"Out[{self.n}]: {output}")
        elif output:
            self.lines.extend(output.rstrip("\n").splitlines())
        if output:
            self.lines.append("")

    def call(self, code: str, fn: Callable[[], object], *, shown: bool = False) -> object:
        """Run ``fn`` for input ``code``: its repr when ``shown``, a refusal as iTango prints
        it (the DevFailed's reason and description)."""
        import tango

        try:
            value = fn()
        except tango.DevFailed as err:
            self.entry(code, refusal(err) + "\n(For more detailed information type: tango_error)")
            return err
        self.entry(code, repr(value) if shown else "", out=shown)
        return value


def refusal(err) -> str:
    """``REASON: description`` of a DevFailed."""
    return f"{err.args[0].reason}: {err.args[0].desc}"


def block_status(config, pb_id: str) -> str | None:
    for txn in config.txn():
        state = txn.get_pb_state(pb_id)
    return state and state["status"]


def deployments(config, *, running: bool = False) -> set[str]:
    """The deployments' ids (``running``: those with processes and status RUNNING)."""
    for txn in config.txn():
        ids = set(txn.list_deployments())
        states = {i: txn.get_deployment_state(i) or {} for i in ids}
    if running:
        return {i for i, s in states.items() if s.get("status") == "RUNNING" and s.get("processes")}
    return ids


def seed_session(env: dict[str, str], t: Transcript) -> None:
    """The page's session: assign, status while the batch block waits, release, the batch
    block's log to its end, status, the same SBI again."""
    import tango

    from sdpbatch.control.configdb import Config
    from sdpbatch.vocabulary import pb_of_deployment, workflow_deployment_id

    sbi = json.loads(SBI_FILE.read_text())
    realtime, batch = (pb["id"] for pb in sbi["processing_blocks"])
    config_sbi = SBI_FILE.read_text()
    d = tango.DeviceProxy("mid_sdp/elt/subarray_1")
    t.entry("d = DeviceProxy('mid_sdp/elt/subarray_1')")
    t.call("d.obsState", lambda: d.obsState, shown=True)
    nlines = len(config_sbi.rstrip("\n").splitlines())
    t.entry(f"config_sbi = '''...'''   # the {nlines} lines of examples/sbi-small.json")
    t.call("d.AssignResources(config_sbi)", lambda: d.AssignResources(config_sbi))
    t.call("d.obsState", lambda: d.obsState, shown=True)
    t.call("d.AssignResources(config_sbi)", lambda: d.AssignResources(config_sbi))
    with Config() as config:
        workflows = {workflow_deployment_id(pb) for pb in (realtime, batch)}
        wait_until(
            "the real-time block RUNNING, the batch block WAITING, their workflows running",
            lambda: (
                (block_status(config, realtime), block_status(config, batch))
                == ("RUNNING", "WAITING")
                and deployments(config, running=True) == workflows
            ),
            120,
        )
        t.entry("!sdpbatch status", sdpbatch("status", env=env))
        t.call("d.ReleaseResources()", lambda: d.ReleaseResources())
        t.call("d.obsState", lambda: d.obsState, shown=True)
        log = sdpbatch("logs", "--follow", batch, env=env, timeout=BATCH_TIMEOUT)
        t.entry(f"!sdpbatch logs --follow {batch}", log)
        wait_until(
            "both blocks FINISHED and their processes removed",
            lambda: (
                {block_status(config, pb) for pb in (realtime, batch)} == {"FINISHED"}
                and not [dep for dep in deployments(config) if pb_of_deployment(dep)]
            ),
            120,
        )
        t.entry("!sdpbatch status", sdpbatch("status", env=env))
    t.call("d.AssignResources(config_sbi)", lambda: d.AssignResources(config_sbi))
    t.entry("exit")


def bad_configurations() -> list[tuple[str, str]]:
    """(what is wrong, the configuration) for each refusal the page lists; fresh ids each."""
    sbi = json.loads(SBI_FILE.read_text())

    def variant(k: int, change: Callable[[dict], None]) -> str:
        text = json.dumps(sbi).replace("small-20200523", f"bad{k}-20200523")
        changed = json.loads(text)
        change(changed)
        return json.dumps(changed)

    def batch_parameter(name, value):
        return lambda c: c["processing_blocks"][1]["parameters"].update({name: value})

    def realtime_workflow(c):
        c["processing_blocks"][0]["workflow"]["id"] = "vis_receive"

    return [
        ("not JSON", "{'id': 'sbi-1'}"),
        ("schema violation", variant(1, lambda c: c["processing_blocks"][1].update(priority=1))),
        ("unknown workflow", variant(2, realtime_workflow)),
        ("bad batch parameter", variant(3, batch_parameter("nfreqwin", 0))),
        (
            "a file outside the allowed directories",
            variant(4, batch_parameter("sky_model", "/etc/passwd")),
        ),
        ("more than the machine can ever hold", variant(5, batch_parameter("n_workers", 200))),
    ]


def refusals() -> str:
    """The table of the refusals: each bad configuration sent to the (EMPTY) subarray."""
    import tango

    d = tango.DeviceProxy("mid_sdp/elt/subarray_1")
    rows = ["| what was wrong | Tango error (reason: description) |", "|---|---|"]
    for what, text in bad_configurations():
        try:
            d.AssignResources(text)
        except tango.DevFailed as err:
            rows.append(f"| {what} | `{refusal(err)}` |")
            continue
        raise RuntimeError(f"{what}: AssignResources accepted it")
    return "\n".join(rows)


def record() -> dict[str, str]:
    """Run the whole session on a fresh data root; the page's records, made stable."""
    with tempfile.TemporaryDirectory(prefix="sdpbatch-itango-") as tmp:
        data_dir = Path(tmp) / "sdp-data"
        env = {k: v for k, v in os.environ.items() if k not in CLIENT_ENV}
        env["SDPBATCH_DATA_DIR"] = str(data_dir)
        env.pop("SDPBATCH_ALLOWED_DIRS", None)
        try:
            printed = sdpbatch("up", "--data-dir", str(data_dir), env=env)
            exports = dict(
                line.removeprefix("export ").split("=", 1)
                for line in printed.splitlines()
                if line.startswith("export ")
            )
            env.update(exports)
            os.environ.update(exports)  # this process is iTango's client
            again = sdpbatch("up", "--data-dir", str(data_dir), env=env)
            transcript = Transcript()
            seed_session(env, transcript)
            table = refusals()
        finally:
            subprocess.run(
                [sys.executable, "-m", "sdpbatch.cli", "down", "--data-dir", str(data_dir)],
                env=env,
                capture_output=True,
                timeout=120,
            )
        records = {
            "up": f"$ sdpbatch up --data-dir sdp-data      # again\n{again}",
            "session": "\n".join(transcript.lines),
            "refusals": table,
        }
        pids: dict[str, str] = {}  # numbered across the records, in order
        return {k: stable(v, data_dir, exports, pids) for k, v in records.items()}


PID = re.compile(r"(?<=pid )\d+|(?<=  )\d{2,7}\b(?!\.)|(?<=\d, )\d{2,7}\b")
"""A process id: ``pid N`` of ``up``, or a number in a column of ``sdpbatch status``."""


def stable(text: str, data_dir: Path, exports: dict[str, str], pids: dict[str, str]) -> str:
    """``text`` with the data root shown as /home/me/sdp-data, the host as my-machine, and its
    process ids and ports numbered in order of appearance (the same text from every run of
    the same code); no trailing blanks."""
    text = text.replace(str(data_dir), SHOWN_ROOT)
    text = re.sub(rf"(?<=  ){re.escape(socket.gethostname())}$", "my-machine", text, flags=re.M)
    web = exports.get("SDPBATCH_WEB_URL", "").rstrip("/").rsplit(":", 1)[-1]
    ports = [exports["TANGO_HOST"].rsplit(":", 1)[1], exports["SDP_CONFIG_PORT"], web]
    for k, port in enumerate(p for p in ports if p.isdigit()):
        text = re.sub(rf"\b{port}\b", str(45001 + k), text)

    def number(match: re.Match) -> str:
        return pids.setdefault(match.group(0), str(20001 + len(pids)))

    text = PID.sub(number, text)
    return "\n".join(line.rstrip() for line in text.splitlines())


def comparable(text: str) -> str:
    """What ``--check`` compares: ``text`` without what differs between machines and runs
    (durations, measured numbers, pids, column widths)."""
    text = re.sub(r"\d+(\.\d+)?(e[-+]?\d+)?", "N", text)
    return "\n".join(" ".join(line.split()) for line in text.splitlines())


def regions(page: str) -> dict[str, str]:
    """The recorded parts of ``page`` by name (without their fences)."""
    found = re.findall(r"<!-- recorded: (\w+) -->\n(.*?)<!-- end recorded: \1 -->", page, re.S)
    return {name: strip_fence(body) for name, body in found}


def strip_fence(body: str) -> str:
    lines = body.strip("\n").splitlines()
    return "\n".join(lines[1:-1] if lines and lines[0].startswith("```") else lines)


def replaced(page: str, records: dict[str, str]) -> str:
    """``page`` with each recorded part replaced (a transcript fenced as text)."""
    for name, text in records.items():
        fenced = text if name == "refusals" else f"```text\n{text.rstrip()}\n```"
        page, count = re.subn(
            rf"(<!-- recorded: {name} -->\n).*?(<!-- end recorded: {name} -->)",
            lambda m, body=fenced: f"{m.group(1)}{body}\n{m.group(2)}",
            page,
            flags=re.S,
        )
        if count != 1:
            raise RuntimeError(f"{PAGE}: no part marked <!-- recorded: {name} -->")
    return page


def differences(page: str, records: dict[str, str]) -> str:
    """A unified diff of the page's records against ``records`` as ``--check`` sees them."""
    committed = regions(page)
    diff = []
    for name, text in records.items():
        old = comparable(committed.get(name, "")).splitlines()
        new = comparable(text).splitlines()
        diff += difflib.unified_diff(old, new, f"page: {name}", f"recorded: {name}", lineterm="")
    return "\n".join(diff)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    records = record()
    page = PAGE.read_text()
    if args.check:
        diff = differences(page, records)
        print(diff or f"{PAGE.name} matches a session run now ({time.monotonic() - t0:.0f} s)")
        return 1 if diff else 0
    PAGE.write_text(replaced(page, records))
    print(f"{PAGE} rewritten from a session run now ({time.monotonic() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
