#!/usr/bin/env python3
"""The Lattice Workers demo: a scratch project, four test runs at once, nothing left behind.

Run it from a clone, after installing (the README's first command):

    .venv/bin/python demo/demo.py [--keep]

It makes a small git project with a board in a temporary folder, copies the shipped
workers in with ``lattice worker init``, runs the shipped TestRunner on four tasks at
once (one of them on a branch whose new test fails), shows a duplicate request being
refused, shows ``lattice worker ps`` while the runs are live, waits for them, shows
each task's run history and an attached report, then one implementing run with the
shipped offline ChangelogEntry worker (its kept work shown with ``worker diff --stat``
and applied to a branch with ``worker apply``), stops the supervisor and checks that
no process and no worktree is left. It exits non-zero if anything went wrong or was
left behind. Every step is the real ``lattice`` command, run with this interpreter.

The scratch project's slowest test waits until the demo lets it go (``DEMO_GATE``),
so that the runs are reliably still running when ``worker ps`` looks at them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# ----------------------------------------------------------------------------- output

_TTY = sys.stdout.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"
_UTF8 = (sys.stdout.encoding or "").lower().replace("-", "") == "utf8"
RULE = "─" if _UTF8 else "-"
OK = "✓" if _UTF8 else "ok"
BAD = "✗" if _UTF8 else "!!"


def _style(code: str, text: str) -> str:
    return f"\033[{code}m{text}\033[0m" if _TTY else text


def bold(text: str) -> str:
    return _style("1", text)


def dim(text: str) -> str:
    return _style("2", text)


def green(text: str) -> str:
    return _style("32", text)


def red(text: str) -> str:
    return _style("31", text)


def section(number: int, title: str) -> None:
    head = f"{RULE * 2} {number}. {title} "
    print()
    print(bold(head + RULE * max(4, 72 - len(head))))


def say(text: str = "") -> None:
    print(text, flush=True)


def indented(text: str, prefix: str = "    ") -> None:
    for line in text.rstrip("\n").splitlines():
        say(prefix + line)


def table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    say("    " + bold("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()))
    for row in rows:
        cells = [str(c).ljust(w) for c, w in zip(row, widths, strict=True)]
        say("    " + "  ".join(cells).rstrip())


# ----------------------------------------------------------------------------- the scratch project

PRICING = '''"""Prices for a small shop, in cents."""


def subtotal(items):
    """The sum of unit price times quantity over (unit_cents, quantity) pairs."""
    return sum(unit * quantity for unit, quantity in items)


def with_tax(cents, rate_percent):
    """``cents`` plus tax, rounded to the nearest cent."""
    return cents + round(cents * rate_percent / 100)
'''

BULK_DISCOUNT = '''

def bulk_discount(cents, quantity):
    """10% off orders of 10 items or more."""
    if quantity > 10:
        return cents - cents // 10
    return cents
'''

TEST_PRICING = """import unittest

from pricing import subtotal, with_tax


class SubtotalTest(unittest.TestCase):
    def test_empty_order_costs_nothing(self):
        self.assertEqual(subtotal([]), 0)

    def test_sums_unit_price_times_quantity(self):
        self.assertEqual(subtotal([(250, 2), (100, 3)]), 800)


class TaxTest(unittest.TestCase):
    def test_adds_tax(self):
        self.assertEqual(with_tax(1000, 20), 1200)

    def test_rounds_to_the_nearest_cent(self):
        self.assertEqual(with_tax(999, 5), 1049)
"""

TEST_CHECKOUT = '''import os
import time
import unittest

from pricing import subtotal, with_tax


def wait_for_the_demo():
    """The demo holds each run here, so that you can see it running in `worker ps`."""
    gate = os.environ.get("DEMO_GATE")
    deadline = time.monotonic() + 60
    while gate and not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.05)


class CheckoutTest(unittest.TestCase):
    def test_a_whole_checkout(self):
        wait_for_the_demo()
        self.assertEqual(with_tax(subtotal([(499, 2)]), 10), 1098)
'''

TEST_BULK = """

class BulkDiscountTest(unittest.TestCase):
    def test_small_orders_pay_full_price(self):
        from pricing import bulk_discount

        self.assertEqual(bulk_discount(5000, 3), 5000)

    def test_ten_items_get_ten_percent_off(self):
        from pricing import bulk_discount

        self.assertEqual(bulk_discount(5000, 10), 4500)
"""

TASKS = [
    ("Bulk discount for 10 or more items", "bulk-discount"),
    ("Round tax to the nearest cent", None),
    ("Show subtotals on receipts", None),
    ("Speed up the checkout flow", None),
]


class Demo:
    """The scratch project and the ``lattice`` command run in it."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.root = base / "shop"
        self.worktrees = base / "worktrees"
        self.gate = base / "gate"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("LATTICE_")}
        self.env.update(
            GIT_AUTHOR_NAME="Lattice Demo",
            GIT_AUTHOR_EMAIL="demo@example.invalid",
            GIT_COMMITTER_NAME="Lattice Demo",
            GIT_COMMITTER_EMAIL="demo@example.invalid",
            LATTICE_ACTOR="human:demo",
            LATTICE_WORKTREE_DIR=str(self.worktrees),
            DEMO_GATE=str(self.gate),
        )
        self.supervisor_started = False

    def git(self, *args: str) -> str:
        return subprocess.run(
            ["git", *args],
            cwd=self.root,
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()

    def lattice(
        self, *args: str, show: bool = True, ok: tuple[int, ...] = (0,)
    ) -> subprocess.CompletedProcess[str]:
        """Run ``lattice ARGS``; print the command and its output when ``show``."""
        if show:
            say(dim(f"  $ lattice-workers {' '.join(args)}"))
        proc = subprocess.run(
            [sys.executable, "-m", "lattice_workers", *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if show:
            indented(proc.stdout)
            indented(proc.stderr)
        if proc.returncode not in ok:
            raise DemoError(
                f"`lattice-workers {' '.join(args)}` exited {proc.returncode}: "
                f"{(proc.stderr or proc.stdout).strip()}"
            )
        return proc

    def data(self, *args: str) -> Any:
        return json.loads(self.lattice(*args, "--json", show=False).stdout)["data"]

    # ------------------------------------------------------------------ the steps

    def make_project(self) -> None:
        self.root.mkdir()
        self.git("init", "-q")
        self.git("symbolic-ref", "HEAD", "refs/heads/main")
        (self.root / "tests").mkdir()
        (self.root / "pricing.py").write_text(PRICING)
        (self.root / "tests" / "test_pricing.py").write_text(TEST_PRICING)
        (self.root / "tests" / "test_checkout.py").write_text(TEST_CHECKOUT)
        (self.root / ".gitignore").write_text(".lattice/run/\n.lattice/logs/\n")
        (self.root / "README.md").write_text("# shop\n\nPrices for a small shop.\n")
        self.git("add", ".")
        self.git("commit", "-q", "-m", "Prices with tests")
        self.git("checkout", "-q", "-b", "bulk-discount")
        (self.root / "pricing.py").write_text(PRICING + BULK_DISCOUNT)
        with open(self.root / "tests" / "test_pricing.py", "a") as f:
            f.write(TEST_BULK)
        self.git("commit", "-q", "-am", "Bulk discount for 10 or more")
        self.git("checkout", "-q", "main")
        say(f"  a small Python project in {bold(str(self.root))}")
        say("  main: pricing.py and 5 tests; branch bulk-discount: a new discount and its tests")
        indented(self.git("log", "--oneline", "--all", "--graph"), "    ")

    def make_board(self) -> dict[str, str]:
        self.lattice("init", "--project-code", "DEMO")
        self.lattice("worker", "init")
        self.lattice("worker", "list")
        ids = {}
        for title, _ in TASKS:
            created = self.data("create", title)
            ids[title] = created.get("short_id") or created["id"]
        self.lattice("list")
        return ids

    def start_runs(self, ids: dict[str, str]) -> list[dict[str, Any]]:
        # Started explicitly (worker commands would start it on demand) so that the
        # workers inherit DEMO_GATE from this environment.
        self.lattice("supervisor", "start")
        self.supervisor_started = True
        runs = []
        for title, branch in TASKS:
            args = ["worker", "run", "TestRunner", ids[title]]
            if branch:
                args += ["--commit", branch]
            say(dim(f"  $ lattice-workers {' '.join(args)}"))
            run = self.data(*args)
            say(
                f"    started {run['run_id']} on {ids[title]} at {run['commit_sha'][:8]} "
                f"({branch or 'main'})"
            )
            runs.append(run)
        return runs

    def duplicate(self, task: str) -> bool:
        say("  Asking again for a run that is already live:")
        proc = self.lattice("worker", "run", "TestRunner", task, ok=(0, 5))
        refused = proc.returncode == 5
        say(
            f"  {green(OK) if refused else red(BAD)} refused with ALREADY_RUNNING (exit 5): one "
            "live run per task and worker, by construction"
        )
        return refused

    def wait_until_running(self, run_ids: list[str]) -> None:
        """Until every run has its process (the gate holds them there); 30 s at most."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            states = {r["run_id"]: r["state"] for r in self.data("worker", "ps")}
            if all(states.get(run_id) == "running" for run_id in run_ids):
                return
            time.sleep(0.2)

    def results(self, ids: dict[str, str], run_ids: list[str]) -> list[dict[str, Any]]:
        finished = {r["run_id"]: r for r in self.data("worker", "ps", "-a")}
        rows, out = [], []
        for (title, branch), run_id in zip(TASKS, run_ids, strict=True):
            run = finished[run_id]
            out.append(run)
            result = run.get("result") or {}
            counts = result.get("counts") or {}
            tests = ", ".join(
                f"{counts[k]} {k}" for k in ("passed", "failed", "errors") if counts.get(k)
            ) or str(result.get("outcome", "-"))
            state = green(run["state"]) if run["state"] == "completed" else red(run["state"])
            rows.append(
                [
                    ids[title],
                    title,
                    branch or "main",
                    run["commit_sha"][:8],
                    tests,
                    f"{run.get('duration_seconds') or 0:.1f}s",
                    state,
                ]
            )
        table(["TASK", "TITLE", "BRANCH", "COMMIT", "TESTS", "TIME", "RUN"], rows)
        return out

    def show_report(self, run: dict[str, Any]) -> None:
        report = Path((run.get("result") or {}).get("report", ""))
        if not report.is_file():
            raise DemoError(f"run {run['run_id']} attached no report")
        say(f"  {report.relative_to(self.root)} (attached as {run['result']['artifact_id']}):")
        lines = report.read_text().splitlines()
        keep = [line for line in lines if not line.startswith("- Run:")]
        shown = "\n".join(keep[:40]) + ("\n..." if len(keep) > 40 else "")
        indented(shown, "    │ " if _UTF8 else "    | ")

    def implement(self) -> list[str]:
        """One implementing run with the offline ChangelogEntry worker: its work kept,
        its diff shown, then applied to a branch; what went wrong (empty when all is well)."""
        task = self.data("create", "Mention the bulk discount in the changelog")
        ref = task.get("short_id") or task["id"]
        say(dim(f"  $ lattice-workers worker run ChangelogEntry {ref} --wait"))
        run = self.data("worker", "run", "ChangelogEntry", ref, "--wait")[0]
        changes = run.get("changes") or {}
        say(f"    {run['run_id']} {run['state']}: kept as {changes.get('ref', 'nothing')}")
        self.lattice("worker", "diff", run["run_id"], "--stat")
        branch = f"changelog-{ref.lower()}"
        self.lattice("worker", "apply", run["run_id"], "--branch", branch)
        problems = []
        if run["state"] != "completed" or changes.get("commits") != 1:
            problems.append(f"the implementing run ended {run['state']} with {changes}")
        entry = f"- {ref}: Mention the bulk discount in the changelog"
        taken = self.git("show", f"{branch}:CHANGELOG.md")
        checks = [
            (f"branch {branch} holds the change", entry in taken),
            ("your working tree and current branch are untouched", self._untouched()),
        ]
        for label, good in checks:
            say(f"  {green(OK) if good else red(BAD)} {label}")
            if not good:
                problems.append(label)
        return problems

    def _untouched(self) -> bool:
        return (
            not (self.root / "CHANGELOG.md").exists()
            and self.git("symbolic-ref", "--short", "HEAD") == "main"
        )

    def stop_and_verify(self) -> list[str]:
        pid = self.supervisor_pid()
        if self.supervisor_started:
            self.lattice("supervisor", "stop", ok=(0, 6))
            self.supervisor_started = False
        problems = []
        alive = self.leftover_processes(pid)
        problems += [f"process {p} is still alive" for p in alive]
        trees = [
            line
            for line in self.git("worktree", "list", "--porcelain").splitlines()
            if line.startswith("worktree ")
        ]
        problems += [f"worktree left behind: {t[9:]}" for t in trees[1:]]
        if self.worktrees.exists() and any(self.worktrees.rglob("*")):
            problems.append(f"files left under {self.worktrees}")
        checks = [
            ("the supervisor has exited", pid is None or pid not in alive),
            (
                "no worker process is left (none has this project's LATTICE_ROOT or runs "
                "in a worktree)",
                not [p for p in alive if p != pid],
            ),
            ("git worktree list shows only the project itself", len(trees) == 1),
            (
                f"the worktree folder {self.worktrees.name}/ is empty",
                not (self.worktrees.exists() and any(self.worktrees.rglob("*"))),
            ),
        ]
        for text, good in checks:
            say(f"  {green(OK) if good else red(BAD)} {text}")
        return problems

    def supervisor_pid(self) -> int | None:
        try:
            text = (self.root / ".lattice" / "run" / "supervisor.lock").read_text().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None

    def leftover_processes(self, supervisor: int | None) -> list[int]:
        """Live processes of this demo: the supervisor, or anything with our root or cwd."""
        if not Path("/proc").is_dir():
            return []
        marker = f"LATTICE_ROOT={self.root}\0".encode()
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                state = Path(f"/proc/{entry}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
                environ = Path(f"/proc/{entry}/environ").read_bytes() + b"\0"
                cwd = os.readlink(f"/proc/{entry}/cwd")
            except OSError:
                continue
            if state == b"Z":
                continue
            if int(entry) == supervisor or marker in environ or cwd.startswith(str(self.worktrees)):
                found.append(int(entry))
        return found


class DemoError(Exception):
    """A step of the demo did not do what it should."""


def run(demo: Demo) -> list[str]:
    """The whole tour; returns what went wrong (empty when all is well)."""
    problems: list[str] = []
    section(1, "A scratch project")
    demo.make_project()

    section(2, "A board, and the shipped workers")
    say("  `lattice-workers worker init` copies the shipped definitions, scripts and prompts into")
    say("  the project, where they are version-controlled and yours to edit.")
    ids = demo.make_board()

    section(3, "Four test runs at once")
    say("  TestRunner runs the project's tests in a fresh git worktree of the commit, so the")
    say("  four runs (one on the bulk-discount branch) never see each other's files.")
    started = demo.start_runs(ids)
    run_ids = [r["run_id"] for r in started]
    if not demo.duplicate(ids[TASKS[1][0]]):
        problems.append("the duplicate request was not refused")

    section(4, "While they run")
    say("  Each suite's checkout test waits for the demo, so you can watch them:")
    demo.wait_until_running(run_ids)
    demo.lattice("worker", "ps")
    say("  Letting them finish; `worker wait` exits 8 because one run failed:")
    demo.gate.touch()
    waited = demo.lattice("worker", "wait", *run_ids, ok=(0, 8))
    if waited.returncode != 8:
        problems.append(f"`worker wait` exited {waited.returncode}, expected 8 (one run fails)")

    section(5, "Results")
    finished = demo.results(ids, run_ids)
    expected = ["failed", "completed", "completed", "completed"]
    if [r["state"] for r in finished] != expected:
        problems.append(f"run states {[r['state'] for r in finished]}, expected {expected}")

    section(6, "The board remembers")
    say("  Every run is on the task's record, with the report it attached:")
    demo.lattice("show", ids[TASKS[0][0]])
    demo.show_report(finished[0])

    section(7, "An implementing run: its work kept, reviewed, taken")
    say("  Every run works in a repository of its own that borrows this project's objects;")
    say("  when it ends, what it changed is kept under refs/lattice/runs/<run>/<attempt>.")
    say("  The shipped ChangelogEntry worker (offline, no agent) adds the task's line to")
    say("  CHANGELOG.md and commits it:")
    problems += demo.implement()

    section(8, "Nothing left behind")
    problems += demo.stop_and_verify()
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the scratch project")
    args = parser.parse_args(argv)
    for tool in ("git",):
        if shutil.which(tool) is None:
            print(
                f"demo: {tool} is not installed; install it and run the demo again", file=sys.stderr
            )
            return 2
    began = time.monotonic()
    base = Path(tempfile.mkdtemp(prefix="lattice-demo-"))
    demo = Demo(base)
    say(bold("Lattice Workers demo"))
    say(f"  scratch folder: {base}{'' if args.keep else ' (removed at the end; --keep keeps it)'}")
    problems: list[str] = []
    try:
        problems = run(demo)
    except (DemoError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
        problems.append(str(err))
    except KeyboardInterrupt:
        problems.append("interrupted")
    finally:
        if demo.supervisor_started:
            problems += demo.stop_and_verify()
        if args.keep:
            say(f"\n  kept {demo.root}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    seconds = time.monotonic() - began
    say()
    if problems:
        for problem in problems:
            say(red(f"{BAD} {problem}"))
        say(bold(f"The demo found {len(problems)} problem(s) in {seconds:.0f} s."))
        return 1
    say(
        bold(
            f"{OK} Demo complete in {seconds:.0f} s: four test runs, one refused duplicate, "
            "one implementing run reviewed and applied, every run on the record, nothing "
            "left behind."
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
