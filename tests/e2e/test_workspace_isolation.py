"""A worker's git stays in its workspace: the user's repository is the user's (issue 19).

The worker below does, in its workspace, what would have reached the user's repository
through a ``git worktree`` (measured before the change: the branch, the stash and the
config all showed up there). Each command must succeed inside, and leave the user's
refs (but for the run's own kept-work ref), stash, config, hooks, index and working tree
byte for byte as they were.
"""

from __future__ import annotations

from pathlib import Path

from tests.e2e.conftest import Project

LEAKS = """set -e
git config user.name w && git config user.email w@w
echo edit >> README.md && git stash
git branch leak && git tag leak && git tag -a -m leak leak-annotated
git config core.leakcheck yes && git config core.hooksPath /tmp/x
git branch -D users-other
git notes add -m leak HEAD
git remote add leak /tmp/leak
git switch -q -c feature
echo work > work.txt && git add work.txt && git commit -qm work
test "$(git config core.leakcheck)" = yes && test -n "$(git stash list)"
"""


def user_state(project: Project) -> dict[str, object]:
    git_dir = project.root / ".git"
    refs = [
        line
        for line in project.git("for-each-ref", "--format=%(refname) %(objectname)").splitlines()
        if not line.startswith("refs/lattice/runs/")
    ]
    return {
        "refs": refs,
        "head": project.git("symbolic-ref", "HEAD"),
        "stash": project.git("stash", "list"),
        "config": (git_dir / "config").read_bytes(),
        "hooks": sorted(
            (p.name, p.read_bytes()) for p in (git_dir / "hooks").iterdir()
        ) if (git_dir / "hooks").exists() else [],
        "index": (git_dir / "index").read_bytes(),
        "tree": project.git(  # the board's own files change as it records the run
            "status", "--porcelain=v1", "--untracked-files=all", "--ignored", "--", ".",
            ":!.lattice",
        ),
        "readme": (project.root / "README.md").read_bytes(),
        "worktrees": project.worktree_list(),
    }


def test_git_commands_of_a_worker_never_reach_the_users_repository(project: Project) -> None:
    project.write_worker("Leaky", command=LEAKS)
    project.git("add", "-A")
    project.git("commit", "-q", "-m", "worker")
    project.git("branch", "users-other")
    task = project.create_task("Leak")
    before = user_state(project)
    run = project.json("worker", "run", "Leaky", task, "--wait")["data"][0]
    assert run["state"] == "completed", run  # every command succeeded in the workspace
    assert user_state(project) == before
    # Its work came back as its own ref, and only that.
    changes = project.process_events(task)[-1]["data"]["changes"]
    assert changes["ref"] == f"refs/lattice/runs/{run['run_id']}/1"
    assert changes["commits"] == 1 and changes["files_changed"] == 1
    assert "+work" in project.cli("worker", "diff", run["run_id"]).stdout
    assert project.git("for-each-ref", "--format=%(refname)", "refs/lattice") == changes["ref"]
    assert not Path(project.worktrees, run["run_id"]).exists()
