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
import re
import shutil
import threading
from pathlib import Path

import pytest

from evaluator.site import build_site
from tests.support.leaderboard_repo import THREE_APS, add_evaluated, efficiency, flags_result, make_repo

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
    yield from serve(out)


def serve(out: Path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(out)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", out
    server.shutdown()


@pytest.fixture(scope="module")
def ranked_site(tmp_path_factory):
    """Three APs evaluated in CIFAR10 US ResNet18 90/95/99% with constructed per-sample flags: HARP is 3 of 30,000
    samples ahead of HYDRA (not significant: one rank group), RADMM 500 per cell behind (rank 3)."""
    tmp = tmp_path_factory.mktemp("ranked")
    root = make_repo(tmp)
    for ap, robust in zip(THREE_APS, (3001, 3000, 2500)):
        for sparsity in (90, 95, 99):
            add_evaluated(root, f"{ap}_R18_CIFAR10_US_{sparsity}", flags=ap == THREE_APS[2] and sparsity == 99,
                          per_sample=flags_result(10_000, robust))
    out = tmp / "site"
    build_site(root, out, source_url="https://github.com/OWNER/REPO/blob/0123abc")
    yield from serve(out)


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


@pytest.fixture(autouse=True)
def own_logs(request):
    """Each test sees only the requests and console messages of its own pages (the browser is shared)."""
    if "browser" in request.fixturenames:
        driver = request.getfixturevalue("browser")
        driver.get_log("performance"), driver.get_log("browser")


def requested_urls(driver) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def wait_for(driver, script: str, timeout: float = 10.0, poll: float = 0.5):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=poll).until(lambda d: d.execute_script(script))


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
    assert not browser.find_element("css selector", "#leaderboard tbody .model").is_displayed()  # wide: own columns
    aa = [float(v.rstrip(" ⚠").split(" ±")[0]) for v in column(browser, "AA")]
    assert sum("±" in v for v in column(browser, "AA")) == 23  # every record shows its interval, published too
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


def test_a_curve_that_cannot_be_loaded_is_said_not_dropped_silently(site, browser, tmp_path):
    """A column's curves come in their own file when a model of it is picked; when that file cannot be loaded
    (a dropped connection, a half-deployed site), the picker says so instead of doing nothing."""
    _, out = site
    broken = tmp_path / "site"
    shutil.copytree(out, broken)
    (broken / "data" / "curves" / "linf-8-255-v1__CIFAR10_US_R18_90.js").unlink()
    server = serve(broken)
    origin, _ = next(server)
    try:
        browser.get(f"{origin}/compare.html")
        wait_for(browser, "return document.querySelectorAll('#models option').length === 5")
        search = browser.find_element("id", "model-search")
        search.send_keys("HARP_Zhao2023Holistic_R18_CIFAR10_US_90")
        wait_for(browser, "return document.querySelectorAll('#models option').length === 1")
        browser.find_element("css selector", "#models option").click()
        browser.find_element("id", "add").click()
        wait_for(browser, "return document.getElementById('picker-note').textContent.includes('could not be loaded')")
        assert "linf-8-255-v1__CIFAR10_US_R18_90.js" in browser.find_element("id", "picker-note").text
        assert browser.find_element("id", "picked-empty").is_displayed()
    finally:
        next(server, None)


def test_a_site_without_curves_says_so_instead_of_an_empty_picker_and_plot(tmp_path, browser):
    """The repository as it stands holds only published records, none with distances: the compare page shows
    why there is nothing to compare, not an empty list, an empty plot and a slider."""
    root = make_repo(tmp_path)
    out = tmp_path / "site"
    build_site(root, out)
    server = serve(out)
    origin, _ = next(server)
    try:
        browser.get(f"{origin}/compare.html")
        wait_for(browser, "return document.getElementById('picker-note').textContent.length > 0")
        assert browser.find_element("id", "picker-note").text.startswith("No model has a security curve yet")
        for selector in (".picker", "#plot", "#eps", "#picked-empty", "#picked"):
            assert not browser.find_element("css selector", selector).is_displayed(), selector
        assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
    finally:
        next(server, None)


def test_curve_legends_fit_their_figure_whatever_the_name_length(tmp_path, browser):
    """An AP's display name may have 40 characters; in a figure's legend (and in Chromium's own text metrics) it
    is shortened to fit instead of running off the figure's right edge, where nothing shows it."""
    from evaluator.cli import main

    root = make_repo(tmp_path)
    harp, hydra, radmm = THREE_APS
    entry = root / "submissions" / harp / "taxonomy.json"
    data = json.loads(entry.read_text())
    data["name"] = "Holistic Adversarially Robust Pruning 23"  # 40 characters, as the schema allows
    entry.write_text(json.dumps(data, indent=2) + "\n")
    longest = "W" + "M" * 57 + "_Wolfeschlegelste" + "1999M"  # an ap_key of 80 characters, as the schema allows
    (root / "submissions" / longest / "records").mkdir(parents=True)
    (root / "submissions" / longest / "taxonomy.json").write_text(json.dumps(dict(data, ap_key=longest)))
    for i, ap in enumerate((harp, hydra, radmm, longest)):
        add_evaluated(root, f"{ap}_R18_CIFAR10_US_90", seed=i, scale=0.05 - 0.01 * i, flags=False)
    assert main(["leaderboard", "--root", str(root)]) == 0
    figures = [root / "leaderboard/curves/linf-8-255-v1/CIFAR10_US_R18_90.svg",
               root / f"leaderboard/curves/models/{harp}/{harp}_R18_CIFAR10_US_90__linf-8-255-v1.svg",
               root / f"leaderboard/curves/models/{longest}/{longest}_R18_CIFAR10_US_90__linf-8-255-v1.svg"]
    for figure in figures:
        browser.get(figure.as_uri())
        overflow = browser.execute_script(
            "const width = document.querySelector('svg').viewBox.baseVal.width;"
            "return [...document.querySelectorAll('text')].map(t => [t.textContent, t.getBBox().x + t.getBBox().width])"
            ".filter(([, right]) => right > width);")
        assert overflow == [], (figure.name, overflow)
        outside = browser.execute_script(  # drawn boxes (rotated axis titles included) left of the figure
            "const left = document.querySelector('svg').getBoundingClientRect().left;"
            "return [...document.querySelectorAll('text')].filter(t => t.getBoundingClientRect().left < left)"
            ".map(t => t.textContent);")
        assert outside == [], (figure.name, outside)
        assert re.search(r">#\d+ Holistic [^<]*… – \d+\.\d\d%<", figure.read_text())  # its rank and value kept
    # the 80-character AP key gives way in the title, in its middle: the model's column and the protocol stay
    assert re.search(r">WM+…[A-Za-z0-9]*_R18_CIFAR10_US_90 · linf-8-255-v1 \(samples 0–9999\)</text>",
                     figures[2].read_text())


def test_analysis_draws_a_panel_per_dimension_and_protocol(site, browser):
    origin, _ = site
    browser.get(f"{origin}/analysis.html")
    wait_for(browser, "return document.querySelectorAll('#analysis .panel .main-svg').length > 0")
    # Panels draw as they are scrolled to, so scroll as a reader does: to each panel, until it is drawn. (Scrolled
    # past between two frames, a panel is never seen and waits until it is scrolled back to.)
    for index in range(browser.execute_script("return document.querySelectorAll('#analysis .panel').length")):
        panel = f"document.querySelectorAll('#analysis .panel')[{index}]"
        browser.execute_script(f"{panel}.scrollIntoView()")
        wait_for(browser, f"return Boolean({panel}.data)", poll=0.05)
    panels = browser.execute_script("return [...document.querySelectorAll('#analysis .panel')].map(p => p.data.length)")
    assert len(panels) == 2 * 6 and all(n == 1 for n in panels)  # 2 protocols x 6 dimensions, one dataset
    browser.save_screenshot(str(SCREENSHOTS / "analysis.png"))
    urls = requested_urls(browser)
    assert not any(u.endswith("/data/rows.js") for u in urls)  # the page does not load the rows it does not use
    assert [u for u in urls if not u.startswith(origin + "/")] == []
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []


def ranking(browser, group: str) -> list[tuple[str, str, str, str]]:
    """(#, AP, mean, p) of each row of a group's ranking table on the index page."""
    rows = browser.find_elements("css selector", f"section.ranking[data-group='{group}'] tbody tr")
    found = []
    for row in rows:
        cells = [td.text for td in row.find_elements("tag name", "td")]
        found.append((cells[0], cells[1], cells[2], cells[4]))
    return found


def test_rankings_show_rank_groups_per_dataset_and_structure_in_the_readme_order(ranked_site, browser):
    from selenium.webdriver.support.ui import Select

    origin, out = ranked_site
    browser.set_window_size(1400, 1000)
    browser.get(f"{origin}/index.html")
    wait_for(browser, "return document.querySelectorAll('section.ranking tbody tr').length > 0")
    groups = [s.get_attribute("data-group") for s in browser.find_elements("css selector", "section.ranking")]
    assert groups == ["CIFAR10-US"]
    choice = Select(browser.find_element("css selector", "section.ranking select"))
    assert [o.text for o in choice.options] == [
        "AutoAttack, protocol linf-8-255-v1", "HO-FMN, protocol linf-8-255-v1",
        "Worst case (AutoAttack and HO-FMN), protocol linf-8-255-v1", "Published (arXiv:2409.01249)"]
    rows = ranking(browser, "CIFAR10-US")
    assert [(rank, ap) for rank, ap, _, _ in rows] == [("1", "HARP"), ("1", "HYDRA"), ("3", "RADMM")]
    assert rows[1][3] == "0.250" and rows[2][3] == "<0.001"  # 3 discordant samples: p = 2/8; 1,500: ~0
    browser.save_screenshot(str(SCREENSHOTS / "rankings-desktop-1400.png"))
    choice.select_by_index(3)  # the published table: no per-sample data, ranked by mean, no p
    published = ranking(browser, "CIFAR10-US")
    assert [rank for rank, _, _, _ in published] == ["1", "2", "3"] and {p for *_, p in published} == {""}
    assert "rank-CIFAR10-US=3" in browser.execute_script("return location.hash")
    browser.refresh()  # the address keeps the chosen table
    wait_for(browser, "return document.querySelectorAll('section.ranking tbody tr').length > 0")
    assert ranking(browser, "CIFAR10-US") == published
    footer = {a.text: a.get_attribute("href") for a in browser.find_elements("css selector", "footer a")}
    assert footer["Repository"] == "https://github.com/OWNER/REPO"
    assert footer["How ranks and flags are made"] == "https://github.com/OWNER/REPO/blob/0123abc/docs/leaderboard.md#tables"
    assert {"Paper (arXiv:2409.01249)", "Citation", "Contributing"} <= set(footer)


def test_phone_width_never_scrolls_the_page_sideways_and_key_numbers_are_on_screen(ranked_site, browser):
    origin, _ = ranked_site
    browser.set_window_size(390, 844)
    try:
        for name in ("index.html", "compare.html", "analysis.html"):
            browser.get(f"{origin}/{name}")
            wait_for(browser, "return document.readyState === 'complete'")
            width = browser.execute_script("return [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
            assert width[0] <= width[1], (name, width)
            if name == "index.html":
                wait_for(browser, "return document.querySelectorAll('section.ranking tbody tr').length > 0")
                right = browser.execute_script(
                    "const cells = document.querySelector('section.ranking tbody tr').children;"
                    "return [cells[0].getBoundingClientRect().right, cells[2].getBoundingClientRect().right]")
                assert max(right) <= width[1]  # rank and mean visible without scrolling
                browser.save_screenshot(str(SCREENSHOTS / "rankings-phone-390.png"))
                wait_for(browser, "return document.querySelectorAll('#leaderboard tbody tr').length > 0")
                titles = [th.text.rstrip(" ▲▼") for th in browser.find_elements("css selector", "#leaderboard th")]
                key = [titles.index(title) for title in ("AP", "clean", "AA")]
                right = browser.execute_script(  # every records table row: its AP and key numbers on screen
                    "const cells = document.querySelector('#leaderboard tbody tr').children;"
                    "return arguments[0].map(i => cells[i].getBoundingClientRect().right)", key)
                assert max(right) <= width[1], dict(zip(("AP", "clean", "AA"), right))
                line = browser.find_element("css selector", "#leaderboard tbody tr td .model")
                assert line.is_displayed() and "CIFAR10 US · resnet18" in line.text  # which model, on screen too
    finally:
        browser.set_window_size(1400, 1000)


def test_headers_sort_from_the_keyboard_and_flags_say_why_as_text(ranked_site, browser):
    from selenium.webdriver.common.keys import Keys

    origin, _ = ranked_site
    browser.get(f"{origin}/index.html")
    wait_for(browser, "return document.querySelectorAll('#leaderboard tbody tr').length > 0")
    button = browser.find_element("xpath", "//table[@id='leaderboard']//th/button[text()='clean']")
    header = button.find_element("xpath", "..")
    assert button.get_attribute("tabIndex") == "0" and header.get_attribute("aria-sort") is None
    button.send_keys(Keys.ENTER)
    assert header.get_attribute("aria-sort") == "descending"
    button.send_keys(Keys.SPACE)
    assert header.get_attribute("aria-sort") == "ascending"
    assert "sort=clean&order=asc" in browser.execute_script("return location.hash")  # by name: columns may move
    assert "⚠ hofmn-no-adversarial" in column(browser, "flags")  # the reason as visible text, not a tooltip


def test_filters_and_comparisons_live_in_the_address(ranked_site, browser):
    from selenium.webdriver.support.ui import Select

    origin, _ = ranked_site
    browser.get(f"{origin}/index.html")
    wait_for(browser, "return document.querySelectorAll('#leaderboard tbody tr').length > 0")
    Select(browser.find_element("css selector", "select[data-filter=protocol]")).select_by_visible_text("linf-8-255-v1")
    browser.find_element("id", "search").send_keys("HYDRA")
    address = browser.current_url
    assert "f.protocol=linf-8-255-v1" in address and "q=hydra" in address
    browser.get("about:blank")
    browser.get(address)
    wait_for(browser, "return document.querySelectorAll('#leaderboard tbody tr').length > 0")
    assert browser.find_element("id", "count").text == "3 of 27 records"
    assert browser.find_element("id", "search").get_attribute("value") == "hydra"
    browser.get(f"{origin}/compare.html")
    wait_for(browser, "return document.querySelectorAll('#models option').length > 0")
    assert browser.find_element("id", "picked-empty").is_displayed()  # says why the table is empty
    assert "of 9 models with curves match" in browser.find_element("id", "picker-note").text
    browser.find_element("css selector", "#models option").click()
    browser.find_element("id", "add").click()
    wait_for(browser, "return document.querySelectorAll('#picked tbody tr').length === 1")
    address = browser.current_url
    assert "models=" in address and not browser.find_element("id", "picked-empty").is_displayed()
    link = browser.find_element("css selector", "#picked tbody a").get_attribute("href")
    assert link.startswith("https://github.com/OWNER/REPO/blob/0123abc/leaderboard/models/") and link.endswith(".md")
    assert link.split("/")[-2] == link.split("/")[-1].split("_R18")[0]  # the page in its AP's folder
    browser.get("about:blank")
    browser.get(address)
    wait_for(browser, "return document.querySelectorAll('#picked tbody tr').length === 1")


@pytest.mark.parametrize("address", ["sort=1.5&order=sideways&page=2.5", "sort=-0&page=-3", "sort=1e9&page=abc",
                                     "sort=0x2&page=Infinity&f.protocol=nope&rank-CIFAR10-US=9",
                                     "sort=__proto__&page=1", "sort=length&order=asc", "sort=clean&page=99"])
def test_a_hand_edited_address_still_shows_the_table(ranked_site, browser, address):
    """Addresses are shared and edited by hand: a sort, order or page the page never writes falls back to the
    default view; it never breaks the table."""
    origin, _ = ranked_site
    browser.get("about:blank")
    browser.get(f"{origin}/index.html#{address}")
    wait_for(browser, "return document.readyState === 'complete'")
    wait_for(browser, "return document.querySelectorAll('#leaderboard tbody tr').length > 0")
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
    sorted_by = browser.execute_script("return [...document.querySelectorAll('#leaderboard th[aria-sort]')].length")
    assert sorted_by == 1


def test_analysis_draws_within_3_s_at_1000_aps(site, browser, tmp_path):
    """The analysis page of 1,000 APs (24 cells each, 6 dimensions x 2 protocols: 288,000 cells in its panels, as
    `apb site` writes them) shows its first panel within 3 s: box statistics instead of the points, panels drawn
    as they scroll into view, no rows.js."""
    import random
    import time

    from evaluator.site import analysis_panel, js_data

    _, out = site
    big = tmp_path / "site"
    shutil.copytree(out, big, ignore=shutil.ignore_patterns("curves"))
    analysis = json.loads((out / "data" / "analysis.js").read_text().split(" = ", 1)[1].rstrip(";\n"))
    rng = random.Random(0)
    panels = [analysis_panel(dimension, protocol, {(f"value {v}", dataset): [round(rng.uniform(0, 60), 2)
                                                                              for _ in range(3000)]
                                                    for v in range(4) for dataset in ("CIFAR10", "SVHN")})
              for dimension in sorted({panel["dimension"] for panel in analysis["panels"]})
              for protocol in ("linf-8-255-v1", "published-2024")]
    assert sum(s["n"] for panel in panels for *_, s in panel["summary"]) == 1000 * 24 * len(panels)
    data = {"datasets": ["CIFAR10", "SVHN"], "panels": panels, "tables": analysis["tables"]}
    (big / "data" / "analysis.js").write_text(js_data("APB_ANALYSIS", data))
    assert (big / "data" / "analysis.js").stat().st_size < 100_000
    (big / "data" / "rows.js").unlink()  # the page must not need it
    server = serve(big)
    origin, _ = next(server)
    try:
        browser.get("about:blank")
        started = time.perf_counter()
        browser.get(f"{origin}/analysis.html")
        wait_for(browser, "return document.querySelectorAll('#analysis .panel .main-svg').length > 0", poll=0.02)
        elapsed = time.perf_counter() - started
        browser.save_screenshot(str(SCREENSHOTS / "analysis-1000-aps.png"))
        drawn = browser.execute_script("return [...document.querySelectorAll('#analysis .panel')].map(p => p.dataset.drawn || '')")
        assert drawn[0] == "boxes" and drawn.count("") > len(drawn) // 2  # boxes only; the rest wait to be seen
        first = browser.execute_script("return document.querySelector('#analysis .panel').data[0]")
        assert first["median"] == [s["median"] for value, dataset, s in panels[0]["summary"] if dataset == "CIFAR10"]
        assert elapsed < 3.0, f"{elapsed:.1f} s"
        assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
    finally:
        next(server, None)


def test_readme_figures_are_half_the_github_column_two_to_a_line(tmp_path, browser):
    """The README's curve and efficiency figures, laid out as GitHub lays out a Markdown paragraph of images
    (a 1,012 px column with 32 px padding on a desktop, 16 px on a 390 px phone; each image wrapped in a link to
    itself and capped at max-width 100%, as GitHub serves them): each is half the column, so a legend stays
    legible, and they pair up two to a line (49% with a space between used 98%; 50% with a space would not
    fit)."""
    from evaluator.cli import main

    root = make_repo(tmp_path)
    for i, (ap, sparsity) in enumerate([(ap, s) for ap in THREE_APS for s in (90, 95, 99)]):
        add_evaluated(root, f"{ap}_R18_CIFAR10_US_{sparsity}", seed=i, efficiency=efficiency(50_000_000 * (i + 1)))
    assert main(["leaderboard", "--root", str(root)]) == 0
    readme = (root / "leaderboard" / "README.md").read_text()
    blocks = [block for block in readme.split("\n\n") if block.startswith("<img")]
    assert len(blocks) == 2 and blocks[0].count("<img") == 3  # the curves of three columns; the efficiency figure
    page = root / "leaderboard" / "github.html"
    for width, padding in ((1400, 32), (390, 16)):
        page.write_text(f"<!doctype html><meta name=viewport content='width=device-width'><style>body{{margin:0}}"
                        f"article{{max-width:1012px;margin:0 auto;padding:{padding}px;box-sizing:border-box}}"
                        f"img{{max-width:100%;box-sizing:content-box}}</style><article>"
                        + "".join("<p>" + re.sub(r'(<img src="([^"]+)"[^>]*>)', r'<a target="_blank" href="\2">\1</a>',
                                                 block) + "</p>" for block in blocks) + "</article>")
        browser.set_window_size(width, 900)
        browser.get(page.as_uri())
        wait_for(browser, "return [...document.images].every(i => i.complete && i.naturalWidth > 0)")
        for block in browser.execute_script(
                "return [...document.querySelectorAll('p')].map(p => [p.clientWidth, [...p.querySelectorAll('img')]"
                ".map(i => [i.getBoundingClientRect().width, Math.round(i.getBoundingClientRect().top)])])"):
            column, images = block
            assert all(w >= column / 2 - 0.5 for w, _ in images), (width, column, images)
            tops = [top for _, top in images]  # a line's images share their top
            per_line = [tops.count(top) for top in dict.fromkeys(tops)]
            assert per_line == [2] * (len(tops) // 2) + [1] * (len(tops) % 2), (width, images)
    browser.set_window_size(1400, 1000)
