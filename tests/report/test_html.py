"""HTML report: the page in headless Chromium, its elements, and a screenshot read pixel by pixel."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image
from playwright.sync_api import Page

from etlb.cli import cli
from etlb.report import build_report, load_report, render_html
from tests.browser import VIEWPORT_HEIGHT, VIEWPORT_WIDTH
from tests.conftest import PAYMENTS_CONFIG, START, World, build_world
from tests.report.scenario import Scenario, build_scenario

# Fill colours of the page's stylesheet, as RGB.
BAR_BLUE = (0x34, 0x61, 0xC1)
BUDGET_RED = (0xC9, 0x3C, 0x37)
BUDGET_GREEN = (0x2F, 0x9E, 0x5B)


@pytest.fixture
def built(tmp_path: Path) -> Iterator[tuple[World, Scenario]]:
    world = build_world(tmp_path, PAYMENTS_CONFIG)
    yield world, build_scenario(world)
    world.gate.close()


@pytest.fixture
def page_file(built: tuple[World, Scenario], tmp_path: Path) -> Path:
    world, scenario = built
    path = tmp_path / "report.html"
    path.write_text(render_html(load_report(world.gate.store, now=scenario.now)), encoding="utf-8")
    return path


def open_page(page: Page, path: Path) -> list[str]:
    """Open the page and return every URL it requested, to prove that it loads nothing else."""
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    return requested


def pixel(image: Image.Image, box: dict[str, float]) -> tuple[int, int, int]:
    x = int(box["x"] + box["width"] / 2)
    y = int(box["y"] + box["height"] / 2)
    red, green, blue = image.getpixel((x, y))[:3]
    return red, green, blue


def test_page_loads_nothing_external(browser_page: Page, page_file: Path) -> None:
    requested = open_page(browser_page, page_file)

    assert requested == [page_file.as_uri()]
    assert browser_page.title() == "etlb report of all bearers"


def test_timeline_chart_bars(browser_page: Page, page_file: Path) -> None:
    open_page(browser_page, page_file)
    chart = browser_page.locator("svg#bindings-over-time")
    bars = chart.locator("rect.bar")

    assert chart.is_visible()
    assert bars.count() == 6
    assert [bars.nth(index).get_attribute("data-count") for index in range(6)] == ["1", "1", "0", "1", "0", "1"]
    assert bars.nth(0).get_attribute("data-start") == "2026-06-01T12:00:00.000Z"
    assert bars.nth(0).bounding_box()["height"] == pytest.approx(194, abs=1)
    assert bars.nth(2).bounding_box()["height"] == 0


def test_budget_chart_bars(browser_page: Page, page_file: Path, built: tuple[World, Scenario]) -> None:
    _, scenario = built
    open_page(browser_page, page_file)
    bars = browser_page.locator("svg#budget-use rect.budget-bar")

    assert bars.count() == 5
    caps = [bars.nth(index).get_attribute("data-cap") for index in range(5)]
    assert caps == ["executions", "total", "largest action", "executions per 24h", "amount per 24h"]
    fractions = [bars.nth(index).get_attribute("data-fraction") for index in range(5)]
    assert fractions == ["0.6000", "0.7000", "0.9000", "1.0000", "0.9333"]
    assert {bars.nth(index).get_attribute("data-scope") for index in range(5)} == {scenario.alice_scope}
    assert bars.nth(3).get_attribute("class") == "budget-bar full"


def test_tables_show_exact_values(browser_page: Page, page_file: Path, built: tuple[World, Scenario]) -> None:
    _, scenario = built
    open_page(browser_page, page_file)

    alice_row = browser_page.locator('table#bearers tr[data-bearer="alice"] td')
    assert alice_row.all_inner_texts() == ["alice", "Alice", "active", "3", "1", "1", "0", "1", "2", "1"]
    section = browser_page.locator('section.bearer[data-bearer="alice"]')
    assert section.is_visible()
    budget_rows = section.locator("table.budget tr[data-scope]")
    assert budget_rows.count() == 5
    assert budget_rows.nth(1).locator("td").all_inner_texts() == [
        scenario.alice_scope,
        "active",
        "total",
        "14000 EUR",
        "20000 EUR",
        "70%",
    ]
    first = scenario.bindings[0]
    assert section.locator(f'table.bindings tr[data-binding="{first.id}"] td').all_inner_texts() == [
        "2026-06-01T12:00:00.000Z",
        "payments.transfer",
        "account:DE01",
        "9000 EUR",
        "agent-1",
        "succeeded",
        first.id,
    ]
    assert section.locator("table.refusals tr").count() == 3
    assert section.locator('table.pending tr[data-request="request-pending"] td').all_inner_texts()[-1] == (
        "2026-06-01T20:00:00.000Z"
    )
    bob = browser_page.locator('section.bearer[data-bearer="bob"]')
    assert bob.locator("table.refusals").count() == 0


def test_screenshot_shows_charts(browser_page: Page, page_file: Path) -> None:
    open_page(browser_page, page_file)
    png = browser_page.screenshot()
    image = Image.open(io.BytesIO(png)).convert("RGB")

    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert image.size == (VIEWPORT_WIDTH, VIEWPORT_HEIGHT)
    timeline = browser_page.locator("svg#bindings-over-time").bounding_box()
    area = image.crop(
        (
            int(timeline["x"]),
            int(timeline["y"]),
            int(timeline["x"] + timeline["width"]),
            int(timeline["y"] + timeline["height"]),
        )
    )
    colours = area.getcolors(maxcolors=1_000_000)
    assert colours is not None
    assert len(colours) > 10
    assert pixel(image, browser_page.locator("svg#bindings-over-time rect.bar").nth(0).bounding_box()) == BAR_BLUE
    budget = browser_page.locator("svg#budget-use rect.budget-bar")
    assert pixel(image, budget.nth(0).bounding_box()) == BUDGET_GREEN
    assert pixel(image, budget.nth(3).bounding_box()) == BUDGET_RED


def test_values_are_escaped(browser_page: Page, tmp_path: Path) -> None:
    records = [
        {
            "v": 1,
            "seq": 0,
            "type": "bearer.registered",
            "time": "2026-06-01T12:00:00.000Z",
            "data": {
                "bearer": {"id": "mallory", "name": "<img src=x onerror=alert(1)>", "keys": [], "status": "active"}
            },
        }
    ]
    path = tmp_path / "escaped.html"
    path.write_text(render_html(build_report(records, now=START)), encoding="utf-8")

    requested = open_page(browser_page, path)

    assert requested == [path.as_uri()]
    assert browser_page.locator("img").count() == 0
    cells = browser_page.locator('table#bearers tr[data-bearer="mallory"] td').all_inner_texts()
    assert cells[1] == "<img src=x onerror=alert(1)>"
    assert browser_page.locator("#bindings-over-time-empty").is_visible()
    assert browser_page.locator("#budget-use-empty").is_visible()


def test_cli_writes_html_and_json(built: tuple[World, Scenario], tmp_path: Path, browser_page: Page) -> None:
    config = str(tmp_path / "etlb.toml")
    output = tmp_path / "cli-report.html"
    runner = CliRunner()

    written = runner.invoke(cli, ["--config", config, "report", "--bearer", "alice", "--html", str(output)])
    printed = runner.invoke(cli, ["--config", config, "report", "--json", "--until", "2026-06-01T14:00:00Z"])
    unknown = runner.invoke(cli, ["--config", config, "report", "--bearer", "nobody"])

    assert written.exit_code == 0, written.output
    open_page(browser_page, output)
    assert browser_page.locator("section.bearer").count() == 1
    assert browser_page.locator("svg#bindings-over-time rect.bar").count() == 4
    assert printed.exit_code == 0, printed.output
    data = json.loads(printed.output)
    assert [len(bearer["bindings"]) for bearer in data["bearers"]] == [2, 0]
    assert data["until"] == "2026-06-01T14:00:00.000Z"
    assert unknown.exit_code == 1
    assert "bearer nobody has no record in the ledger" in unknown.output
