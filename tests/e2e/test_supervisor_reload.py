"""`lattice supervisor reload`: config changes without a restart, bad ones refused.

A raised cap admits queued runs at once and no running run is touched; a config the
supervisor cannot use is refused with the reason and changes nothing; a start with
such a config fails with the same sentence instead of a traceback.
"""

from __future__ import annotations

from tests.e2e.conftest import Project


def queue_positions(project: Project) -> dict[str, int | None]:
    return {r["run_id"]: r.get("queue_position") for r in project.json("worker", "ps")["data"]}


def test_a_raised_cap_admits_the_queued_run_and_a_bad_config_changes_nothing(
    project: Project,
) -> None:
    a, b = project.one_running_one_queued()

    project.configure_workers(max_concurrent="lots")
    refused = project.json("supervisor", "reload", check=False)
    assert refused["ok"] is False and refused["error"]["code"] == "INVALID_ARGUMENT"
    assert "workers.max_concurrent" in refused["error"]["message"]
    assert "'lots'" in refused["error"]["message"]
    assert project.cli("supervisor", "reload", check=False).returncode == 2  # INVALID_ARGUMENT
    assert queue_positions(project) == {a["run_id"]: None, b["run_id"]: 1}

    project.configure_workers(max_concurrent=2)
    done = project.json("supervisor", "reload")["data"]
    assert done["reloaded"] is True and done["workers"] == 1
    assert queue_positions(project) == {a["run_id"]: None, b["run_id"]: None}
    for run in (a, b):
        assert project.json("worker", "show", run["run_id"])["data"]["state"] != "failed"
        project.cli("worker", "cancel", run["run_id"])
        project.cli("worker", "wait", run["run_id"], check=False)


def test_a_start_with_a_bad_config_fails_with_the_reason(project: Project) -> None:
    project.configure_workers(keep_finished=-3)
    proc = project.cli("supervisor", "start", check=False)
    assert proc.returncode != 0
    assert "workers.keep_finished" in proc.stderr and "-3" in proc.stderr
    assert project.json("supervisor", "status", check=False)["ok"] is False


def test_reload_without_a_supervisor_says_so(project: Project) -> None:
    env = {**project.env, "LATTICE_NO_AUTOSTART": "1"}
    proc = project.cli("supervisor", "reload", check=False, env=env)
    assert proc.returncode == 6
    assert "no supervisor is running" in proc.stderr
