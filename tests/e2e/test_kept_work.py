"""An attempt's work is kept when its worktree goes, and a person can review and take it."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from tests.e2e.conftest import Project

IMPLEMENT = (
    "printf 'def add(a, b):\\n    return a + b\\n' > app.py && "
    "git -c user.name=w -c user.email=w@w commit -qam 'fix add' && "
    "echo notes > NOTES.md && echo more >> README.md"
)


def started_halfway(project: Project, task: str) -> dict[str, object]:
    """Start the Halfway worker on ``task`` and wait until its draft is written."""
    run: dict[str, object] = project.json("worker", "run", "Halfway", task)["data"]
    draft = project.worktrees / str(run["run_id"]) / "draft.txt"
    deadline = time.monotonic() + 30
    while not draft.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return run


def test_a_run_that_changed_files_keeps_them_and_they_can_be_reviewed_and_applied(
    project: Project,
) -> None:
    (project.root / "app.py").write_text("def add(a, b):\n    return a - b\n")
    project.write_worker("Implement", command=IMPLEMENT)
    project.git("add", "-A")
    project.git("commit", "-q", "-m", "app and worker")
    task = project.create_task("Fix add")
    before = project.git("for-each-ref", "--format=%(refname)", "refs/heads", "refs/tags")
    run = project.json("worker", "run", "Implement", task, "--wait")["data"][0]
    assert run["state"] == "completed", run
    ended = project.process_events(task)[-1]["data"]
    changes = ended["changes"]
    assert changes["ref"] == f"refs/lattice/runs/{run['run_id']}/1"
    assert changes["commits"] == 1 and changes["files_changed"] == 3
    assert changes["base_sha"] == run["commit_sha"] and changes["left_out"] == []
    diff = project.cli("worker", "diff", run["run_id"]).stdout
    assert "+    return a + b" in diff and "+notes" in diff and "+more" in diff
    # On the record: the run's RunInfo, `ps -a`, `worker show` and `lattice show`.
    assert run["changes"] == changes
    kept = f"work kept: 3 files +{changes['insertions']} -{changes['deletions']}, 1 commit"
    assert kept in project.cli("worker", "ps", "-a").stdout
    shown = project.cli("worker", "show", run["run_id"]).stdout
    assert kept in shown and f"ref: {changes['ref']}\n" in shown
    board_view = project.cli("show", task).stdout
    assert kept in board_view and "role: diff" in board_view  # the patch, attached
    # The user's branches and working tree are as they were; the work is a ref.
    assert project.git("for-each-ref", "--format=%(refname)", "refs/heads", "refs/tags") == before
    assert "return a - b" in (project.root / "app.py").read_text()
    project.cli("worker", "apply", run["run_id"], "--branch", "fix-add")
    shown = subprocess.run(
        ["git", "show", "fix-add:app.py"], cwd=project.root, capture_output=True, text=True
    ).stdout
    assert "return a + b" in shown
    assert project.cli("worker", "diff", run["run_id"], check=False).returncode == 3
    # Taken: `ps -a` no longer marks it, `worker show` says the ref went.
    assert kept not in project.cli("worker", "ps", "-a").stdout
    assert "(applied or discarded since)" in project.cli("worker", "show", run["run_id"]).stdout
    # A finished run read back from the journal after a restart still says it.
    project.cli("supervisor", "stop")
    project.cli("supervisor", "start")
    assert project.json("worker", "show", run["run_id"])["data"]["changes"] == changes


ODD = r"""set -e
git checkout -q --orphan fresh
printf 'odd\n' > '"quoted"'
printf 'cr\n' > "$(printf 'cr\r')"
mkdir pkg && git -C pkg init -q && echo x > pkg/x
"""


def test_odd_names_an_orphan_branch_and_a_nested_repository_through_a_run(
    project: Project,
) -> None:
    """What a careless worker leaves, through a real supervisor: names git would
    unquote or cut, a HEAD with no commit, a repository made inside (named left out)."""
    project.write_worker("Odd", command=ODD)
    project.git("add", "-A")
    project.git("commit", "-q", "-m", "worker")
    task = project.create_task("Odd")
    run = project.json("worker", "run", "Odd", task, "--wait")["data"][0]
    assert run["state"] == "completed", run
    changes = project.process_events(task)[-1]["data"]["changes"]
    assert changes["files_changed"] == 2 and changes["left_out"] == ["pkg/"], changes
    assert "no commit" in changes["note"]
    snapshot = changes["snapshot_sha"]
    assert project.git("show", f'{snapshot}:"quoted"') == "odd"
    assert project.git("show", f"{snapshot}:cr\r") == "cr"
    shown = project.cli("worker", "show", run["run_id"]).stdout
    assert "left out (too large, or a repository inside): pkg/" in shown


def test_a_run_that_changed_nothing_makes_no_ref(project: Project) -> None:
    project.write_worker("Look", command="git status --short > /dev/null")
    project.git("add", "-A")
    project.git("commit", "-q", "-m", "worker")
    task = project.create_task()
    run = project.json("worker", "run", "Look", task, "--wait")["data"][0]
    assert project.process_events(task)[-1]["data"]["changes"] == {"files_changed": 0}
    assert project.git("for-each-ref", "refs/lattice") == ""
    missing = project.json("worker", "diff", run["run_id"], check=False)
    assert missing["error"]["code"] == "NOT_FOUND"


def test_a_cancelled_run_keeps_what_it_had_done(project: Project) -> None:
    project.write_worker(
        "Halfway", command="echo draft > draft.txt; sleep 300", kill_grace_seconds=1
    )
    project.git("add", "-A")
    project.git("commit", "-q", "-m", "worker")
    task = project.create_task()
    run = started_halfway(project, task)
    project.cli("worker", "cancel", run["run_id"])
    ended = project.process_events(task)[-1]
    assert ended["type"] == "process_failed" and ended["data"]["reason"] == "cancelled"
    assert ended["data"]["changes"]["files_changed"] == 1
    assert "+draft" in project.cli("worker", "diff", run["run_id"]).stdout
    assert json.loads(project.cli("worker", "discard", run["run_id"], "--json").stdout)["ok"]


@pytest.mark.parametrize(
    ("ending", "fields", "reason"),
    [
        ("exit", {"command": "echo draft > draft.txt; exit 3"}, "exit_nonzero"),
        ("timeout", {"timeout_minutes": 0.02}, "timeout"),
        ("shutdown", {}, "supervisor_shutdown"),
    ],
)
def test_every_ending_keeps_what_the_run_had_done(
    project: Project, ending: str, fields: dict[str, object], reason: str
) -> None:
    definition: dict[str, object] = {
        "command": "echo draft > draft.txt; sleep 300", "kill_grace_seconds": 1, **fields
    }
    project.write_worker("Halfway", **definition)
    project.git("add", "-A")
    project.git("commit", "-q", "-m", "worker")
    task = project.create_task()
    if ending == "exit":
        run = project.json("worker", "run", "Halfway", task, "--wait", check=False)["data"][0]
    else:
        run = started_halfway(project, task)
    if ending == "shutdown":
        project.cli("supervisor", "stop")
    else:
        project.cli("worker", "wait", str(run["run_id"]), check=False)
    ended = project.process_events(task)[-1]
    assert ended["type"] == "process_failed", ended
    assert ended["data"]["reason"] == reason, ended
    assert ended["data"]["changes"]["ref"] == f"refs/lattice/runs/{run['run_id']}/1"
    assert "+draft" in project.cli("worker", "diff", str(run["run_id"])).stdout
    if ending == "shutdown":  # else the workspace went back to the pool, cleaned
        assert project.workspaces() == []


def test_work_of_a_run_orphaned_then_settled_by_doctor_fix_is_kept(project: Project) -> None:
    project.write_worker("Halfway", command="echo draft > draft.txt; sleep 300")
    project.git("add", "-A")
    project.git("commit", "-q", "-m", "worker")
    task = project.create_task()
    run = started_halfway(project, task)
    project.kill_supervisor()
    env = dict(project.env, LATTICE_NO_AUTOSTART="1")
    fixed = project.cli("doctor", "--fix", env=env, check=False)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    ended = project.process_events(task)[-1]
    assert ended["type"] == "process_failed" and ended["data"]["reason"] == "orphaned"
    assert ended["data"]["changes"]["ref"] == f"refs/lattice/runs/{run['run_id']}/1"
    assert "+draft" in project.cli("worker", "diff", str(run["run_id"]), env=env).stdout
    assert project.workspaces() == []


def test_work_of_a_run_orphaned_by_a_killed_supervisor_is_kept_by_the_next_start(
    project: Project,
) -> None:
    project.write_worker("Halfway", command="echo draft > draft.txt; sleep 300")
    project.git("add", "-A")
    project.git("commit", "-q", "-m", "worker")
    task = project.create_task()
    run = started_halfway(project, task)
    worktree = project.worktrees / run["run_id"]
    project.kill_supervisor()
    project.cli("supervisor", "start")  # its recovery settles the run
    ended = project.process_events(task)[-1]
    assert ended["type"] == "process_failed" and ended["data"]["reason"] == "orphaned"
    assert ended["data"]["changes"]["ref"] == f"refs/lattice/runs/{run['run_id']}/1"
    assert "+draft" in project.cli("worker", "diff", run["run_id"]).stdout
    assert not worktree.exists()
    assert "role: diff" in project.cli("show", task).stdout  # recovery attached the patch


def test_a_run_from_an_earlier_runs_kept_work_starts_at_its_snapshot(project: Project) -> None:
    project.write_worker("Draft", command="echo draft > draft.txt")
    project.write_worker("Extend", command="test -f draft.txt && echo more >> draft.txt")
    project.write_worker("Look", command="true")
    project.git("add", "-A")
    project.git("commit", "-q", "-m", "workers")
    task = project.create_task()
    first = project.json("worker", "run", "Draft", task, "--wait")["data"][0]
    snapshot = first["changes"]["snapshot_sha"]
    second = project.json("worker", "run", "Extend", task, "--from", first["run_id"], "--wait")
    second = second["data"][0]
    assert second["state"] == "completed", second  # draft.txt was there to extend
    assert second["commit_sha"] == snapshot and second["changes"]["base_sha"] == snapshot
    diff = project.cli("worker", "diff", second["run_id"]).stdout
    assert "+more" in diff and "+draft" not in diff  # only what the follow-up added
    # Refused, each with a clear error and no run: a run that kept nothing, an id of
    # no run, a malformed id, and --from with --commit.
    nothing = project.json("worker", "run", "Look", task, "--wait")["data"][0]
    for args, code, words in (
        (["--from", nothing["run_id"]], "NOT_FOUND", "has no kept work"),
        (["--from", "run_01M8TK00000000000000000000"], "NOT_FOUND", "no run run_01M8TK"),
        (["--from", "../heads/main"], "INVALID_ID", "not a run id"),
        (["--from", first["run_id"], "--commit", "HEAD"], "INVALID_ARGUMENT", "give one"),
    ):
        refused = project.json("worker", "run", "Extend", task, *args, check=False)
        assert refused["error"]["code"] == code and words in refused["error"]["message"], args
    runs = project.json("worker", "ps", "-a", "--task", task)["data"]
    assert len(runs) == 3


def test_kept_work_outlives_keep_finished_days_and_doctor_says_what_it_holds(
    project: Project,
) -> None:
    project.write_worker("Draft", command="head -c 20000 /dev/urandom > blob.bin")
    project.git("add", "-A")
    project.git("commit", "-q", "-m", "worker")
    task = project.create_task()
    run = project.json("worker", "run", "Draft", task, "--wait")["data"][0]
    report = project.json("doctor")["data"]
    assert report["problems"] == [] and report["kept_work"]["refs"] == 1
    assert report["kept_work"]["bytes"] > 20000  # the random blob does not compress
    assert "Kept work: 1 ref under refs/lattice/runs hold" in project.cli("doctor").stdout
    # The supervisor forgets finished runs after keep_finished_days; never their work.
    project.configure_workers(keep_finished_days=0)
    project.cli("supervisor", "stop")
    project.cli("supervisor", "start")
    assert project.json("worker", "ps", "-a")["data"] == []
    assert "Binary files" in project.cli("worker", "diff", run["run_id"]).stdout
    assert project.json("doctor")["data"]["kept_work"]["refs"] == 1
    project.cli("worker", "discard", run["run_id"])
    assert "kept_work" not in project.json("doctor")["data"]


def test_the_shipped_changelog_worker_makes_a_change_that_is_kept_and_taken(
    project: Project,
) -> None:
    project.cli("worker", "init")
    project.git("add", "-A")
    project.git("commit", "-q", "-m", "shipped workers")
    task = project.create_task("Say hello in the changelog")
    run = project.json("worker", "run", "ChangelogEntry", task, "--wait")["data"][0]
    assert run["state"] == "completed", run
    assert run["changes"]["commits"] == 1 and run["changes"]["files_changed"] == 1
    stat = project.cli("worker", "diff", run["run_id"], "--stat").stdout
    assert "CHANGELOG.md | 2 ++" in stat
    project.cli("worker", "apply", run["run_id"], "--branch", "changelog")
    assert project.git("show", "changelog:CHANGELOG.md") == (
        f"# Changelog\n- {task}: Say hello in the changelog"
    )
    assert project.git("log", "-1", "--format=%s", "changelog~1") == f"{task}: changelog entry"
    assert not (project.root / "CHANGELOG.md").exists()  # the user's tree is untouched
