"""The tracker plugin's registration, against a real Click group (the tracker's own CLI
is exercised in tests/tracker_plugin, which needs Python 3.12 and builds environments)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

click = pytest.importorskip("click")
from click.testing import CliRunner  # noqa: E402

from lattice_workers.plugin import COMMANDS, register  # noqa: E402


def _host() -> click.Group:
    @click.group()
    def cli() -> None:
        """A stand-in for lattice-tracker's group."""

    @cli.command("show")
    def show() -> None:
        click.echo("tracker show")

    return cli


def test_register_adds_our_groups_and_keeps_the_hosts_commands() -> None:
    cli = _host()
    register(cli)
    assert set(COMMANDS) <= set(cli.commands)
    assert CliRunner().invoke(cli, ["show"]).output == "tracker show\n"


def test_a_name_the_host_already_has_stays_the_hosts(capsys: pytest.CaptureFixture[str]) -> None:
    cli = _host()

    @cli.command("worker")
    def theirs() -> None:
        click.echo("their worker")

    register(cli)
    assert CliRunner().invoke(cli, ["worker"]).output == "their worker\n"
    assert "did not add `worker`" in capsys.readouterr().err


def test_words_pass_through_untouched_with_our_exit_code_and_envelope(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LATTICE_ROOT", raising=False)
    cli = _host()
    register(cli)
    result = CliRunner().invoke(cli, ["worker", "ps", "--json"])
    assert result.exit_code == 3  # no board here
    envelope = json.loads(result.output)
    assert envelope["ok"] is False and envelope["error"]["code"] == "NO_BOARD"
    usage = CliRunner().invoke(cli, ["worker", "run"])
    assert usage.exit_code == 2
    assert "lattice: worker run: the following arguments are required" in usage.output
