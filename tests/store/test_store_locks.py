"""The lock protocol: ``flock`` on ``locks/<key>.lock``, against other processes and threads.

The other process here locks the file the way ``filelock`` (and so ``lattice-tracker``)
does: an exclusive ``fcntl.flock`` on its own descriptor.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from lattice_workers.errors import Code, LatticeError
from lattice_workers.store._locks import locked

HOLDER = r"""
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o666)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()  # hold until the test closes our stdin
"""


def hold_in_other_process(path: Path) -> subprocess.Popen[str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    return proc


def release(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0


def test_a_lock_held_by_another_process_times_out_with_a_clear_error(tmp_path: Path) -> None:
    locks = tmp_path / "locks"
    holder = hold_in_other_process(locks / "tasks_x.lock")
    entered = []
    try:
        with pytest.raises(LatticeError) as err, locked(locks, ["events_x", "tasks_x"], 0.2):
            entered.append(True)
        assert err.value.code == Code.LOCK_TIMEOUT
        assert "'tasks_x'" in err.value.message and "0.2 s" in err.value.message
        assert not entered
        # The lock taken before the refused one was given back: another process gets it.
        other = hold_in_other_process(locks / "events_x.lock")
        release(other)
    finally:
        release(holder)
    with locked(locks, ["events_x", "tasks_x"], 0.2):
        entered.append(True)
    assert entered == [True]


def test_a_waiting_thread_gets_the_lock_once_the_holder_lets_go(tmp_path: Path) -> None:
    locks = tmp_path / "locks"
    order: list[str] = []
    holding = threading.Event()
    let_go = threading.Event()

    def holder() -> None:
        with locked(locks, ["k"]):
            order.append("first in")
            holding.set()
            let_go.wait(30)
            order.append("first out")

    def waiter() -> None:
        holding.wait(30)
        with locked(locks, ["k"]):
            order.append("second in")

    threads = [threading.Thread(target=holder), threading.Thread(target=waiter)]
    for t in threads:
        t.start()
    holding.wait(30)
    let_go.set()
    for t in threads:
        t.join(30)
    # Threads of one process exclude each other like processes do.
    assert order == ["first in", "first out", "second in"]


def test_lock_files_are_created_with_their_folder_and_never_deleted(tmp_path: Path) -> None:
    locks = tmp_path / "board" / "locks"
    with pytest.raises(RuntimeError), locked(locks, ["b", "a", "b"]):
        raise RuntimeError("the body failed")
    assert sorted(p.name for p in locks.iterdir()) == ["a.lock", "b.lock"]
    holder = hold_in_other_process(locks / "a.lock")  # released despite the error
    release(holder)


def test_release_frees_every_lock_even_when_one_descriptor_is_already_gone(
    tmp_path: Path,
) -> None:
    import os

    from lattice_workers.store._locks import _acquire, _release

    locks = tmp_path / "locks"
    first = _acquire(str(locks / "a.lock"), locks, "a", float("inf"), 1.0)
    second = _acquire(str(locks / "b.lock"), locks, "b", float("inf"), 1.0)
    os.close(second)  # its unlock and close now fail with EBADF
    _release([first, second])  # does not raise
    holder = hold_in_other_process(locks / "a.lock")  # the first lock was given back
    release(holder)
