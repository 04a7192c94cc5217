"""The runner's HTTP server through the built PEX: /metrics checked by promtool and counted across worker
processes, /health following a Redis that stops and comes back, and the dashboard in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from taskqueue.client import Client, chain, step
from tests.conftest import REPO, RedisServer, wait_for
from tests.e2e.harness import Runner, RunnerFactory, runs, store

TOKEN = "e2e-token"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never through a proxy


def http_url(runner: Runner) -> str:
    """The runner's base URL, from its `HTTP on http://HOST:PORT` log line (the config asks for port 0)."""
    found: list[str] = []

    def logged() -> bool:
        found[:] = [m[1] for line in runner.logs() if (m := re.match(r"HTTP on (http://\S+)$", line.get("msg", "")))]
        return bool(found)

    wait_for(logged, timeout=20, what="the runner's 'HTTP on' log line")
    return found[0]


def fetch(url: str | urllib.request.Request, timeout: float = 3.0) -> tuple[int, bytes]:
    try:
        with _OPENER.open(url, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def metric_values(base: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    status, body = fetch(f"{base}/metrics")
    assert status == 200
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
        if s.name == name
    }


def test_metrics_count_every_worker_process_and_pass_promtool(make_runner: RunnerFactory, redis_url: str) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: install the Debian package 'prometheus' (.ci/run does)"
    n = 60
    runner = make_runner(redis_url, workers=2, slots=2, http={"port": 0}).start(expect_workers=2)
    base = http_url(runner)
    db = store(redis_url)
    Client(redis_url).enqueue_many([("record", (i, 0.03), {}) for i in range(n)])
    busy: set[bytes] = set()

    def all_ran() -> bool:  # and note which worker processes held tasks on the way
        busy.update(k for k in db.scan_iter("tq:inflight:*") if db.hlen(k))
        return len(runs(redis_url)) == n

    wait_for(all_ran, timeout=30, interval=0.01, what=f"{n} tasks to run")
    assert len(busy) == 2, "both worker processes should have run tasks"
    processed = "taskqueue_tasks_processed_total"
    wait_for(lambda: sum(metric_values(base, processed).values()) >= n, timeout=10, what="counters flushed")
    assert metric_values(base, processed)[(("queue", "default"), ("task", "record"))] == n
    assert sum(metric_values(base, processed).values()) == n
    durations = metric_values(base, "taskqueue_task_duration_seconds_count")
    assert durations[(("queue", "default"), ("task", "record"))] == n
    assert metric_values(base, "taskqueue_workers")[()] == 2

    _, body = fetch(f"{base}/metrics")
    check = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=30, check=False)
    assert (check.returncode, check.stdout + check.stderr) == (0, b""), body.decode()[:2000]


def test_health_goes_unhealthy_when_redis_stops_and_back(make_runner: RunnerFactory, own_redis: RedisServer) -> None:
    runner = make_runner(own_redis.url, workers=1, http={"port": 0}).start(expect_workers=1)
    base = http_url(runner)
    wait_for(lambda: fetch(f"{base}/health")[0] == 200, timeout=10, what="/health 200")

    own_redis.stop(kill=True)
    wait_for(lambda: fetch(f"{base}/health")[0] == 503, timeout=5, what="/health 503 after Redis stopped")
    body = json.loads(fetch(f"{base}/health")[1])
    assert body["status"] == "unhealthy"
    assert body["components"]["redis"]["status"] == "unhealthy"
    metrics_status, metrics = fetch(f"{base}/metrics")
    assert metrics_status == 200 and b"taskqueue_redis_up 0.0" in metrics

    own_redis.start()
    wait_for(lambda: fetch(f"{base}/health")[0] == 200, timeout=20, what="/health 200 after Redis returned")
    assert json.loads(fetch(f"{base}/health")[1])["components"]["redis"]["status"] == "healthy"


def chromium(profile: Path) -> webdriver.Chrome:
    """Debian's headless Chromium through chromium-driver (no downloads: both come from apt)."""
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert browser and driver, "chromium/chromedriver missing: apt-get install chromium chromium-driver (.ci/run does)"
    options = Options()
    options.binary_location = browser
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(executable_path=driver))


def test_dashboard_in_a_real_browser(make_runner: RunnerFactory, redis_url: str, tmp_path: Path) -> None:
    runner = make_runner(redis_url, workers=1, slots=1, grace="1s", http={"port": 0, "auth_token": TOKEN})
    base = http_url(runner.start(expect_workers=1))
    db = store(redis_url)
    # A workflow whose first step is dead-lettered at once (flaky: max_retries 0): failed, shown as such.
    producer = Client(redis_url)
    failed_workflow = producer.enqueue_workflow(chain(step("flaky", 1, key="browser"), step("add", 1)))
    wait_for(lambda: (producer.workflow(failed_workflow) or {}).get("state") == "failed", what="a failed workflow")
    # A dead task: max_retries 0 sends it to the dead-letter store on its first failure.
    dead = {"id": "dead-1", "task": "always_fails", "kwargs": {"key": "browser"}, "max_retries": 0}
    db.lpush("tq:queue:default", json.dumps(dead))
    wait_for(lambda: db.hexists("tq:dead", "dead-1"), what="the task to be dead-lettered")
    # The only slot is busy, so three more tasks wait in `default` (and a retried one would too).
    client = Client(redis_url)
    client.enqueue("record", 0, 60.0)
    wait_for(lambda: db.llen("tq:queue:default") == 0, what="the slow task to start")
    waiting_ids = client.enqueue_many([("record", (n,), {}) for n in (1, 2, 3)])

    browser = chromium(tmp_path / "chromium-profile")
    try:
        browser.get(f"{base}/")
        wait = WebDriverWait(browser, 10, ignored_exceptions=[StaleElementReferenceException])  # redrawn every 2s
        depth = (By.CSS_SELECTOR, 'tr[data-queue="default"] td.pending')
        wait.until(lambda d: d.find_element(*depth).text == "3")
        shown = (By.CSS_SELECTOR, f'tr[data-workflow="{failed_workflow}"] td.state')
        wait.until(lambda d: d.find_element(*shown).text == "failed")
        assert "1 failed" in browser.find_element(By.ID, "workflow-summary").text
        retry = (By.CSS_SELECTOR, 'button.retry[data-id="dead-1"]')
        wait.until(lambda d: d.find_element(*retry).is_displayed())
        browser.find_element(By.ID, "token").send_keys(TOKEN)
        browser.find_element(*retry).click()

        wait_for(lambda: not db.hexists("tq:dead", "dead-1"), what="the dead task to leave the dead-letter store")
        queued = [json.loads(m) if m[:1] == b"{" else None for m in db.lrange("tq:queue:default", 0, -1)]
        assert any(m is None for m in queued)  # re-enqueued (as MessagePack) behind the three waiting tasks
        assert db.llen("tq:queue:default") == 4
        wait.until(lambda d: d.find_element(*depth).text == "4")
        wait.until(lambda d: not d.find_elements(*retry))  # its row is gone from the dead-letter table
        wait.until(lambda d: "re-enqueued dead-1" in d.find_element(By.ID, "notice").text)
        # Find a task: where it is and why; then cancel it from there
        browser.find_element(By.ID, "find-id").send_keys(waiting_ids[0])
        browser.find_element(By.CSS_SELECTOR, '#find button[type="submit"]').click()
        wait.until(lambda d: "state\nqueued" in d.find_element(By.ID, "found").text)
        assert "record" in browser.find_element(By.ID, "found").text
        browser.find_element(By.ID, "find-cancel").click()
        browser.switch_to.alert.accept()
        wait.until(lambda d: "state\ncancelled" in d.find_element(By.ID, "found").text)
        assert client.status(waiting_ids[0])["state"] == "cancelled"  # type: ignore[index]
        (REPO / "artifacts").mkdir(exist_ok=True)
        browser.save_screenshot(str(REPO / "artifacts" / "dashboard.png"))
        console: list[dict[str, Any]] = browser.get_log("browser")  # type: ignore[no-untyped-call]  # untyped
        errors = [e for e in console if e["level"] == "SEVERE"]
        assert errors == []
    finally:
        browser.quit()


def _start_gated(base: str, client: Client, db: Any, gate: str) -> None:
    """Two tasks that hold their slots until `gate` is set; the heartbeat (at start) still says 0 active."""
    client.enqueue_many([("gated", (n, gate), {}) for n in (90001, 90002)])
    wait_for(lambda: db.llen("test:started") == 2, what="two gated tasks to start")
    heartbeats = json.loads(fetch(f"{base}/tasks/workers")[1])["workers"]
    assert sum(int(w["active"]) for w in heartbeats) == 0  # what the old table showed
    assert sum(w["in_flight"] for w in heartbeats) == 2


def _shows_in_flight_now(browser: webdriver.Chrome, wait: WebDriverWait[webdriver.Chrome]) -> None:
    """The header counts the table's rows, and the table shows the two running tasks (slots 4 each)."""
    summary = (By.ID, "worker-summary")
    wait.until(lambda d: "2 in flight now" in d.find_element(*summary).text)
    assert "2 live: 2 of this runner's 2 (target 2), 0 elsewhere" in browser.find_element(*summary).text
    cells = browser.find_elements(By.CSS_SELECTOR, "#workers td.inflight")
    assert len(cells) == 2 and sum(int(c.text.split(" / ")[0]) for c in cells) == 2
    assert all(c.text.endswith(" / 4") for c in cells)


def test_dashboard_shows_live_work_a_throughput_graph_and_retried_failures(
    make_runner: RunnerFactory, redis_url: str, tmp_path: Path
) -> None:
    """Issue 19 item 11, in Chromium: in-flight counts read now (the heartbeat, every 20 s here, still says 0),
    a header that counts the table's rows, processed/failed per second drawn while a backlog drains, and
    Recent failures listing each failed attempt with what follows it (a retry, then the dead-letter store)."""
    runner = make_runner(redis_url, workers=2, slots=4, heartbeat="20s", http={"port": 0})
    base = http_url(runner.start(expect_workers=2))
    db = store(redis_url)
    client = Client(redis_url)
    gate = "test:gate:browser"
    _start_gated(base, client, db, gate)
    artifacts = REPO / "artifacts"
    artifacts.mkdir(exist_ok=True)
    browser = chromium(tmp_path / "chromium-profile")
    try:
        browser.set_window_size(1400, 1500)
        browser.get(f"{base}/")
        wait = WebDriverWait(browser, 30, ignored_exceptions=[StaleElementReferenceException])  # redrawn every 2s
        summary = (By.ID, "worker-summary")
        _shows_in_flight_now(browser, wait)

        # A backlog on two queues, and one task that fails three times (max_retries 2): it drains while we look.
        n = 4000  # 10 ms each, at most 6 at a time: at least 13 s to drain
        failing = client.enqueue("always_fails", key="browser")
        client.enqueue_many([("record", (i, 0.01), {}) for i in range(n)])
        client.enqueue_many([("arecord", (n + i, 0.01), {}) for i in range(n)])
        graph = (By.ID, "graph-processed")
        wait.until(lambda d: float(d.find_element(*graph).get_attribute("data-peak") or 0) > 0)
        wait.until(lambda d: int(d.find_element(*graph).get_attribute("data-samples") or 0) >= 4)  # a curve, not a dot
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#graph-processed polyline"))
        lines = browser.find_elements(By.CSS_SELECTOR, "#graph-processed polyline")
        assert {"default", "high_priority"} <= {e.get_attribute("data-queue") for e in lines}
        retried = (By.CSS_SELECTOR, f'#failures li[data-id="{failing}"][data-attempt="1"]')
        wait.until(lambda d: d.find_elements(*retried))
        first = browser.find_element(*retried).text
        assert "always_fails on default, attempt 1 → retry in" in first and "ValueError: boom browser" in first
        assert len(runs(redis_url)) < 2 * n, "the backlog should still be draining for this screenshot"
        browser.save_screenshot(str(artifacts / "dashboard-draining.png"))

        buried = (By.CSS_SELECTOR, f'#failures li[data-id="{failing}"][data-attempt="3"]')
        wait.until(lambda d: "dead-lettered" in d.find_element(*buried).text)
        db.set(gate, 1)
        wait_for(lambda: len(runs(redis_url)) == 2 * n + 2, timeout=120, what="the backlog to drain")
        assert db.llen("tq:failures") == 3  # the three failed attempts; the 8,002 successes wrote nothing there
        failed = (By.ID, "graph-failed")
        assert float(browser.find_element(*failed).get_attribute("data-peak") or 0) > 0
        wait.until(lambda d: "0 in flight now" in d.find_element(*summary).text)
        wait.until(lambda d: d.find_element(By.ID, "processed-now").text == "0")
        browser.save_screenshot(str(artifacts / "dashboard-drained.png"))
        console: list[dict[str, Any]] = browser.get_log("browser")  # type: ignore[no-untyped-call]  # untyped
        assert [e for e in console if e["level"] == "SEVERE"] == []
    finally:
        browser.quit()


def test_prometheus_examples_pass_promtool(tmp_path: Path) -> None:
    """conf/prometheus.yml (with its rules) is valid, and every Grafana panel query is valid PromQL."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: install the Debian package 'prometheus' (.ci/run does)"
    example = str(REPO / "conf" / "prometheus.yml")
    config = subprocess.run([promtool, "check", "config", example], capture_output=True, timeout=30, check=False)
    assert config.returncode == 0, config.stdout + config.stderr
    dashboard = json.loads((REPO / "conf" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    grafana = {"$__rate_interval": "1m", "$queue": ".*"}
    rules = [
        {"record": f"panel:query_{i}", "expr": re.sub(r"\$\w+", lambda m: grafana[m[0]], e)}
        for i, e in enumerate(exprs)
    ]
    (tmp_path / "panels.yml").write_text(json.dumps({"groups": [{"name": "panels", "rules": rules}]}))
    panels = str(tmp_path / "panels.yml")
    check = subprocess.run([promtool, "check", "rules", panels], capture_output=True, timeout=30, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(exprs)} rules found".encode() in check.stdout
