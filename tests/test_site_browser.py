"""The site in a real headless browser (Debian's chromium driven by selenium): the leaderboard table sorts,
filters and searches, the curve comparison plots the picked models and reads their robust accuracy at the
chosen budget, the analysis draws its panels, and no request leaves the page's origin. Screenshots go to
``$APB_SCREENSHOTS`` (default ``build/site-screenshots/`` in the repository). Skipped where chromium, its driver
or selenium is missing (``.ci/run`` installs them)."""
from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import threading
from pathlib import Path

import pytest

from evaluator.site import build_site
from tests.support.leaderboard_repo import THREE_APS, add_evaluated, make_repo

REPO = Path(__file__).resolve().parents[1]
CHROMIUM, DRIVER = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
SCREENSHOTS = Path(os.environ.get("APB_SCREENSHOTS", REPO / "build" / "site-screenshots"))
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e .[test])")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="chromium and chromedriver are not installed "
                                                                  "(apt-get install chromium chromium-driver)")


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A built site (three APs' published records, five evaluated models) served on 127.0.0.1."""
    tmp = tmp_path_factory.mktemp("site")
    root = make_repo(tmp)
    harp, hydra, radmm = THREE_APS
    for i, (ap, sparsity, scale) in enumerate([(harp, 90, 0.05), (harp, 95, 0.04), (hydra, 90, 0.02),
                                               (hydra, 95, 0.03), (radmm, 99, 0.01)]):
        add_evaluated(root, f"{ap}_R18_CIFAR10_US_{sparsity}", seed=i, scale=scale, flags=i == 4)
    out = tmp / "site"
    build_site(root, out)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(out)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", out
    server.shutdown()


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000", "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-default-apps", "--disable-sync"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    driver.set_page_load_timeout(20)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def requested_urls(driver) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def wait_for(driver, script: str, timeout: float = 10.0):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: d.execute_script(script))


def column(driver, title: str) -> list[str]:
    titles = [th.text.rstrip(" ▲▼") for th in driver.find_elements("css selector", "#leaderboard th")]
    index = titles.index(title)
    return [row.find_elements("tag name", "td")[index].text
            for row in driver.find_elements("css selector", "#leaderboard tbody tr")]


def test_tables_sort_filter_and_search_and_nothing_leaves_the_origin(site, browser):
    origin, out = site
    browser.get(f"{origin}/index.html")
    wait_for(browser, "return document.querySelectorAll('#leaderboard tbody tr').length > 0")
    assert browser.find_element("id", "count").text == "23 of 23 records"  # 18 published + 5 evaluated
    aa = [float(v.rstrip(" ⚠")) for v in column(browser, "AA")]
    assert aa == sorted(aa, reverse=True)  # the default order: AutoAttack robust accuracy, best first
    header = [th for th in browser.find_elements("css selector", "#leaderboard th") if th.text.startswith("clean")][0]
    header.click()
    clean = [float(v) for v in column(browser, "clean")]
    assert clean == sorted(clean, reverse=True) and header.get_attribute("aria-sort") == "descending"
    header.click()
    assert [float(v) for v in column(browser, "clean")] == sorted(clean)
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element("css selector", "select[data-filter=protocol]")).select_by_visible_text("linf-8-255-v1")
    assert browser.find_element("id", "count").text == "5 of 23 records"
    assert set(column(browser, "protocol")) == {"linf-8-255-v1"}
    assert sum("⚠" in v for v in column(browser, "AA")) == 1  # the flagged record is marked
    browser.find_element("id", "search").send_keys("HYDRA")
    assert browser.find_element("id", "count").text == "2 of 23 records" and set(column(browser, "AP")) == {"HYDRA"}
    Select(browser.find_element("css selector", "select[data-filter='Training of the final step']")
           ).select_by_visible_text("AT (PGD)")  # a taxonomy filter: RADMM and HARP? no: HYDRA trains with TRADES
    assert browser.find_element("id", "count").text == "0 of 23 records"
    browser.save_screenshot(str(SCREENSHOTS / "leaderboard-filtered.png"))
    browser.get(f"{origin}/index.html")
    wait_for(browser, "return document.querySelectorAll('#leaderboard tbody tr').length > 0")
    browser.save_screenshot(str(SCREENSHOTS / "leaderboard.png"))
    urls = requested_urls(browser)
    assert any(u.endswith("/data/rows.js") for u in urls)
    assert [u for u in urls if not u.startswith(origin + "/")] == []


def test_curve_comparison_plots_the_picked_models_and_reads_any_eps(site, browser):
    origin, out = site
    browser.get(f"{origin}/compare.html")
    wait_for(browser, "return document.querySelectorAll('#models option').length === 5")
    for name in ("HARP_Zhao2023Holistic_R18_CIFAR10_US_90", "HYDRA_Sehwag2020Hydra_R18_CIFAR10_US_95"):
        search = browser.find_element("id", "model-search")
        search.clear()
        search.send_keys(name)
        wait_for(browser, "return document.querySelectorAll('#models option').length === 1")
        browser.find_element("css selector", "#models option").click()
        browser.find_element("id", "add").click()
    wait_for(browser, "return document.getElementById('plot').data && document.getElementById('plot').data.length === 2")
    names = browser.execute_script("return document.getElementById('plot').data.map(t => t.name)")
    assert [n.split(" ")[0] for n in names] == ["HARP", "HYDRA"]
    curves = {}
    for key in ("linf-8-255-v1__CIFAR10_US_R18_90", "linf-8-255-v1__CIFAR10_US_R18_95"):
        text = (out / "data" / "curves" / f"{key}.js").read_text()
        curves.update(json.loads(text.split(" = ", 2)[-1].rstrip(";\n")))
    harp, hydra = curves["HARP_Zhao2023Holistic_R18_CIFAR10_US_90"], curves["HYDRA_Sehwag2020Hydra_R18_CIFAR10_US_95"]
    y = browser.execute_script("return document.getElementById('plot').data[0].y")
    assert y == pytest.approx([v / 100 for v in harp])
    browser.execute_script("const s = document.getElementById('eps'); s.value = 16; s.dispatchEvent(new Event('input'))")
    assert browser.find_element("id", "eps-label").text == "4/255"
    shown = [row.find_elements("tag name", "td")[3].text for row in browser.find_elements("css selector", "#picked tbody tr")]
    assert shown == [f"{harp[16] / 100:.2f}", f"{hydra[16] / 100:.2f}"]
    browser.save_screenshot(str(SCREENSHOTS / "compare.png"))
    assert [u for u in requested_urls(browser) if not u.startswith(origin + "/")] == []


def test_analysis_draws_a_panel_per_dimension_and_protocol(site, browser):
    origin, _ = site
    browser.get(f"{origin}/analysis.html")
    wait_for(browser, "return document.querySelectorAll('#analysis .panel .main-svg').length > 0")
    panels = browser.execute_script("return [...document.querySelectorAll('#analysis .panel')].map(p => p.data.length)")
    assert len(panels) == 2 * 6 and all(n == 1 for n in panels)  # 2 protocols x 6 dimensions, one dataset
    browser.save_screenshot(str(SCREENSHOTS / "analysis.png"))
    assert [u for u in requested_urls(browser) if not u.startswith(origin + "/")] == []
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
