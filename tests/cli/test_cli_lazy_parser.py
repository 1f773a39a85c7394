"""A command line builds only its own command's parsers and loads only what it uses.

``lattice worker ps`` must start fast, so the parser is narrowed to the modules that
own the command; help, usage errors and "invalid choice" must read exactly as with
every command built. The import checks run a real command against a real supervisor.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lattice_workers.cli import _app
from lattice_workers.cli._app import COMMAND_MODULES, build_parser, modules_for
from tests.e2e.conftest import Project, make_project, stop_everything

ALL_MODULES = list(COMMAND_MODULES)
ALL_NAMES = sorted({name for names in COMMAND_MODULES.values() for name in names})


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The subcommand parsers of ``parser`` by name (empty for a leaf command)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def help_tree(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Every help text under ``parser``, by command path."""
    tree = {parser.prog: parser.format_help()}
    for sub in subcommands(parser).values():
        tree.update(help_tree(sub))
    return tree


# -- the table and the narrowing rule ---------------------------------------------------------


def test_the_command_table_names_what_each_module_registers() -> None:
    for module_name, names in COMMAND_MODULES.items():
        commands = argparse.ArgumentParser().add_subparsers()
        _app._GROUPS.clear()
        importlib.import_module(module_name).register(commands)
        assert tuple(commands.choices) == names, module_name
    _app._GROUPS.clear()


def test_a_known_command_needs_only_the_modules_that_own_it() -> None:
    assert modules_for(["worker", "ps"]) == [
        "lattice_workers.cli.worker_defs",
        "lattice_workers.cli.worker",
        "lattice_workers.cli.work",
    ]
    assert modules_for(["--json", "--json", "worker", "ps"]) == modules_for(["worker"])
    assert modules_for(["list", "--json"]) == ["lattice_workers.cli.board"]
    assert modules_for(["supervisor", "status"]) == ["lattice_workers.cli.supervisor"]


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--help"],
        ["-h", "worker"],
        ["--he", "worker"],
        ["wrker", "ps"],
        ["--", "worker"],
        ["--json"],
        ["ps"],
    ],
)
def test_anything_but_a_known_command_first_needs_every_module(argv: list[str]) -> None:
    assert modules_for(argv) == ALL_MODULES


@pytest.mark.parametrize("name", ALL_NAMES)
def test_a_narrowed_parser_has_the_same_commands_below_its_name(name: str) -> None:
    narrowed = subcommands(build_parser([name]))
    full = subcommands(build_parser())
    assert set(narrowed) <= set(full) and name in narrowed
    assert help_tree(narrowed[name]) == help_tree(full[name])


# -- the real command: help and errors read as before -----------------------------------------


def lattice(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real command, 200 columns wide so that no help line wraps."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LATTICE_")}
    return subprocess.run(
        [sys.executable, "-m", "lattice_workers", *args],
        cwd=cwd,
        env={**env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_top_level_help_lists_every_command(tmp_path: Path) -> None:
    for args in (["--help"], ["-h", "worker"], ["--help", "worker", "ps"]):
        proc = lattice(*args, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        listed = {line.split()[0] for line in proc.stdout.splitlines() if line.startswith("    ")}
        assert set(ALL_NAMES) <= listed, args


def test_a_mistyped_command_is_refused_naming_every_command(tmp_path: Path) -> None:
    proc = lattice("wrker", "ps", cwd=tmp_path)
    assert proc.returncode == 2
    in_order = dict.fromkeys(name for names in COMMAND_MODULES.values() for name in names)
    choices = ", ".join(f"'{name}'" for name in in_order)
    assert proc.stderr == (
        f"lattice-workers: argument COMMAND: invalid choice: 'wrker' (choose from {choices})\n"
    )
    as_json = lattice("--json", "wrker", cwd=tmp_path)
    assert as_json.returncode == 2
    assert json.loads(as_json.stdout)["error"]["code"] == "INVALID_ARGUMENT"


def test_worker_help_lists_the_commands_of_both_worker_modules(tmp_path: Path) -> None:
    proc = lattice("worker", "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    listed = [line.split()[0] for line in proc.stdout.splitlines() if line.startswith("    ")]
    assert listed == [
        "list", "check", "init", "run", "ps", "show", "logs", "wait", "cancel",
        "diff", "apply", "merge", "discard",
    ]


def test_a_mistyped_worker_command_names_the_commands_of_both_modules(tmp_path: Path) -> None:
    proc = lattice("worker", "pss", cwd=tmp_path)
    assert proc.returncode == 2
    assert "invalid choice: 'pss'" in proc.stderr
    assert "'check'" in proc.stderr and "'cancel'" in proc.stderr


@pytest.mark.parametrize("columns", [None, "40", "100", "0", "-3", "wide"])
def test_help_is_as_wide_as_shutil_says(
    monkeypatch: pytest.MonkeyPatch, columns: str | None
) -> None:
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    assert _app._columns() == shutil.get_terminal_size().columns

    def sample(formatter_class: type[argparse.HelpFormatter]) -> str:
        parser = argparse.ArgumentParser(
            prog="lattice", description="word " * 30, formatter_class=formatter_class
        )
        parser.add_argument("--a-long-option-name", metavar="VALUE", help="text " * 20)
        return parser.format_help()

    assert sample(_app._Formatter) == sample(argparse.HelpFormatter)


# -- the real command: what a client command loads -------------------------------------------

PROBE = (
    "import contextlib, io, sys\n"
    "from lattice_workers.cli._app import main\n"
    "with contextlib.redirect_stdout(io.StringIO()):\n"
    "    code = main(sys.argv[1:])\n"
    "print(code, ' '.join(sorted(sys.modules)))\n"
)
#: What a client of a running supervisor never needs.
NOT_FOR_A_CLIENT = (
    "subprocess",
    "shutil",
    "trio",
    "lattice_workers.store._write",
    "lattice_workers.cli.board",
    "lattice_workers.cli.supervisor",
)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    project = make_project(tmp_path_factory.mktemp("lazy"))
    try:
        project.write_worker("Noop", command="true", worktree=False)
        project.cli("supervisor", "start")
        yield project
    finally:
        stop_everything(project)


def loaded_by(project: Project, *args: str) -> set[str]:
    env = dict(project.env, LATTICE_NO_AUTOSTART="1")
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        cwd=project.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    code, modules = proc.stdout.split(" ", 1)
    assert code == "0", proc.stdout
    return set(modules.split())


def test_worker_ps_loads_no_store_no_subprocess_and_no_other_command(running: Project) -> None:
    loaded = loaded_by(running, "worker", "ps")
    assert "lattice_workers.protocol.client" in loaded  # it did talk to the supervisor
    for name in (*NOT_FOR_A_CLIENT, "lattice_workers.store._board"):
        assert name not in loaded, name


def test_worker_run_loads_no_writer_no_subprocess_and_no_other_command(running: Project) -> None:
    task = running.create_task()
    loaded = loaded_by(running, "worker", "run", "Noop", task, "--wait")
    for name in NOT_FOR_A_CLIENT:
        assert name not in loaded, name


def test_supervisor_status_loads_no_store(running: Project) -> None:
    loaded = loaded_by(running, "supervisor", "status")
    for name in (
        "subprocess",
        "lattice_workers.store._board",
        "lattice_workers.cli.board",
        "lattice_workers.cli.worker",
    ):
        assert name not in loaded, name
