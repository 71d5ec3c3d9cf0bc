"""Terminal report: rich tables rendered at a fixed width, checked row by row."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from etlb.cli import cli
from etlb.report import load_report, render_report
from tests.conftest import PAYMENTS_CONFIG, World, build_world
from tests.report.scenario import Scenario, build_scenario


@pytest.fixture
def built(tmp_path: Path) -> tuple[World, Scenario]:
    world = build_world(tmp_path, PAYMENTS_CONFIG)
    yield world, build_scenario(world)
    world.gate.close()


def rendered(world: World, scenario: Scenario, **options: object) -> list[str]:
    console = Console(width=200, record=True, color_system=None, force_terminal=False)
    report = load_report(world.gate.store, now=scenario.now, **options)  # type: ignore[arg-type]
    console.print(render_report(report))
    text = console.export_text().replace("│", " ").replace("┃", " ")
    return [" ".join(line.split()) for line in text.splitlines()]


def test_heading_and_summary_rows(built: tuple[World, Scenario]) -> None:
    world, scenario = built
    lines = rendered(world, scenario)

    assert lines[0] == "etlb report of all bearers, at 2026-06-01T18:00:00.000Z, 17 ledger records"
    assert "no refusals pending" in lines
    assert "bearer name status bindings succeeded failed unknown outcome nearby requests" in lines
    assert "alice Alice active 3 1 1 0 1 2 1" in lines
    assert "bob Bob active 1 1 0 0 0 0 0" in lines


def test_budget_rows(built: tuple[World, Scenario]) -> None:
    world, scenario = built
    lines = rendered(world, scenario)
    scope = scenario.alice_scope

    assert f"{scope} active executions 3 5 60%" in lines
    assert f"{scope} active total 14000 EUR 20000 EUR 70%" in lines
    assert f"{scope} active largest action 9000 EUR 10000 EUR 90%" in lines
    assert f"{scope} active executions per 24h 3 3 100%" in lines
    assert f"{scope} active amount per 24h 14000 EUR 15000 EUR 93%" in lines
    assert f"{scenario.bob_scope} active no caps" in lines


def test_binding_refusal_and_request_rows(built: tuple[World, Scenario]) -> None:
    world, scenario = built
    lines = rendered(world, scenario)
    first, second, third, commit = scenario.bindings

    assert f"2026-06-01T12:00:00.000Z payments.transfer account:DE01 9000 EUR agent-1 succeeded {first.id}" in lines
    assert f"2026-06-01T13:00:00.000Z payments.transfer account:DE01 4000 EUR agent-1 failed {second.id}" in lines
    assert f"2026-06-01T15:00:00.000Z payments.transfer account:DE01 1000 EUR agent-1 no outcome {third.id}" in lines
    assert f"2026-06-01T17:00:00.000Z git.commit repo:/srv/app agent-1 succeeded {commit.id}" in lines
    assert (
        f"2026-06-01T14:00:00.000Z payments.transfer account:DE01 25000 EUR {scenario.alice_scope} "
        "amount_exceeds_scope cap 10000 EUR per action is below 25000 EUR"
    ) in lines
    assert "request-pending payments.transfer account:DE01 12000 EUR agent-1 2026-06-01T20:00:00.000Z" in lines


def test_bearer_filter_shows_one(built: tuple[World, Scenario]) -> None:
    world, scenario = built
    lines = rendered(world, scenario, bearer="bob")

    assert lines[0] == "etlb report of bearer bob, at 2026-06-01T18:00:00.000Z, 17 ledger records"
    assert "bob (Bob), active" in lines
    assert not any(line.startswith("alice") for line in lines)


def test_cli_prints_tables(built: tuple[World, Scenario], tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--config", str(tmp_path / "etlb.toml"), "report", "--bearer", "bob"])

    assert result.exit_code == 0, result.output
    assert "etlb report of bearer bob" in result.output
    assert "git.commit" in result.output
    assert "alice" not in result.output


def test_cli_html_to_missing_folder(built: tuple[World, Scenario], tmp_path: Path) -> None:
    target = tmp_path / "missing" / "report.html"

    result = CliRunner().invoke(cli, ["--config", str(tmp_path / "etlb.toml"), "report", "--html", str(target)])

    assert result.exit_code == 1
    assert f"cannot write the HTML report to {target}: No such file or directory" in result.output
