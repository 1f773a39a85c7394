"""The worker's environment: session markers stripped, credentials kept, LATTICE_* ours."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from lattice_workers.actors._definitions import WorkerDefinition
from lattice_workers.actors._environment import (
    SESSION_MARKERS,
    lattice_variables,
    worker_environment,
    worker_variable,
)

BASE = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/home/ana",
    "ANTHROPIC_API_KEY": "sk-ant-secret",
    "ANTHROPIC_BASE_URL": "https://proxy",
    "OPENAI_API_KEY": "sk-openai",
    "CLAUDE_CONFIG_DIR": "/home/ana/.claude-work",
    "CLAUDE_CODE_USE_BEDROCK": "1",
    "CODEX_HOME": "/home/ana/.codex",
    "CLAUDECODE": "1",
    "CLAUDE_CODE_ENTRYPOINT": "cli",
    "CLAUDE_CODE_SSE_PORT": "4242",
    "CODEX_SANDBOX": "seatbelt",
    "CODEX_SANDBOX_NETWORK_DISABLED": "1",
    "LATTICE_ROOT": "/somewhere/else/.lattice",
    "LATTICE_TASK_ID": "task_OTHER",
    "LATTICE_DEBUG": "1",
    "AWS_PROFILE": "dev",
    "AWS_REGION": "eu-west-1",
}


def defn(**fields: Any) -> WorkerDefinition:
    return WorkerDefinition(**{"name": "W", "engine": "claude", "prompt_file": "p.md", **fields})


def run_vars(root: str = "/project") -> dict[str, str]:
    return lattice_variables(
        root=root,
        task_id="task_01ABC",
        run_id="run_1",
        started_event_id="ev_1",
        worker="W",
        actor="agent:w",
        commit_sha="a" * 40,
        log="/project/.lattice/logs/workers/ev_1.log",
        result_file="/tmp/result.json",
    )


def test_session_markers_are_stripped_and_credentials_pass() -> None:
    env = worker_environment(BASE, defn(), run_vars())
    for marker in SESSION_MARKERS:
        assert marker not in env
    for kept in (
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_BASE_URL",
        "OPENAI_API_KEY",
        "CLAUDE_CONFIG_DIR",
        "CLAUDE_CODE_USE_BEDROCK",
        "CODEX_HOME",
        "PATH",
        "HOME",
    ):
        assert env[kept] == BASE[kept], kept


def test_inherited_lattice_variables_are_replaced_not_kept() -> None:
    env = worker_environment(BASE, defn(), run_vars())
    assert env["LATTICE_ROOT"] == "/project"
    assert env["LATTICE_TASK_ID"] == "task_01ABC"
    assert "LATTICE_DEBUG" not in env


def test_definition_may_strip_more_and_keep_some_back() -> None:
    d = defn(env_strip=["AWS_*", "OPENAI_API_KEY"], env_keep=["AWS_REGION", "CODEX_SANDBOX"])
    env = worker_environment(BASE, d, {})
    assert "AWS_PROFILE" not in env and "OPENAI_API_KEY" not in env
    assert env["AWS_REGION"] == "eu-west-1"
    assert env["CODEX_SANDBOX"] == "seatbelt"


def test_one_variable_is_what_the_whole_environment_would_hold() -> None:
    definitions = [
        defn(),
        defn(env_strip=["AWS_*", "PATH"], env_keep=["AWS_REGION", "CODEX_SANDBOX"]),
        defn(env={"PATH": "/opt/bin", "LATTICE_DEBUG": "2"}, env_strip=["*"]),
    ]
    for d in definitions:
        env = worker_environment(BASE, d, {})
        for name in [*BASE, *d.env, "NOT_SET"]:
            assert worker_variable(BASE, d, name) == env.get(name), (d, name)
    assert worker_variable(BASE, definitions[1], "PATH") is None
    assert worker_variable(BASE, definitions[2], "PATH") == "/opt/bin"


def test_definition_env_comes_after_the_base_and_before_lattice_variables() -> None:
    d = defn(env={"HOME": "/tmp/home", "EXTRA": "1"})
    env = worker_environment(BASE, d, run_vars())
    assert env["HOME"] == "/tmp/home" and env["EXTRA"] == "1"
    assert env["LATTICE_RUN_ID"] == "run_1"


def test_the_base_mapping_is_not_changed() -> None:
    base = dict(BASE)
    worker_environment(base, defn(env={"X": "1"}), run_vars())
    assert base == BASE


def test_lattice_variables_names_every_spec_variable(tmp_path: Path) -> None:
    values = lattice_variables(
        root=tmp_path,
        task_id="task_1",
        short_id="LAT-1",
        run_id="run_1",
        started_event_id="ev_1",
        worker="W",
        actor="agent:w",
        commit_sha="c" * 40,
        base_ref="main",
        merge_base="b" * 40,
        worktree=tmp_path / "wt",
        log=tmp_path / "log",
        result_file=tmp_path / "result.json",
        prompt_file="prompts/p.md",
        artifact_role="review",
        report_dir="reports",
        report_prefix="rev-",
    )
    assert set(values) == {
        "LATTICE_ROOT",
        "LATTICE_TASK_ID",
        "LATTICE_SHORT_ID",
        "LATTICE_RUN_ID",
        "LATTICE_STARTED_EVENT_ID",
        "LATTICE_WORKER",
        "LATTICE_ACTOR",
        "LATTICE_COMMIT_SHA",
        "LATTICE_BASE_REF",
        "LATTICE_MERGE_BASE",
        "LATTICE_WORKTREE",
        "LATTICE_LOG",
        "LATTICE_RESULT_FILE",
        "LATTICE_PROMPT_FILE",
        "LATTICE_ARTIFACT_ROLE",
        "LATTICE_REPORT_DIR",
        "LATTICE_REPORT_PREFIX",
    }
    assert values["LATTICE_ROOT"] == str(tmp_path)  # the project root, not .lattice/
    assert values["LATTICE_PROMPT_FILE"] == str(tmp_path / "prompts" / "p.md")
    assert values["LATTICE_REPORT_DIR"] == str(tmp_path / "reports")


def test_unset_optional_variables_are_left_out() -> None:
    values = run_vars()
    assert "LATTICE_WORKTREE" not in values and "LATTICE_SHORT_ID" not in values


def test_a_real_child_process_sees_exactly_this_environment(tmp_path: Path) -> None:
    env = worker_environment({**BASE, "PATH": "/usr/bin:/bin"}, defn(), run_vars(str(tmp_path)))
    out = subprocess.run(
        [sys.executable, "-c", "import os, json; print(json.dumps(dict(os.environ)))"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    seen = json.loads(out)
    assert "CLAUDECODE" not in seen
    assert seen["ANTHROPIC_API_KEY"] == "sk-ant-secret"
    assert seen["LATTICE_ROOT"] == str(tmp_path)
