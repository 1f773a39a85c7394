"""The node side of a Ray run, without Ray: :class:`NodeAttempt` is plain Python, so
its workspace, process, output buffer, guard and kept work are tested here directly
(the default suite); tests/ray runs the same class as an actor on a real cluster."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from lattice_workers.actors._keep import KeepError, run_ref
from lattice_workers.executors.ray._bundle import has_commit, make_bundle, receive_bundle
from lattice_workers.executors.ray._node import MAX_BUFFERED, NodeAttempt, NodeHost
from tests.e2e.conftest import GIT_ENV, processes_with_variable


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, check=True, text=True,
        env={**os.environ, **GIT_ENV},
    ).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "big.txt").write_text("".join(f"line {i}\n" for i in range(5000)))
    git(root, "add", ".")
    git(root, "commit", "-qm", "first")
    return root


def commit_change(repo: Path, name: str, text: str) -> str:
    (repo / name).write_text(text)
    git(repo, "add", name)
    git(repo, "commit", "-qm", f"change {name}")
    return git(repo, "rev-parse", "HEAD").strip()


def prepared(repo: Path, tmp_path: Path, name: str = "run_x.1") -> NodeAttempt:
    """An attempt whose worktree is at the project's HEAD (bundle sent as the
    supervisor sends it: when the node says it is missing)."""
    node = NodeAttempt("ns", name, "node-1", base=str(tmp_path / "node"))
    commit = git(repo, "rev-parse", "HEAD").strip()
    answer = node.prepare("run_x", commit)
    if "missing" in answer:
        answer = node.prepare("run_x", commit, make_bundle(repo, commit, answer["missing"]))
    assert answer == {"location": str(node.worktree), "node": "node-1"}
    return node


def wait_gone(run_id: str, bound: float = 15.0) -> None:
    deadline = time.monotonic() + bound
    while processes_with_variable("LATTICE_RUN_ID", run_id):
        assert time.monotonic() < deadline, "the worker's group outlived its actor"
        time.sleep(0.05)


def read_all(node: NodeAttempt) -> bytes:
    out, offset = b"", 0
    while True:
        offset, data, at_end = node.read_output(offset, 5.0)
        out += data
        offset += len(data)
        if at_end:
            return out


# ---------------------------------------------------------------------- bundles


def test_a_bundle_leaves_out_what_the_receiver_has(repo: Path, tmp_path: Path) -> None:
    first = git(repo, "rev-parse", "HEAD").strip()
    cache = tmp_path / "cache.git"
    git(tmp_path, "init", "-q", "--bare", str(cache))
    whole = make_bundle(repo, first)
    assert receive_bundle(cache, whole, f"refs/cache/{first}") == first
    second = commit_change(repo, "small.txt", "new\n")
    delta = make_bundle(repo, second, [first, "0" * 40])  # an unknown tip is left out
    assert len(delta) < len(whole) / 10
    assert receive_bundle(cache, delta, f"refs/cache/{second}") == second
    assert has_commit(cache, second)
    # git itself reads what we write
    bundle_file = tmp_path / "b.bundle"
    bundle_file.write_bytes(delta)
    assert git(repo, "bundle", "verify", str(bundle_file)).count("\n") >= 0


def test_a_bundle_whose_prerequisite_is_missing_is_refused(repo: Path, tmp_path: Path) -> None:
    first = git(repo, "rev-parse", "HEAD").strip()
    second = commit_change(repo, "small.txt", "new\n")
    cache = tmp_path / "cache.git"
    git(tmp_path, "init", "-q", "--bare", str(cache))
    with pytest.raises(KeepError):
        receive_bundle(cache, make_bundle(repo, second, [first]), "refs/cache/x")
    assert not has_commit(cache, second)
    with pytest.raises(KeepError, match="not a git bundle"):
        receive_bundle(cache, b"garbage", "refs/cache/x")


# ---------------------------------------------------------------------- the node


def test_prepare_asks_for_a_bundle_only_when_the_node_lacks_the_commit(
    repo: Path, tmp_path: Path
) -> None:
    first = prepared(repo, tmp_path, "run_x.1")
    first.release()
    again = NodeAttempt("ns", "run_x.2", "node-1", base=str(tmp_path / "node"))
    commit = git(repo, "rev-parse", "HEAD").strip()
    assert again.prepare("run_x", commit) == {"location": str(again.worktree), "node": "node-1"}
    assert (again.worktree / "big.txt").is_file()
    second = commit_change(repo, "small.txt", "new\n")
    third = NodeAttempt("ns", "run_x.3", "node-1", base=str(tmp_path / "node"))
    assert third.prepare("run_x", second) == {"missing": [commit]}
    again.release()
    assert not again.dir.exists()


def test_the_worker_runs_in_the_worktree_with_node_paths_and_its_output_is_read(
    repo: Path, tmp_path: Path
) -> None:
    node = prepared(repo, tmp_path)
    local = str(repo)
    script = (
        'echo "node=$LATTICE_NODE wt=$LATTICE_WORKTREE root=$LATTICE_ROOT arg=$1 pwd=$PWD"; '
        'cat "$LATTICE_PROMPT_FILE"; echo "{\\"n\\": 1}" > "$LATTICE_RESULT_FILE"; '
        'echo out > "$LATTICE_OUTPUT_DIR/report.md"; exit 4'
    )
    env = {
        "PATH": os.environ["PATH"],
        "PWD": "/where/the/client/was",
        "LATTICE_RUN_ID": "run_x",
        "LATTICE_ROOT": local,
        "LATTICE_RESULT_FILE": "/supervisor/results/run_x.json",
        "LATTICE_OUTPUT_DIR": "/supervisor/outputs/run_x",
        "LATTICE_PROMPT_FILE": f"{local}/prompt.md",
    }
    node.start(
        ["bash", "-c", script, "x", f"{local}/sub/file"], env, attempt=1, grace_seconds=1,
        local_roots=[local], files={"LATTICE_PROMPT_FILE": b"the prompt\n"},
    )
    output = read_all(node).decode()
    wt = node.worktree
    assert f"node=node-1 wt={wt} root={wt} arg={wt}/sub/file pwd={wt}" in output
    assert "the prompt" in output
    assert node.wait(10) == 4
    files = node.files()
    assert files["result"] == b'{"n": 1}\n'
    assert files["outputs"] == {"report.md": b"out\n"}
    node.release()
    wait_gone("run_x")


def test_an_agent_gets_its_prompt_on_stdin_and_the_node_s_output_folder_everywhere(
    repo: Path, tmp_path: Path
) -> None:
    """The supervisor's output folder (inside the project, as spelled and resolved) is
    the node's in argv, inside larger arguments, and in the environment."""
    node = prepared(repo, tmp_path)
    local = str(repo)
    out = f"{local}/.lattice/run/outputs/run_x/1"
    env = {"PATH": os.environ["PATH"], "LATTICE_RUN_ID": "run_x", "LATTICE_OUTPUT_DIR": out,
           "LATTICE_RESULT_FILE": f"{out}/result.json"}
    script = 'cat; echo; echo "$1|$2|$LATTICE_OUTPUT_DIR|$LATTICE_RESULT_FILE"'
    node.start(["bash", "-c", script, "x", out, f"roots=[\"{out}\"]"], env, attempt=1,
               grace_seconds=1, local_roots=[local], stdin=b"the prompt", local_outputs=[out])
    mine = str(node.dir / "outputs")
    lines = read_all(node).decode().splitlines()
    assert lines == ["the prompt", f'{mine}|roots=["{mine}"]|{mine}|{node.dir}/result.json']
    node.release()


def test_a_program_missing_on_the_node_is_named(repo: Path, tmp_path: Path) -> None:
    node = prepared(repo, tmp_path)
    with pytest.raises(FileNotFoundError, match="not installed on Ray node node-1"):
        node.start(["no-such-engine-xyz"], {"PATH": "/usr/bin"}, attempt=1, grace_seconds=1)
    node.release()


def test_stop_sends_term_then_kill_to_the_group(repo: Path, tmp_path: Path) -> None:
    node = prepared(repo, tmp_path)
    env = {"PATH": os.environ["PATH"], "LATTICE_RUN_ID": "run_stop"}
    node.start(["bash", "-c", "trap '' TERM; (trap '' TERM; sleep 600) & echo up; wait"], env,
               attempt=1, grace_seconds=1)
    assert node.read_output(0, 10)[1] == b"up\n"
    started = time.monotonic()
    assert node.stop(0.5) == -signal.SIGKILL
    assert 0.5 <= time.monotonic() - started < 10
    node.release()
    wait_gone("run_stop")


def test_the_guard_kills_the_group_when_the_actor_is_gone(repo: Path, tmp_path: Path) -> None:
    """The actor's death closes its end of the guard's pipe without ``done``."""
    node = prepared(repo, tmp_path)
    env = {"PATH": os.environ["PATH"], "LATTICE_RUN_ID": "run_guard"}
    node.start(["bash", "-c", "(sleep 600) & echo up; sleep 600"], env, attempt=1,
               grace_seconds=0.5)
    assert node.read_output(0, 10)[1] == b"up\n"
    assert node._guard is not None and node._guard.stdin is not None
    node._guard.stdin.close()  # what the kernel does when the actor's process dies
    wait_gone("run_guard")
    assert node.wait(10) == -signal.SIGTERM


def test_output_past_the_buffer_waits_for_the_reader(repo: Path, tmp_path: Path) -> None:
    """Unread output is bounded on the node: the worker blocks, nothing is dropped."""
    node = prepared(repo, tmp_path)
    size = MAX_BUFFERED + 3 * 1024 * 1024
    env = {"PATH": os.environ["PATH"], "LATTICE_RUN_ID": "run_big"}
    node.start(["bash", "-c", f"head -c {size} /dev/zero"], env, attempt=1, grace_seconds=1)
    assert node.wait(1.0) is None  # blocked on its full pipe
    assert len(read_all(node)) == size
    assert node.wait(10) == 0
    node.release()


def test_kept_work_comes_back_as_a_bundle_with_its_changes(repo: Path, tmp_path: Path) -> None:
    node = prepared(repo, tmp_path)
    base = node.commit
    env = {"PATH": os.environ["PATH"], "LATTICE_RUN_ID": "run_keep", **GIT_ENV}
    script = "echo more >> big.txt; git commit -qam w; echo new > new.txt"
    node.start(["bash", "-c", script], env, attempt=2, grace_seconds=1)
    assert node.wait(10) == 0
    kept = node.keep(actor="agent:w", task="T-1")
    assert kept is not None
    changes = kept["changes"]
    assert changes["ref"] == run_ref("run_x", 2) and changes["base_sha"] == base
    assert changes["commits"] == 1 and changes["files_changed"] == 2
    # the node's cache keeps no ref of it; the project gets it from the bundle
    assert git(node.cache, "for-each-ref", "refs/lattice/") == ""
    receive_bundle(repo, kept["bundle"], run_ref("run_x", 2))
    assert git(repo, "show", f"{run_ref('run_x', 2)}:new.txt") == "new\n"
    node.release()


def test_nothing_changed_is_no_bundle(repo: Path, tmp_path: Path) -> None:
    node = prepared(repo, tmp_path)
    node.start(["true"], {"PATH": os.environ["PATH"]}, attempt=1, grace_seconds=1)
    assert node.wait(10) == 0
    assert node.keep(actor="agent:w", task="T-1") == {"changes": {"files_changed": 0},
                                                      "bundle": None}
    node.release()


def host_prepared(host: NodeHost, repo: Path, name: str) -> dict[str, object]:
    commit = git(repo, "rev-parse", "HEAD").strip()
    answer = host.prepare(name, name.split(".")[0], commit)
    if "missing" in answer:
        answer = host.prepare(name, name.split(".")[0], commit,
                              make_bundle(repo, commit, answer["missing"]))
    return answer


def test_a_host_runs_attempts_by_name_and_releases_them(repo: Path, tmp_path: Path) -> None:
    host = NodeHost("ns", "node-1", base=str(tmp_path / "node"))
    host_prepared(host, repo, "run_a.1")
    host_prepared(host, repo, "run_b.1")
    env = {"PATH": os.environ["PATH"], "LATTICE_RUN_ID": "run_a"}
    host.call("run_a.1", "start", ["bash", "-c", "echo a-here"], env, attempt=1,
              grace_seconds=1)
    assert host.call("run_a.1", "wait", 10) == 0
    assert host.call("run_a.1", "read_output", 0, 5)[1] == b"a-here\n"
    assert [a["run_id"] for a in host.attempts()] == ["run_a", "run_b"]
    with pytest.raises(ValueError, match="not a call"):
        host.call("run_a.1", "release")  # only through host.release (it forgets it)
    with pytest.raises(LookupError, match=r"no attempt run_c\.1 on Ray node node-1"):
        host.call("run_c.1", "wait", 0)
    assert host.release("run_a.1") and not host.release("run_a.1")
    assert [a["run_id"] for a in host.attempts()] == ["run_b"]
    assert host.missing(["bash", "no-such-engine-xyz"], "/usr/bin:/bin") == [
        "no-such-engine-xyz"
    ]
    assert not (host.home / "runs" / "run_a.1").exists()
    host.release("run_b.1")


def test_one_host_per_node_and_board(tmp_path: Path) -> None:
    NodeHost("ns", "node-1", base=str(tmp_path / "node"))
    with pytest.raises(RuntimeError, match="another host"):
        NodeHost("ns", "node-1", base=str(tmp_path / "node"))
    NodeHost("other-board", "node-1", base=str(tmp_path / "node"))  # its own namespace


def test_a_new_host_sweeps_what_dead_hosts_left_and_only_that(
    repo: Path, tmp_path: Path
) -> None:
    base = str(tmp_path / "node")
    dead = NodeHost("ns", "node-dead", base=base)  # its node dies mid-run, below
    host_prepared(dead, repo, "run_dead.1")
    alive = NodeHost("ns", "node-2", base=base)  # another node sharing the disk
    host_prepared(alive, repo, "run_alive.1")
    os.close(dead._held)  # what the kernel does to its lock when its process dies
    me = NodeHost("ns", "node-3", base=base)
    assert me.swept == ["run_dead.1"]
    runs = Path(base) / "ns" / "runs"
    assert not (runs / "run_dead.1").exists() and (runs / "run_alive.1" / "work").is_dir()
    assert "run_dead.1" not in git(me.home / "cache.git", "worktree", "list")
    # A host that comes back on the same node (its previous one killed) sweeps that
    # one's folders: nothing else hosts them.
    os.close(alive._held)
    again = NodeHost("ns", "node-2", base=base)
    assert again.swept == ["run_alive.1"]
