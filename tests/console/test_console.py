"""The web console in a real browser against a real ``camshaft up``: submit
a job through the form and watch it succeed, move an alias, explain images
with two methods, see errors where they belong, and a viewer's token.

The tests run in file order and share the session's cluster: the job the
form submits is the model the later pages use (a fixture trains it through
the API when a test runs alone). Each page is saved as a screenshot.
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from selenium.common.exceptions import NoAlertPresentException, NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select

from conftest import REPO, Cluster, make_browser, png_bytes, safetensors_bytes, start_cluster

# The form's job: the lecture's CNN on 64 synthetic 32 px images, one epoch.
MODEL = "console"
FAST_JOB = {
    "name": MODEL,
    "dataset": {"kind": "synthetic", "synthetic": {"trainLen": 64, "validLen": 32}},
    "arch": "cnn",
    "epochs": 1,
    "batchSize": 32,
    "lr": 3e-3,
    "seed": "1",
}
SHARED: dict[str, Any] = {}


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30, driver: WebDriver | None = None) -> Any:
    """Polls `check` until it returns something truthy; fails naming `what`."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except (NoSuchElementException, StaleElementReferenceException, LookupError, AssertionError) as e:
            last = e
        time.sleep(0.1)
    logs = ""
    if driver is not None:
        logs = "\n".join(f"{e['level']} {e['message']}" for e in driver.get_log("browser"))
    raise AssertionError(f"timed out waiting for {what} ({last!r})\nbrowser log:\n{logs}")


def go(driver: WebDriver, cluster: Cluster, route: str) -> None:
    """Opens `#/route` of the cluster's console and waits for its heading."""
    driver.get(f"{cluster.url}#/{route}")
    wait_for(f"page {route}", lambda: driver.find_element(By.CSS_SELECTOR, "main h1"), driver=driver)


def shot(driver: WebDriver, folder: Path, name: str) -> None:
    """Saves the whole page (the window grown to its height for a moment)."""
    size = driver.get_window_size()
    height = driver.execute_script("return document.documentElement.scrollHeight")
    inner = driver.execute_script("return window.innerHeight")
    driver.set_window_size(size["width"], min(6000, size["height"] + max(0, height - inner)))
    try:
        driver.save_screenshot(str(folder / f"{name}.png"))
    finally:
        driver.set_window_size(size["width"], size["height"])


def dark_shot(driver: WebDriver, folder: Path, name: str) -> None:
    """The page under prefers-color-scheme: dark, saved as NAME-dark."""
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    try:
        background = driver.execute_script("return getComputedStyle(document.body).backgroundColor")
        assert background != "rgb(247, 247, 250)", "the dark palette applies"
        shot(driver, folder, f"{name}-dark")
    finally:
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})


def accept_alert(driver: WebDriver, expect: str, accept: bool = True) -> None:
    alert = wait_for("a confirmation", lambda: _alert(driver), driver=driver)
    assert expect in alert.text, alert.text
    if accept:
        alert.accept()
    else:
        alert.dismiss()


def _alert(driver: WebDriver) -> Any:
    try:
        return driver.switch_to.alert
    except NoAlertPresentException:
        return None


def fill(driver: WebDriver, element_id: str, text: str) -> None:
    field = driver.find_element(By.ID, element_id)
    field.clear()
    field.send_keys(text)


def no_severe_errors(driver: WebDriver, allowed: tuple[str, ...] = ()) -> None:
    """The page logged no script error (failed requests the test provokes are allowed)."""
    errors = [
        e["message"] for e in driver.get_log("browser")
        if e["level"] == "SEVERE" and "Failed to load resource" not in e["message"]
        and not any(a in e["message"] for a in allowed)
    ]  # fmt: skip
    assert not errors, errors


def unlabelled(driver: WebDriver) -> list[str]:
    """Form controls a screen reader could not name (no <label>, no aria-label)."""
    return driver.execute_script(
        """return [...document.querySelectorAll('main input, main select, main textarea, main button')]
             .filter(el => el.type !== 'hidden')
             .filter(el => !((el.labels && el.labels.length) || el.getAttribute('aria-label')
                             || (el.tagName === 'BUTTON' && el.textContent.trim())))
             .map(el => el.outerHTML.slice(0, 120));"""
    )


@pytest.fixture(scope="session")
def versions(cluster: Cluster) -> list[int]:
    """At least two versions of MODEL: the form's job, and one more trained here."""
    def listed() -> list[int]:
        answer = cluster.api("GET", f"/v1/models?name={MODEL}")
        return sorted(int(v["version"]) for v in answer.get("versions", []))

    while len(listed()) < 2:
        job = cluster.api("POST", "/v1/jobs", {"spec": FAST_JOB})["job"]
        done = cluster.wait_job(job["id"])
        assert done["state"] == "JOB_STATE_SUCCEEDED", done
    return listed()


# ───────────────────────────── submit ─────────────────────────────


def test_field_errors_are_shown_next_to_their_field(browser: WebDriver, cluster: Cluster, screenshots: Path) -> None:
    go(browser, cluster, "submit")
    Select(browser.find_element(By.ID, "f-model")).select_by_value("cnn")
    # Not a number: refused in the page.
    fill(browser, "f-lr", "fast")
    browser.find_element(By.ID, "submit-job").click()
    error = browser.find_element(By.ID, "err-lr")
    wait_for("the local lr error", lambda: error.is_displayed() and "expected a number" in error.text, driver=browser)
    # A number the coordinator refuses: its field violation, beside the field.
    fill(browser, "f-lr", "-1")
    browser.find_element(By.ID, "submit-job").click()
    wait_for("the server's lr error", lambda: "lr must be in (0, 10]" in error.text and error.is_displayed(), driver=browser)
    lr = browser.find_element(By.ID, "f-lr")
    assert lr.get_attribute("aria-invalid") == "true"
    assert "err-lr" in (lr.get_attribute("aria-describedby") or "")
    assert browser.switch_to.active_element == lr, "focus moves to the first invalid field"
    assert re.search(r"#/submit$", browser.current_url)
    shot(browser, screenshots, "submit-field-error")
    assert not cluster.api("GET", "/v1/jobs").get("jobs"), "nothing was submitted"


def test_submit_a_job_and_watch_it_succeed(browser: WebDriver, cluster: Cluster, screenshots: Path, downloads: Path) -> None:
    go(browser, cluster, "submit")
    Select(browser.find_element(By.ID, "f-dataset")).select_by_value("synthetic")
    fill(browser, "f-train-len", "64")
    fill(browser, "f-valid-len", "32")
    Select(browser.find_element(By.ID, "f-model")).select_by_value("cnn")
    assert Select(browser.find_element(By.ID, "f-head")).first_selected_option.get_attribute("value") == ""
    fill(browser, "f-epochs", "1")
    fill(browser, "f-lr", "3e-3")
    fill(browser, "f-batch-size", "32")
    fill(browser, "f-seed", "1")
    fill(browser, "f-name", MODEL)
    browser.find_element(By.ID, "f-profile-steps").click()
    Select(browser.find_element(By.ID, "f-register")).select_by_value("best")
    fill(browser, "f-early-stop", "2")
    fill(browser, "f-tag", "team=vision, stage=try")
    command = browser.find_element(By.ID, "ctl-command").text
    assert command.startswith(f"ctl --coordinator {cluster.coordinator} submit-job --dataset synthetic"), command
    for part in ("--train-len 64", "--valid-len 32", "--model cnn", "--epochs 1", "--lr 3e-3", "--batch-size 32",
                 "--seed 1", "--profile-steps", f"--name {MODEL}", "--register best", "--early-stop 2",
                 "--tag team=vision --tag stage=try"):  # fmt: skip
        assert part in command, (part, command)
    assert "--head" not in command
    assert not unlabelled(browser)
    shot(browser, screenshots, "submit")
    browser.find_element(By.ID, "submit-job").click()

    job_id = wait_for("the job page", lambda: (m := re.search(r"#/jobs/(j-\d+)$", browser.current_url)) and m.group(1), driver=browser)
    SHARED["job"] = job_id
    # The epoch table fills from the event stream, and the state turns.
    wait_for("the epoch row", lambda: browser.find_elements(By.CSS_SELECTOR, "#epoch-table tbody tr[data-epoch='0']"), 120, browser)
    wait_for("state succeeded", lambda: browser.find_elements(By.CSS_SELECTOR, "#job-state [data-state='succeeded']"), 120, browser)
    row = browser.find_element(By.CSS_SELECTOR, "#epoch-table tbody tr").text.split()
    stored = cluster.api("GET", f"/v1/jobs/{job_id}")["job"]
    assert float(row[1]) == pytest.approx(stored["history"][0]["trainLoss"], abs=1e-5)
    assert float(row[3]) == pytest.approx(stored["history"][0]["accuracy"], abs=1e-5)
    wait_for("the model version", lambda: f"{MODEL}:" in browser.find_element(By.ID, "job-summary").text, driver=browser)
    summary = browser.find_element(By.ID, "job-summary").text
    assert "best epoch by valid-loss, early stop after 2 epochs without improvement" in summary, summary
    registered = cluster.api("GET", f"/v1/jobs/{job_id}")["job"]["modelVersion"]
    version = cluster.api("GET", f"/v1/models/{registered}")["version"]
    assert version["tags"] == {"team": "vision", "stage": "try"}, version
    assert version["lineage"]["selectedBy"].startswith("best"), version["lineage"]
    wait_for("the live badge", lambda: browser.find_element(By.ID, "job-live").text == "finished", driver=browser)
    # Curves, attempts, the profile's bars and its trace, the log.
    assert len(browser.find_elements(By.CSS_SELECTOR, "#job-curves svg.chart")) == 3
    assert "1 worker(s)" in browser.find_element(By.ID, "job-attempts").text
    bars = browser.find_elements(By.CSS_SELECTOR, "#job-profile svg rect.phase")
    assert len(bars) == 5, "one rank, five phases"
    browser.find_element(By.ID, "download-trace").click()
    trace_file = downloads / f"{job_id}-epoch0.trace.json"
    wait_for("the trace download", lambda: trace_file.is_file() and trace_file.stat().st_size > 0, driver=browser)
    trace = json.loads(wait_for("a whole trace", lambda: _json_or_none(trace_file)))
    assert trace["otherData"]["job"] == job_id
    assert {e["name"] for e in trace["traceEvents"] if e.get("cat") == "phase"} == {"data", "forward", "backward", "allreduce", "optimizer"}
    wait_for("log lines", lambda: "training on" in browser.find_element(By.ID, "job-log").text, driver=browser)
    assert not browser.find_elements(By.ID, "cancel-job"), "a finished job has no cancel button"
    no_severe_errors(browser)
    shot(browser, screenshots, "job")
    dark_shot(browser, screenshots, "job")


def _json_or_none(path: Path) -> str | None:
    try:
        text = path.read_text()
        json.loads(text)
        return text
    except (OSError, ValueError):
        return None


def test_jobs_list_and_filters(browser: WebDriver, cluster: Cluster, screenshots: Path, versions: list[int]) -> None:
    go(browser, cluster, "jobs")
    job_id = SHARED.get("job") or cluster.api("GET", "/v1/jobs")["jobs"][-1]["id"]
    row = wait_for("the job's row", lambda: browser.find_element(By.CSS_SELECTOR, f"tr[data-job='{job_id}']"), driver=browser)
    assert "succeeded" in row.text and "cnn + linear" in row.text and "1/1" in row.text
    shot(browser, screenshots, "jobs")
    # Only failed jobs: none.
    browser.find_element(By.CSS_SELECTOR, "input[name='state'][value='failed']").click()
    wait_for("the empty filtered list", lambda: "No job is in the chosen states." in browser.find_element(By.ID, "jobs-body").text, driver=browser)
    assert "states=failed" in browser.current_url


# ───────────────────────────── models ─────────────────────────────


def set_alias(driver: WebDriver, version: int, alias: str) -> None:
    row = driver.find_element(By.CSS_SELECTOR, f"tr[data-name='{MODEL}'][data-version='{version}']")
    if row.find_element(By.CSS_SELECTOR, "details").get_attribute("open") is None:
        row.find_element(By.CSS_SELECTOR, "details summary").click()
    field = row.find_element(By.CSS_SELECTOR, "input[name='alias']")
    field.clear()
    field.send_keys(alias)
    field.send_keys(Keys.ENTER)


def alias_chip(driver: WebDriver, version: int, alias: str) -> list[WebElement]:
    return driver.find_elements(By.CSS_SELECTOR, f"tr[data-name='{MODEL}'][data-version='{version}'] .chip[data-alias='{alias}']")


def test_move_an_alias_after_confirming(browser: WebDriver, cluster: Cluster, screenshots: Path, versions: list[int]) -> None:
    first, second = versions[0], versions[1]
    go(browser, cluster, f"models?name={MODEL}")
    wait_for("the versions", lambda: browser.find_elements(By.CSS_SELECTOR, f"tr[data-name='{MODEL}']"), driver=browser)
    set_alias(browser, first, "prod")
    accept_alert(browser, f'Create alias "prod" of {MODEL} pointing at version {first}?')
    wait_for("prod on the first version", lambda: alias_chip(browser, first, "prod"), driver=browser)
    # Moving asks first; dismissing leaves it where it was.
    set_alias(browser, second, "prod")
    accept_alert(browser, f'Move alias "prod" of {MODEL} from version {first} to version {second}?', accept=False)
    time.sleep(0.3)
    assert cluster.api("GET", f"/v1/models/{MODEL}@prod")["version"]["version"] == str(first)
    set_alias(browser, second, "prod")
    accept_alert(browser, f'Move alias "prod" of {MODEL} from version {first} to version {second}?')
    wait_for("prod on the second version", lambda: alias_chip(browser, second, "prod") and not alias_chip(browser, first, "prod"), driver=browser)
    assert cluster.api("GET", f"/v1/models/{MODEL}@prod")["version"]["version"] == str(second)
    lineage = browser.find_element(By.CSS_SELECTOR, f"tr[data-name='{MODEL}'][data-version='{first}']").text
    assert "job j-" in lineage and "accuracy" in lineage and "by anonymous" in lineage
    # Who moved it, from where to where.
    browser.find_element(By.CSS_SELECTOR, f"#model-{MODEL}-history summary").click()
    moves = wait_for("the alias history", lambda: [e.text for e in browser.find_elements(By.CSS_SELECTOR, f"#model-{MODEL}-history li[data-alias='prod']")], driver=browser)
    assert moves[0].startswith(f"prod {first} → {second} by anonymous"), moves
    assert moves[1].startswith(f"prod created → {first} by anonymous"), moves
    # A change made elsewhere shows without reloading the page.
    cluster.api("PUT", f"/v1/models/{MODEL}/aliases/staging", {"version": str(first)})
    wait_for("the staging chip, live", lambda: alias_chip(browser, first, "staging"), driver=browser)
    assert browser.find_elements(By.CSS_SELECTOR, f"#model-{MODEL}-history[open]"), "the history stays unfolded"
    no_severe_errors(browser)
    assert not unlabelled(browser)
    shot(browser, screenshots, "models")


def test_edit_tags_and_description(browser: WebDriver, cluster: Cluster, screenshots: Path, versions: list[int]) -> None:
    version = versions[-1]
    go(browser, cluster, f"models?name={MODEL}")
    row = wait_for("the version", lambda: browser.find_element(By.CSS_SELECTOR, f"tr[data-name='{MODEL}'][data-version='{version}']"), driver=browser)
    tags = row.find_elements(By.CSS_SELECTOR, "details")[1]
    tags.find_element(By.CSS_SELECTOR, "summary").click()
    area = tags.find_element(By.CSS_SELECTOR, "textarea[id^='tags-']")
    area.clear()
    area.send_keys("stage=candidate\nowner=ml")
    description = tags.find_element(By.CSS_SELECTOR, "textarea[id^='desc-']")
    description.clear()
    description.send_keys("tried in the console")
    tags.find_element(By.CSS_SELECTOR, "button[type='submit']").click()
    chip = f"tr[data-name='{MODEL}'][data-version='{version}'] .chip[data-tag='owner']"
    wait_for("the owner tag", lambda: browser.find_elements(By.CSS_SELECTOR, chip), driver=browser)
    stored = cluster.api("GET", f"/v1/models/{MODEL}:{version}")["version"]
    assert stored["tags"] == {"stage": "candidate", "owner": "ml"}, stored
    assert stored["description"] == "tried in the console"
    # Removing a line removes the tag (and only it).
    row = browser.find_element(By.CSS_SELECTOR, f"tr[data-name='{MODEL}'][data-version='{version}']")
    tags = row.find_elements(By.CSS_SELECTOR, "details")[1]
    if tags.get_attribute("open") is None:
        tags.find_element(By.CSS_SELECTOR, "summary").click()
    area = tags.find_element(By.CSS_SELECTOR, "textarea[id^='tags-']")
    area.clear()
    area.send_keys("stage=candidate")
    tags.find_element(By.CSS_SELECTOR, "button[type='submit']").click()
    wait_for("the owner tag gone", lambda: not browser.find_elements(By.CSS_SELECTOR, chip), driver=browser)
    assert cluster.api("GET", f"/v1/models/{MODEL}:{version}")["version"]["tags"] == {"stage": "candidate"}
    no_severe_errors(browser)
    assert not unlabelled(browser)


def test_import_safetensors(browser: WebDriver, cluster: Cluster, screenshots: Path, tmp_path: Path) -> None:
    # The lecture's CNN for 32 px images and two classes, as the registry checks it.
    weights = tmp_path / "tiny-cnn.safetensors"
    weights.write_bytes(safetensors_bytes({"0.weight": [128, 3, 5, 5], "0.bias": [128], "4.weight": [2, 25088], "4.bias": [2]}))
    pth = tmp_path / "model.pth"
    pth.write_bytes(b"PK\x03\x04 not read")
    go(browser, cluster, "models")
    browser.find_element(By.CSS_SELECTOR, "details.import summary").click()
    # A .pth is converted by the coordinator: the page only says so.
    browser.find_element(By.ID, "import-file").send_keys(str(pth))
    wait_for("the .pth note", lambda: "converts it to safetensors" in browser.find_element(By.CSS_SELECTOR, ".import-status").text, driver=browser)
    fill(browser, "import-name", "")
    browser.find_element(By.ID, "import-file").send_keys(str(weights))
    wait_for("the header read", lambda: "4 tensors" in browser.find_element(By.CSS_SELECTOR, ".import-status").text, driver=browser)
    assert browser.find_element(By.ID, "import-name").get_attribute("value") == "tiny-cnn"
    Select(browser.find_element(By.ID, "import-arch")).select_by_value("cnn")
    Select(browser.find_element(By.ID, "import-head")).select_by_value("linear")
    fill(browser, "import-classes", "cat, dog")
    fill(browser, "import-size", "32")
    Select(browser.find_element(By.ID, "import-norm")).select_by_value("none")
    fill(browser, "import-dataset", "made up for the test")
    browser.find_element(By.CSS_SELECTOR, "#import-form button[type='submit']").click()
    wait_for("the registered version", lambda: "Registered tiny-cnn:1" in browser.find_element(By.CSS_SELECTOR, ".import-status").text, driver=browser)
    row = wait_for("its row", lambda: browser.find_element(By.CSS_SELECTOR, "tr[data-name='tiny-cnn'][data-version='1']"), driver=browser)
    assert "imported from tiny-cnn.safetensors" in row.text and "cat, dog" in row.text
    version = cluster.api("GET", "/v1/models/tiny-cnn:1")["version"]
    assert version["lineage"]["dataset"] == "made up for the test"
    assert version["spec"]["classNames"] == ["cat", "dog"]
    shot(browser, screenshots, "models-import")

    # A real torch.save state dict of the same CNN, converted by the coordinator.
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    cnn = torch.nn.Sequential(torch.nn.Conv2d(3, 128, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                              torch.nn.Flatten(), torch.nn.Linear(128 * 14 * 14, 2))
    real = tmp_path / "tiny-pth.pth"
    torch.save(cnn.state_dict(), real)
    fill(browser, "import-name", "")
    browser.find_element(By.ID, "import-file").send_keys(str(real))
    wait_for("the .pth note", lambda: "converts it to safetensors" in browser.find_element(By.CSS_SELECTOR, ".import-status").text, driver=browser)
    assert browser.find_element(By.ID, "import-name").get_attribute("value") == "tiny-pth"
    Select(browser.find_element(By.ID, "import-arch")).select_by_value("cnn")
    Select(browser.find_element(By.ID, "import-head")).select_by_value("linear")
    fill(browser, "import-classes", "cat, dog")
    fill(browser, "import-size", "32")
    Select(browser.find_element(By.ID, "import-norm")).select_by_value("none")
    browser.find_element(By.CSS_SELECTOR, "#import-form button[type='submit']").click()
    wait_for("the registered .pth", lambda: "Registered tiny-pth:1" in browser.find_element(By.CSS_SELECTOR, ".import-status").text, driver=browser)
    assert cluster.api("GET", "/v1/models/tiny-pth:1")["version"]["lineage"]["importedFrom"] == "tiny-pth.pth"


# ───────────────────────────── explain ─────────────────────────────


def canvas_stats(driver: WebDriver, element: WebElement) -> dict:
    return driver.execute_script(
        """const c = arguments[0], d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
           const colours = new Set(); let sum = 0;
           for (let i = 0; i < d.length; i += 4) { colours.add((d[i] << 16) | (d[i+1] << 8) | d[i+2]); sum += d[i] + 3 * d[i+1] + 7 * d[i+2]; }
           return {width: c.width, height: c.height, colours: colours.size, sum};""",
        element,
    )


def explain_requests(driver: WebDriver) -> int:
    return driver.execute_script(
        "return performance.getEntriesByType('resource').filter(e => e.name.includes('/v1/explain')).length;"
    )


def test_explain_two_methods_side_by_side(browser: WebDriver, cluster: Cluster, screenshots: Path, downloads: Path,
                                          versions: list[int], tmp_path: Path) -> None:  # fmt: skip
    good = tmp_path / "square.png"
    good.write_bytes(png_bytes(48, 40, "square"))  # not square: the page resizes it as the server does (crop)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a PNG")
    model = cluster.api("GET", f"/v1/models/{MODEL}:{versions[-1]}")["version"]
    size = model["spec"]["inputSize"]

    go(browser, cluster, f"explain?model={MODEL}:{versions[-1]}")
    wait_for("the model's classes", lambda: "2 classes" in browser.find_element(By.ID, "model-info").text, driver=browser)
    browser.find_element(By.ID, "explain-files").send_keys(f"{good}\n{corrupt}")
    wait_for("two chosen images", lambda: len(browser.find_elements(By.CSS_SELECTOR, "#chosen-images li")) == 2, driver=browser)
    browser.find_element(By.CSS_SELECTOR, "input[name='method'][value='layercam']").click()
    Select(browser.find_element(By.ID, "explain-faithfulness")).select_by_value("FAITHFULNESS_METRIC_DELETION_AUC")
    browser.find_element(By.ID, "explain-run").click()

    panels = wait_for("two overlays", lambda: (p := browser.find_elements(By.CSS_SELECTOR, "figure.panel")) and len(p) == 2 and p, 60, browser)
    assert [p.get_attribute("data-method") for p in panels] == ["gradcam", "layercam"]
    for panel, method in zip(panels, ("EXPLAIN_METHOD_GRAD_CAM", "EXPLAIN_METHOD_LAYER_CAM")):
        assert panel.get_attribute("data-image") == "square.png"
        # What the server says of this image, asked directly.
        answer = cluster.api("POST", "/v1/explain", {
            "model": f"{MODEL}:{versions[-1]}", "method": method,
            "images": [{"id": "x", "data": base64.b64encode(good.read_bytes()).decode()}],
        })["results"][0]  # fmt: skip
        predicted = answer["predictedClass"]
        expected = f"{answer['classNames'][predicted]}({answer['probabilities'][predicted]:.2f})"
        assert panel.find_element(By.CSS_SELECTOR, ".panel-label").text == expected
        stats = canvas_stats(browser, panel.find_element(By.CSS_SELECTOR, "canvas.overlay"))
        assert (stats["width"], stats["height"]) == (size, size), stats
        assert stats["colours"] > 8, f"an overlay, not a flat canvas: {stats}"
        assert "deletion AUC" in panel.text
    error = browser.find_element(By.CSS_SELECTOR, ".grid-row[data-image='corrupt.png'] .image-error")
    assert "decode" in error.text, error.text
    assert not browser.find_elements(By.CSS_SELECTOR, "figure.panel[data-image='corrupt.png']")

    # Colormap and alpha re-render locally, without asking the server again.
    asked = explain_requests(browser)
    canvas = panels[0].find_element(By.CSS_SELECTOR, "canvas.overlay")
    before = canvas_stats(browser, canvas)
    Select(browser.find_element(By.ID, "explain-colormap")).select_by_value("viridis")
    slider = browser.find_element(By.ID, "explain-alpha")
    slider.send_keys(Keys.END)  # the keyboard moves it to 1
    wait_for("alpha 1", lambda: browser.find_element(By.ID, "alpha-value").text == "1.00", driver=browser)
    after = canvas_stats(browser, canvas)
    assert after["sum"] != before["sum"], "the overlay was redrawn"
    assert explain_requests(browser) == asked, "no new request"

    browser.find_element(By.ID, "download-grid").click()
    grid = downloads / f"explain-{MODEL}-{versions[-1]}.png"
    wait_for("the grid download", lambda: grid.is_file() and grid.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", driver=browser)
    no_severe_errors(browser)
    assert not unlabelled(browser)
    shot(browser, screenshots, "explain")
    dark_shot(browser, screenshots, "explain")


def test_explain_compares_layers_and_says_what_ran(browser: WebDriver, cluster: Cluster, screenshots: Path,
                                                  versions: list[int], tmp_path: Path) -> None:  # fmt: skip
    image = tmp_path / "square.png"
    image.write_bytes(png_bytes(32, 32, "square"))
    go(browser, cluster, "jobs")  # a fresh Explain page, not the last test's
    go(browser, cluster, f"explain?model={MODEL}:{versions[-1]}")
    # The cnn's layers: 0 (convolution), 1 (ReLU), 2 (max-pool).
    wait_for("the layer boxes", lambda: len(browser.find_elements(By.CSS_SELECTOR, "input[name='layer']")) == 3, driver=browser)
    browser.find_element(By.ID, "explain-files").send_keys(str(image))
    for layer in ("0", "2"):
        browser.find_element(By.CSS_SELECTOR, f"input[name='layer'][value='{layer}']").click()
    browser.find_element(By.ID, "explain-per-layer").click()
    browser.find_element(By.ID, "explain-aug-smooth").click()
    browser.find_element(By.ID, "explain-run").click()
    wait_for("two overlays", lambda: len(browser.find_elements(By.CSS_SELECTOR, "figure.panel")) == 2, 60, browser)
    heads = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".grid-head [role='columnheader']")][1:]
    assert [h.split()[0:3] for h in heads] == [["Grad-CAM", "@", "0"], ["Grad-CAM", "@", "2"]], heads
    for head, layer in zip(heads, ("0", "2")):
        # The server's recipe, not the request: the layer, the precision, the smoothing.
        assert f"{layer} · fp32 · aug-smooth" in head, head
    # Each column is the server's answer for its layer: maps at the layer's resolution.
    for layer, side in (("0", 28), ("2", 14)):
        answer = cluster.api("POST", "/v1/explain", {
            "model": f"{MODEL}:{versions[-1]}", "method": "gradcam", "targetLayers": [layer],
            "images": [{"id": "x", "data": base64.b64encode(image.read_bytes()).decode()}],
        })  # fmt: skip
        cell = answer["results"][0]["maps"][0]
        assert (cell["width"], cell["height"]) == (side, side), (layer, cell["width"], cell["height"])
    no_severe_errors(browser)
    assert not unlabelled(browser)
    shot(browser, screenshots, "explain-layers")


def test_cancel_a_running_job_after_confirming(browser: WebDriver, cluster: Cluster, screenshots: Path) -> None:
    spec = {**FAST_JOB, "name": "long", "epochs": 30, "dataset": {"kind": "synthetic", "synthetic": {"trainLen": 1024, "validLen": 64}}}
    job = cluster.api("POST", "/v1/jobs", {"spec": spec})["job"]
    go(browser, cluster, f"jobs/{job['id']}")
    # Rows arrive live while it runs.
    wait_for("the first live row", lambda: browser.find_elements(By.CSS_SELECTOR, "#epoch-table tbody tr"), 120, browser)
    assert browser.find_element(By.ID, "job-live").text == "live"
    assert browser.find_elements(By.CSS_SELECTOR, "#job-state [data-state='running']")
    browser.find_element(By.ID, "cancel-job").click()
    accept_alert(browser, f"Cancel job {job['id']}?")
    wait_for("state cancelled", lambda: browser.find_elements(By.CSS_SELECTOR, "#job-state [data-state='cancelled']"), 60, browser)
    wait_for("the reason", lambda: "web console" in browser.find_element(By.ID, "job-summary").text, driver=browser)
    assert cluster.wait_job(job["id"])["state"] == "JOB_STATE_CANCELLED"
    no_severe_errors(browser)
    shot(browser, screenshots, "job-cancelled")


def test_workers_and_status(browser: WebDriver, cluster: Cluster, screenshots: Path) -> None:
    go(browser, cluster, "workers")
    # (Refreshed every 5 s: the worker of a job cancelled just now turns idle.)
    table = wait_for(
        "the idle worker",
        lambda: (t := browser.find_element(By.ID, "workers-table")) and "idle" in t.text and t,
        30, browser,
    )  # fmt: skip
    assert len(table.find_elements(By.CSS_SELECTOR, "tbody tr")) == 1
    assert "cpu:0" in table.text
    status = wait_for("both services", lambda: (s := browser.find_element(By.ID, "status")) and "Explainer" in s.text and s, driver=browser)
    assert "Coordinator" in status.text and "healthy" in status.text and "200" in status.text
    no_severe_errors(browser)
    assert not unlabelled(browser)
    shot(browser, screenshots, "workers")


# ───────────────────────────── tokens ─────────────────────────────

VIEWER = "viewer-token-0123456789"
EDITOR = "editor-token-0123456789"


def test_a_viewer_token_sees_no_editing_controls(tmp_path_factory: pytest.TempPathFactory, screenshots: Path, downloads: Path) -> None:
    folder = tmp_path_factory.mktemp("tokens")
    (folder / "tokens.csv").write_text(f"# token,name,role\n{VIEWER},vera,viewer\n{EDITOR},eddie,editor\n")
    cluster = start_cluster(folder / "data", f'auth_tokens_file = "{folder}/tokens.csv"\n', token=VIEWER)
    browser = make_browser(downloads)
    try:
        job = cluster.api("POST", "/v1/jobs", {"spec": FAST_JOB}, token=EDITOR)["job"]
        browser.get(cluster.url)
        dialog = wait_for("the token dialog", lambda: browser.find_element(By.ID, "token-dialog").get_attribute("open") is not None
                          and browser.find_element(By.ID, "token-dialog"), driver=browser)  # fmt: skip
        browser.find_element(By.ID, "token-input").send_keys(VIEWER)
        dialog.find_element(By.CSS_SELECTOR, "button[value='save']").click()
        wait_for("the viewer's name", lambda: browser.find_element(By.ID, "whoami").text == "vera (viewer)", driver=browser)
        assert not browser.find_element(By.CSS_SELECTOR, "a[data-route='submit']").is_displayed()
        assert browser.execute_script("return sessionStorage.getItem('camshaft.token')") == VIEWER
        assert browser.execute_script("return localStorage.length") == 0
        # The job's live page: events through ?access_token=, and no cancel button.
        go(browser, cluster, f"jobs/{job['id']}")
        wait_for("state succeeded", lambda: browser.find_elements(By.CSS_SELECTOR, "#job-state [data-state='succeeded']"), 120, browser)
        wait_for("the epoch row", lambda: browser.find_elements(By.CSS_SELECTOR, "#epoch-table tbody tr"), driver=browser)
        cancel = browser.find_elements(By.ID, "cancel-job")
        assert not cancel or not cancel[0].is_displayed()
        go(browser, cluster, "models")
        row = wait_for("a version", lambda: browser.find_element(By.CSS_SELECTOR, f"tr[data-name='{MODEL}']"), driver=browser)
        assert not row.find_element(By.CSS_SELECTOR, "details").is_displayed(), "no alias form for a viewer"
        assert not browser.find_element(By.CSS_SELECTOR, "details.import").is_displayed()
        shot(browser, screenshots, "viewer-models")
        # An editor's token brings the controls back.
        browser.find_element(By.ID, "token-button").click()
        browser.find_element(By.ID, "token-input").send_keys(EDITOR)
        browser.find_element(By.CSS_SELECTOR, "#token-dialog button[value='save']").click()
        wait_for("the editor's name", lambda: browser.find_element(By.ID, "whoami").text == "eddie (editor)", driver=browser)
        assert browser.find_element(By.CSS_SELECTOR, "a[data-route='submit']").is_displayed()
    finally:
        browser.quit()
        cluster.stop()


# ───────────────────────────── README pictures ─────────────────────────────


@pytest.mark.skipif(not os.environ.get("CONSOLE_UPDATE_DOCS"), reason="set CONSOLE_UPDATE_DOCS=1 to redraw docs/console-*.png")
def test_docs_screenshots(cluster: Cluster, downloads: Path, tmp_path: Path) -> None:
    """Redraws the README's pictures: a profiled ResNet18 with the CAM head
    trained on the synthetic shapes as scripts/demo trains it (about ten
    minutes on two cores), and
    three CAM methods side by side on validation images of `scripts/demo`
    (out/demo/samples, when it has run; drawn shapes otherwise)."""
    from PIL import Image

    spec = {
        "name": "shapes", "dataset": {"kind": "synthetic", "synthetic": {"trainLen": 2048, "validLen": 512}},
        "arch": "resnet18", "head": "cam", "imageSize": 128, "epochs": 4, "batchSize": 32, "lr": 3e-3, "seed": "7",
        "profileSteps": True,
    }  # fmt: skip
    job = cluster.api("POST", "/v1/jobs", {"spec": spec})["job"]
    done = cluster.wait_job(job["id"], timeout=1800)
    assert done["state"] == "JOB_STATE_SUCCEEDED", done
    browser = make_browser(downloads)
    browser.set_window_size(1280, 900)
    try:
        go(browser, cluster, f"jobs/{job['id']}")
        wait_for("the rows", lambda: len(browser.find_elements(By.CSS_SELECTOR, "#epoch-table tbody tr")) == 4, 60, browser)
        time.sleep(0.5)
        save_small(browser, REPO / "docs" / "console-job.png", Image, full=True)

        go(browser, cluster, "explain?model=shapes@latest")
        wait_for("the model", lambda: "2 classes" in browser.find_element(By.ID, "model-info").text, driver=browser)
        samples = REPO / "out" / "demo" / "samples" / "valid"
        files = [str(p) for p in (sorted((samples / "circle").glob("*.png"))[:2] + sorted((samples / "square").glob("*.png"))[:2])]
        if len(files) < 4:
            files = []
            for i, kind in enumerate(("circle", "square", "circle", "square")):
                path = tmp_path / f"{kind}-{i}.png"
                path.write_bytes(png_bytes(64 + 16 * i, 64, kind))
                files.append(str(path))
        browser.find_element(By.ID, "explain-files").send_keys("\n".join(files))
        for method in ("cam", "hirescam"):
            browser.find_element(By.CSS_SELECTOR, f"input[name='method'][value='{method}']").click()
        Select(browser.find_element(By.ID, "explain-faithfulness")).select_by_value("FAITHFULNESS_METRIC_DELETION_AUC")
        browser.find_element(By.ID, "explain-run").click()
        wait_for("the panels", lambda: len(browser.find_elements(By.CSS_SELECTOR, "figure.panel")) == 12, 120, browser)
        browser.execute_script("document.getElementById('status-bar').hidden = true")
        time.sleep(0.3)
        save_small(browser, REPO / "docs" / "console-explain.png", Image, full=True)
    finally:
        browser.quit()


def save_small(driver: WebDriver, path: Path, image_module: Any, full: bool = False) -> None:
    """A screenshot (of the whole page with `full`) as a paletted PNG under 150 KB."""
    import io

    size = driver.get_window_size()
    if full:
        height = driver.execute_script("return document.documentElement.scrollHeight")
        inner = driver.execute_script("return window.innerHeight")
        driver.set_window_size(size["width"], min(2400, size["height"] + max(0, height - inner)))
        time.sleep(0.3)
    try:
        png = driver.get_screenshot_as_png()
    finally:
        driver.set_window_size(size["width"], size["height"])
    shot = image_module.open(io.BytesIO(png)).convert("RGB")
    width = 1100
    shot = shot.resize((width, round(shot.height * width / shot.width)), image_module.LANCZOS)
    for colours in (256, 128, 64, 32):
        out = io.BytesIO()
        quantized = shot.quantize(colours, method=image_module.Quantize.FASTOCTREE, dither=image_module.Dither.NONE)
        quantized.save(out, "PNG", optimize=True)
        if out.tell() < 150_000:
            break
    path.write_bytes(out.getvalue())
