"""The web pages in a real browser (Debian's headless Chromium, driven through ChromeDriver by
Selenium) during a real small session: ``sdpbatch up``, AssignResources through the subarray
device, ReleaseResources, the batch block runs to FINISHED, ``sdpbatch down``.

Checked: the pages change as the configuration database does, without a reload (one document
from start to end, its states observed in order); the workflow log streams into the block page;
the Dask dashboard link of the running block is the engine's and answers; the buffers' files
are listed with their sizes on disk; the product page's four figures load.  The time from a
state change in the database (seen by a watch of this test) to the page showing it is measured
and printed.  A screenshot of each page is written to ``$SDPBATCH_SCREENSHOTS`` (default: a
folder under pytest's tmp), whose path is printed.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import tango

from system_fixture import *  # noqa: F403  (fixture system)
from system_packages import ensure_debian_packages

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SBI = json.loads((EXAMPLES / "sbi-small.json").read_text())
RT_PB, BATCH_PB = (pb["id"] for pb in SBI["processing_blocks"])
IMG = SBI["processing_blocks"][1]["parameters"]["buffer_img"]
ENDED = ("FINISHED", "FAILED", "CANCELLED")
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-background-timer-throttling",  # the window not in front keeps running
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
    "--window-size=1400,1000",
]
SEED_LOG_LINES = [
    "Waiting for resources to be available",
    "Resources are available",
    "Deploying Dask EE",
    "Running simulation pipeline",
    "Running ICAL pipeline",
    "Finished processing",
]
# Records, in the page, every status a block's cell shows and when (ms since the epoch).
WATCH_STATES = """
window.__document = Math.random();
window.__seen = []; window.__last = {};
const record = () => {
  for (const cell of document.querySelectorAll("td.pb-status")) {
    const pb = cell.dataset.pb, text = cell.textContent;
    if (window.__last[pb] !== text) {
      window.__last[pb] = text; window.__seen.push([pb, text, Date.now()]);
    }
  }
};
new MutationObserver(record).observe(document.getElementById("main"),
  {childList: true, subtree: true, characterData: true});
record();
return window.__document;
"""
# Records the log's growth and every Dask dashboard link shown on the block page.
WATCH_BLOCK = """
window.__document = Math.random();
window.__log = []; window.__dashboards = [];
const log = document.getElementById("log");
new MutationObserver(() => window.__log.push([log.textContent.length, Date.now()]))
  .observe(log, {childList: true, characterData: true, subtree: true});
new MutationObserver(() => {
  for (const a of document.querySelectorAll("a.dashboard"))
    if (!window.__dashboards.includes(a.href)) window.__dashboards.push(a.href);
}).observe(document.getElementById("main"), {childList: true, subtree: true});
return window.__document;
"""


@pytest.fixture
def chromium() -> None:
    reason = ensure_debian_packages(["chromium", "chromium-driver"], ["chromium", "chromedriver"])
    if reason:
        pytest.skip(f"no browser for the web tests: {reason}")


@pytest.fixture
def screenshots(tmp_path_factory, capsys) -> Path:
    folder = Path(os.environ.get("SDPBATCH_SCREENSHOTS") or tmp_path_factory.mktemp("screens"))
    folder.mkdir(parents=True, exist_ok=True)
    with capsys.disabled():
        print(f"\nweb page screenshots: {folder}")
    return folder


@pytest.fixture
def browser(chromium, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        yield driver
    finally:
        driver.quit()


class DatabaseWatch:
    """An etcd watch of the test's own on the blocks' states: when each status reached a client
    of the database (the reference time of the latency), and the Dask engine's dashboard port."""

    def __init__(self, host: str, port: int):
        import pyetcd

        self.client = pyetcd.client(host=host, port=port)
        self.seen: list[tuple[str, str, float]] = []
        self.dashboard_port: int | None = None
        self.lock = threading.Lock()
        self.watches = [
            self.client.add_watch_prefix_callback("/pb/", self._on_block),
            self.client.add_watch_prefix_callback(f"/deploy/proc-{BATCH_PB}-dask/", self._on_dask),
        ]

    def _on_block(self, response) -> None:
        now = time.time()
        if isinstance(response, Exception):
            return
        for event in response.events:
            key = event.key.decode()
            if key.endswith("/state") and event.value:
                pb, status = key.split("/")[2], json.loads(event.value)["status"]
                with self.lock:
                    if self.status(pb) != status:
                        self.seen.append((pb, status, now))

    def _on_dask(self, response) -> None:
        if isinstance(response, Exception):
            return
        for event in response.events:
            state = json.loads(event.value) if event.value else {}
            if state.get("status") == "RUNNING":
                self.dashboard_port = state.get("dashboard")

    def status(self, pb_id: str) -> str | None:
        last = [s for pb, s, _ in self.seen if pb == pb_id]
        return last[-1] if last else None

    def close(self) -> None:
        for watch_id in self.watches:
            self.client.cancel_watch(watch_id)
        self.client.close()


def _texts(driver, selector: str) -> list[dict]:
    """Text and attributes of the elements matching ``selector``, read in one step (the pages
    redraw their tables as updates arrive, so element handles may go stale)."""
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(e => Object.fromEntries("
        "[['text', e.textContent], ...[...e.attributes].map(a => [a.name, a.value])]))",
        selector,
    )


def _wait(what: str, check, timeout: float, poll: float = 0.1):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _shot(driver, folder: Path, name: str) -> Path:
    """A screenshot of the whole page (the window made as tall as the page for it)."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, min(height + 150, 4000))  # + the window's own frame
    path = folder / f"{name}.png"
    driver.save_screenshot(str(path))
    driver.set_window_size(1400, 1000)
    return path


def test_pages_follow_a_real_session(system, browser, screenshots, capsys):
    from sdpbatch.control.subarray.state_machine import ObsState
    from sdpbatch.control.system.components import COMPONENTS

    data_dir, env = system
    url, driver = env["SDPBATCH_WEB_URL"].rstrip("/"), browser

    # the system page: every component of 'sdpbatch up', alive, and the database answering
    driver.get(f"{url}/system")
    rows = _wait("the components", lambda: _texts(driver, "#components tr[data-component]"), 30)
    assert [r["data-component"] for r in rows] == list(COMPONENTS)
    assert all("alive" in r["text"] for r in rows)
    assert "ok" in _texts(driver, "#database")[0]["text"]
    _shot(driver, screenshots, "system")

    # the blocks page, watched from before the SBI exists to the end of the session
    driver.get(f"{url}/")
    _wait("the overview", lambda: _texts(driver, "#blocks"), 30)
    overview_doc = driver.execute_script(WATCH_STATES)
    overview_window = driver.current_window_handle
    watch = DatabaseWatch(env["SDP_CONFIG_HOST"], int(env["SDP_CONFIG_PORT"]))
    # the full name: a plain one would bind this process to one TANGO_HOST for good
    device = tango.DeviceProxy(f"tango://{env['TANGO_HOST']}/mid_sdp/elt/subarray_1")
    try:
        if device.state() == tango.DevState.OFF:
            device.On()
        device.AssignResources(json.dumps(SBI))
        assert device.obsState == ObsState.IDLE

        def page_states():
            return driver.execute_script("return window.__last")

        _wait(
            "the page to show the real-time block RUNNING and the batch block WAITING",
            lambda: (
                page_states().get(RT_PB) == "RUNNING" and page_states().get(BATCH_PB) == "WAITING"
            ),
            60,
        )
        _shot(driver, screenshots, "blocks-waiting")

        # the batch block's page, in a second window, from WAITING to FINISHED
        driver.switch_to.new_window("window")
        block_window = driver.current_window_handle
        driver.get(f"{url}/blocks/{BATCH_PB}")
        _wait("the log element", lambda: _texts(driver, "#log"), 30)
        block_doc = driver.execute_script(WATCH_BLOCK)

        def log_text() -> str:
            return driver.execute_script("return document.getElementById('log').textContent")

        _wait("the log to show the wait", lambda: SEED_LOG_LINES[0] in log_text(), 30)

        device.ReleaseResources()
        assert device.obsState == ObsState.EMPTY
        _wait(
            "the Dask dashboard link",
            lambda: driver.execute_script("return window.__dashboards.length"),
            120,
            poll=0.2,
        )
        [dashboard] = driver.execute_script("return window.__dashboards")
        with urllib.request.urlopen(dashboard, timeout=30) as response:  # the engine runs
            assert response.status == 200 and b"Dask" in response.read()
        _shot(driver, screenshots, "block-running")
        _wait("the batch block to end", lambda: watch.status(BATCH_PB) in ENDED, 240, poll=0.5)
        assert watch.status(BATCH_PB) == "FINISHED", watch.seen
        _wait("the log's last line", lambda: SEED_LOG_LINES[-1] in log_text(), 30)
    finally:
        watch.close()

    # the block page: the log streamed in pieces, in order, into one document
    assert driver.execute_script("return window.__document") == block_doc  # never reloaded
    text = log_text()
    positions = [text.find(line) for line in SEED_LOG_LINES]
    assert -1 not in positions and positions == sorted(positions), text
    growth = driver.execute_script("return window.__log")
    assert len(growth) >= 3 and growth[-1][1] - growth[0][1] > 1000, growth  # it streamed
    assert driver.execute_script("return window.__dashboards") == [dashboard]
    assert dashboard == f"http://127.0.0.1:{watch.dashboard_port}/status"

    # its buffers: files listed with their sizes on disk
    product_link = f'[data-buffer="{IMG}"] a.product'
    _wait("the product link", lambda: _texts(driver, product_link), 30)
    for name in ("ska_pipeline_ical_restored.fits", "ska_pipeline_ical_gains.h5", "qa.json"):
        [cell] = _texts(driver, f'tr[data-file="{IMG}/{name}"] .size-bytes')
        assert int(cell["text"]) == (data_dir / IMG / name).stat().st_size
    _shot(driver, screenshots, "block")

    # the blocks page: every state, in order, in the same document
    driver.switch_to.window(overview_window)
    assert driver.execute_script("return window.__document") == overview_doc
    seen = driver.execute_script("return window.__seen")
    shown = {pb: [s for p, s, _ in seen if p == pb] for pb in (RT_PB, BATCH_PB)}
    assert _in_order(["RUNNING", "FINISHED"], shown[RT_PB]), seen
    assert _in_order(["WAITING", "RUNNING", "FINISHED"], shown[BATCH_PB]), seen
    assert _texts(driver, f'#blocks tr[data-pb="{BATCH_PB}"] a[href="/blocks/{RT_PB}"]')
    [sbi] = _texts(driver, f'tr[data-sbi="{SBI["id"]}"] .sbi-status')
    assert sbi["text"] == "FINISHED"
    _shot(driver, screenshots, "blocks")
    latencies = _latencies(watch.seen, seen)
    assert latencies and max(lat for *_, lat in latencies) < 5.0, latencies
    _report(latencies, screenshots, capsys)

    # the product page: the four figures load
    driver.switch_to.window(block_window)
    driver.execute_script("document.querySelector(arguments[0]).click()", product_link)
    figures = ("img-restored", "img-residual", "img-gains", "img-qa")
    _wait(
        "the product's figures",
        lambda: all(
            driver.execute_script(
                "const i = document.getElementById(arguments[0]);"
                "return !!i && i.complete && i.naturalWidth > 0",
                figure,
            )
            for figure in figures
        ),
        180,
        poll=0.5,
    )
    for figure in figures:
        size = driver.execute_script(
            "const i = document.getElementById(arguments[0]); return [i.naturalWidth, "
            "i.naturalHeight]",
            figure,
        )
        assert min(size) > 300, (figure, size)
    _shot(driver, screenshots, "product")
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


def _in_order(wanted: list[str], shown: list[str]) -> bool:
    """True if ``wanted`` appears in ``shown`` in this order (other states may come between)."""
    it = iter(shown)
    return all(any(s == w for s in it) for w in wanted)


def _latencies(database: list, page: list) -> list[tuple[str, str, float]]:
    """(block, status, seconds) from the test's watch seeing a status to the page showing it."""
    out = []
    for pb, status, t_db in database:
        shown = [t / 1e3 for p, s, t in page if p == pb and s == status]
        if shown:
            out.append((pb, status, shown[0] - t_db))
    return out


def _report(latencies: list, folder: Path, capsys) -> None:
    values = [lat for *_, lat in latencies]
    (folder / "latency.json").write_text(json.dumps(latencies, indent=1) + "\n")
    with capsys.disabled():
        print(
            f"\ndatabase state change -> page: median {1e3 * statistics.median(values):.0f} ms, "
            f"max {1e3 * max(values):.0f} ms over {len(values)} changes "
            + ", ".join(f"{s} {1e3 * lat:.0f} ms" for _, s, lat in latencies)
        )
