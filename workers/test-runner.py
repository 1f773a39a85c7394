#!/usr/bin/env python3
"""TestRunner: run the project's tests in the run's worktree and attach the result.

The worker of ``workers/test-runner.json``. It needs no AI engine and no network of its
own: it finds how the project is tested, runs that in its working directory (the
run's worktree, at the commit under test), streams the output into the run's log,
writes a Markdown report with the counts and the tail of the output under
``$LATTICE_REPORT_DIR``, attaches it with ``lattice attach`` (role
``$LATTICE_ARTIFACT_ROLE``, default ``tests``) and writes a JSON summary to
``$LATTICE_RESULT_FILE``.

Detection, first match wins (``TEST_COMMAND`` overrides it, run with ``bash -c``):
  1. Python: pytest configuration (pytest.ini, conftest.py, [tool.pytest...] in
     pyproject.toml, [tool:pytest] in setup.cfg, [pytest] in tox.ini) or test files
     (tests/ or test/ holding test_*.py or *_test.py, or ./test_*.py). Runs
     ``PYTHON -m pytest`` when that interpreter has pytest; a project configured for
     pytest whose interpreter lacks it fails ("pytest is not installed for PYTHON");
     plain test files fall back to ``PYTHON -m unittest discover``. PYTHON is the
     project's own interpreter: ``TEST_PYTHON``, else the worktree's virtual
     environment (``.venv``, ``venv``), else the project root's, else ``uv run python``
     when the project uses uv (uv.lock, [tool.uv]) and uv is installed, else
     ``$VIRTUAL_ENV/bin/python``, else the first ``python3`` on PATH. The log says
     which and why.
  2. ``npm test`` when package.json has a real "test" script.
  3. ``make test`` when a Makefile has a ``test:`` target.
  4. ``cargo test`` when there is a Cargo.toml.

It never reports success for tests it did not run: no tests found, no tests
collected (pytest's exit code 5, unittest's "Ran 0 tests"), a test framework that is
missing, or output whose counts it cannot read is a failure, with a one-line reason
as the last line of the log, in the report and as ``error`` in the result (so in the
run's terminal event). ``TEST_ALLOW_NONE=1`` lets a project with no tests at all
succeed.

Exit codes: 0 tests ran and passed, 1 tests failed, 2 the runner could not tell
(no tests, test tool missing, unreadable output, attach failed).

Python 3.8+, standard library only: it runs with whatever ``python3`` the machine has.
"""

from __future__ import annotations

import collections
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

TAIL_LINES = int(os.environ.get("TEST_TAIL_LINES") or 60)
#: Lines that carry a summary, kept whole for the count parsers below.
SUMMARY_HINT = re.compile(
    r"\b(passed|failed|passing|failing|pending|Ran \d+ tests?|test result:|Tests:|OK|FAILED)\b"
)


class Plan:
    """What to run and why we chose it."""

    def __init__(
        self, framework: str, argv: list[str], why: str, missing: str = "", note: str = ""
    ) -> None:
        self.framework = framework
        self.argv = argv
        self.why = why
        #: Why this plan cannot run at all (a framework the interpreter lacks).
        self.missing = missing
        #: What to add to a "no tests ran" reason (the fallback's cause).
        self.note = note

    @property
    def shown(self) -> str:
        return " ".join(shlex.quote(a) for a in self.argv)


# ------------------------------------------------------------------------ detection


def detect(cwd: Path) -> Plan | None:
    override = os.environ.get("TEST_COMMAND", "").strip()
    if override:
        return Plan("custom", ["bash", "-c", override], "TEST_COMMAND is set")
    plan = _python(cwd)
    if plan:
        return plan
    package = cwd / "package.json"
    if package.is_file():
        try:
            script = json.loads(package.read_text(encoding="utf-8")).get("scripts", {}).get("test")
        except (ValueError, AttributeError, OSError):
            script = None
        if isinstance(script, str) and script.strip() and "no test specified" not in script:
            return Plan("npm", ["npm", "test"], 'package.json has a "test" script')
    for name in ("GNUmakefile", "makefile", "Makefile"):
        makefile = cwd / name
        if makefile.is_file() and re.search(
            r"^test\s*:(?!=)", makefile.read_text(encoding="utf-8", errors="replace"), re.M
        ):
            return Plan("make", ["make", "test"], f"{name} has a test target")
    if (cwd / "Cargo.toml").is_file():
        return Plan("cargo", ["cargo", "test"], "Cargo.toml")
    return None


def _python(cwd: Path) -> Plan | None:
    why = _python_reason(cwd)
    if why is None:
        return None
    python, chosen_because = python_interpreter(cwd)
    shown = " ".join(python)
    print(f"test-runner: Python is {shown} ({chosen_because})", flush=True)
    has_pytest = (
        subprocess.run(
            [*python, "-c", "import pytest"],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ).returncode
        == 0
    )
    pytest_argv = [*python, "-m", "pytest", "-q", "-rfE"]
    if has_pytest:
        return Plan("pytest", pytest_argv, why)
    missing = f"pytest is not installed for {shown}"
    if not why.endswith(("holds Python tests", "at the top level")):
        # Configured for pytest: unittest would find nothing, or not the same tests.
        return Plan("pytest", pytest_argv, why, missing=missing)
    argv = [*python, "-m", "unittest", "discover", "-v"]
    for folder in ("tests", "test"):
        if (cwd / folder).is_dir():
            argv += ["-s", folder]
            if (cwd / folder / "__init__.py").is_file():
                argv += ["-t", "."]
            break
    return Plan("unittest", argv, f"{why}; {missing}", note=missing)


def _python_reason(cwd: Path) -> str | None:
    markers = {
        "pytest.ini": None,
        "conftest.py": None,
        "pyproject.toml": "[tool.pytest",
        "setup.cfg": "[tool:pytest]",
        "tox.ini": "[pytest]",
    }
    for name, needle in markers.items():
        path = cwd / name
        if path.is_file() and (
            needle is None or needle in path.read_text(encoding="utf-8", errors="replace")
        ):
            return f"{name} configures pytest" if needle else f"{name} exists"
    for folder in ("tests", "test"):
        base = cwd / folder
        if base.is_dir():
            for pattern in ("test_*.py", "*_test.py"):
                if next(base.rglob(pattern), None) is not None:
                    return f"{folder}/ holds Python tests"
    if next(cwd.glob("test_*.py"), None) is not None:
        return "test_*.py files at the top level"
    return None


def python_interpreter(cwd: Path) -> tuple[list[str], str]:
    """The command that runs the project's Python, and why it was chosen.

    The project's own interpreter, not whatever ``python3`` comes first on the
    supervisor's PATH: that one rarely has the project's test dependencies.
    """
    chosen = os.environ.get("TEST_PYTHON")
    if chosen:
        return [chosen], "TEST_PYTHON is set"
    root = os.environ.get("LATTICE_ROOT")
    places = [(cwd, "the worktree's")] + ([(Path(root), "the project's")] if root else [])
    for base, whose in places:
        for name in (".venv", "venv"):
            candidate = base / name / "bin" / "python"
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return [str(candidate)], f"{whose} virtual environment {name}/"
    uses_uv = _uses_uv(cwd)
    if uses_uv and shutil.which("uv"):
        return ["uv", "run", "python"], f"the project uses uv ({uses_uv}) and uv is installed"
    venv = os.environ.get("VIRTUAL_ENV")
    if venv:
        candidate = Path(venv) / "bin" / "python"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return [str(candidate)], "VIRTUAL_ENV is set"
    found = shutil.which("python3") or sys.executable
    no_uv = f"it uses uv ({uses_uv}) but uv is not installed" if uses_uv else "no uv"
    return [found], f"no .venv or venv in the worktree or the project, {no_uv}: python3 on PATH"


def _uses_uv(cwd: Path) -> str:
    """What shows that the project uses uv ("uv.lock"), or ""."""
    if (cwd / "uv.lock").is_file():
        return "uv.lock"
    pyproject = cwd / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8", errors="replace") if pyproject.is_file() else ""
    if "[tool.uv" in text:
        return "[tool.uv] in pyproject.toml"
    return ""


# ------------------------------------------------------------------------ counting


def count(lines: list[str]) -> dict[str, int] | None:
    """Pass/fail counts from the summary lines of pytest, unittest, cargo, jest or mocha."""
    for parser in (_pytest_counts, _unittest_counts, _cargo_counts, _jest_counts, _mocha_counts):
        found = parser(lines)
        if found is not None:
            return found
    return None


def _blank() -> dict[str, int]:
    return {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}


def _pytest_counts(lines: list[str]) -> dict[str, int] | None:
    for line in reversed(lines):
        if not re.search(r"\bin \d+(\.\d+)?s\b", line):
            continue
        pairs = re.findall(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed)\b", line)
        if pairs:
            out = _blank()
            for n, word in pairs:
                key = {"error": "errors", "xfailed": "skipped", "xpassed": "passed"}.get(word, word)
                out[key] += int(n)
            return out
        if "no tests ran" in line:
            return _blank()
    return None


def _unittest_counts(lines: list[str]) -> dict[str, int] | None:
    ran = None
    for line in lines:
        m = re.match(r"Ran (\d+) tests? in ", line)
        if m:
            ran = int(m.group(1))
    if ran is None:
        return None
    out = _blank()
    for line in reversed(lines):
        m = re.match(r"(OK|FAILED)(?: \((.*)\))?\s*$", line.strip())
        if m:
            details = {k.strip(): v for k, v in re.findall(r"([a-z ]+)=(\d+)", m.group(2) or "")}
            out["failed"] = int(details.get("failures", 0))
            out["errors"] = int(details.get("errors", 0))
            out["skipped"] = int(details.get("skipped", 0)) + int(
                details.get("expected failures", 0)
            )
            break
    out["passed"] = max(0, ran - out["failed"] - out["errors"] - out["skipped"])
    return out


def _cargo_counts(lines: list[str]) -> dict[str, int] | None:
    out, seen = _blank(), False
    for line in lines:
        m = re.search(r"test result: \w+\. (\d+) passed; (\d+) failed; (\d+) ignored", line)
        if m:
            seen = True
            out["passed"] += int(m.group(1))
            out["failed"] += int(m.group(2))
            out["skipped"] += int(m.group(3))
    return out if seen else None


def _jest_counts(lines: list[str]) -> dict[str, int] | None:
    for line in reversed(lines):
        if line.strip().startswith("Tests:"):
            out = _blank()
            for n, word in re.findall(r"(\d+) (passed|failed|skipped|todo)", line):
                out["skipped" if word == "todo" else word] += int(n)
            return out
    return None


def _mocha_counts(lines: list[str]) -> dict[str, int] | None:
    out, seen = _blank(), False
    for line in lines:
        for n, word in re.findall(r"^\s*(\d+) (passing|failing|pending)\b", line):
            seen = True
            out[{"passing": "passed", "failing": "failed", "pending": "skipped"}[word]] += int(n)
    return out if seen else None


# ------------------------------------------------------------------------ running


def run(plan: Plan, cwd: Path) -> tuple[int, list[str], collections.deque[str], int, float]:
    """Run the plan, echoing its output into our log.

    Returns (exit code, summary lines, tail, line count, seconds). The children stay in
    our process group, so a cancel or deadline of the run stops them with us.
    """
    print(f"$ {plan.shown}", flush=True)
    start = time.monotonic()
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    summary: list[str] = []
    total = 0
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with subprocess.Popen(
        plan.argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    ) as proc:
        assert proc.stdout is not None
        for raw in proc.stdout:
            sys.stdout.buffer.write(raw)
            sys.stdout.flush()
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            total += 1
            tail.append(line)
            if SUMMARY_HINT.search(line):
                summary.append(line)
                del summary[:-200]
        code = proc.wait()
    return code, summary, tail, total, time.monotonic() - start


# ------------------------------------------------------------------------ reporting


def fenced(lines: list[str]) -> str:
    """The lines in a code fence longer than any run of backticks inside them."""
    longest = max((len(m) for line in lines for m in re.findall(r"`+", line)), default=0)
    fence = "`" * max(3, longest + 1)
    return "\n".join([fence + "text", *lines, fence])


def report_path() -> Path:
    root = Path(os.environ["LATTICE_ROOT"])
    folder = Path(os.environ.get("LATTICE_REPORT_DIR") or root / ".lattice" / "reports")
    prefix = os.environ.get("LATTICE_REPORT_PREFIX") or "tests"
    task = os.environ.get("LATTICE_SHORT_ID") or os.environ["LATTICE_TASK_ID"]
    return folder / f"{prefix}-{task}-{os.environ.get('LATTICE_RUN_ID', 'manual')}.md"


def attach(path: Path, role: str, title: str) -> tuple[str | None, str]:
    """``lattice attach`` the report; (artifact id or None, error text)."""
    argv = [
        "lattice",
        "attach",
        os.environ["LATTICE_TASK_ID"],
        str(path),
        "--role",
        role,
        "--title",
        title,
        "--json",
    ]
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    except OSError as err:
        return None, f"could not run lattice: {err}"
    try:
        return str(json.loads(proc.stdout)["data"]["artifact_id"]), ""
    except (ValueError, KeyError, TypeError):
        return None, (proc.stderr or proc.stdout).strip() or f"exit code {proc.returncode}"


def write_result(summary: dict[str, object]) -> None:
    target = os.environ.get("LATTICE_RESULT_FILE")
    if target:
        Path(target).write_text(json.dumps(summary, sort_keys=True) + "\n", encoding="utf-8")


def judge(plan: Plan, code: int, counts: dict[str, int] | None) -> tuple[str, int, str]:
    """(outcome, exit code, one-line reason) of a finished test command.

    Success needs proof: exit code 0 *and* counts read from the output with at least
    one test run. Anything else is a failure that says why.
    """
    shown = f"`{plan.shown}`"
    ran = counts is not None and any(counts.values())
    if (plan.framework == "pytest" and code == 5) or (counts is not None and not ran):
        what = (
            "pytest collected no tests"
            if plan.framework == "pytest"
            else (f"{plan.framework} ran 0 tests")
        )
        return "no_tests", 2, what + (f" ({plan.note})" if plan.note else "")
    if counts is not None and counts["failed"] + counts["errors"] > 0:
        numbers = ", ".join(
            f"{counts[k]} {k}" for k in ("failed", "errors", "passed", "skipped") if counts[k]
        )
        return "failed", 1, f"tests failed: {numbers}"
    if code != 0:
        tail = "" if counts is not None else " and printed no test counts"
        return "failed", 1, f"{shown} exited with code {code}{tail}"
    if counts is None:
        return "error", 2, f"could not read how many tests {shown} ran (no counts in its output)"
    return "passed", 0, ""


def main() -> int:
    for name in ("LATTICE_ROOT", "LATTICE_TASK_ID"):
        if not os.environ.get(name):
            print(
                f"test-runner: {name} is not set; run me with `lattice worker run TestRunner TASK`",
                file=sys.stderr,
            )
            return 2
    cwd = Path.cwd()
    role = os.environ.get("LATTICE_ARTIFACT_ROLE") or "tests"
    task = os.environ.get("LATTICE_SHORT_ID") or os.environ["LATTICE_TASK_ID"]
    commit = os.environ.get("LATTICE_COMMIT_SHA", "")
    header = [
        f"- Task: {task}",
        f"- Commit: {commit or '(not a git checkout)'}",
        f"- Run: {os.environ.get('LATTICE_RUN_ID', '-')}",
    ]
    result: dict[str, object] = {"task": task, "commit": commit}
    plan = detect(cwd)
    body: list[str]
    reason = ""
    if plan is None:
        allowed = os.environ.get("TEST_ALLOW_NONE", "") not in ("", "0")
        outcome, exit_code = "no_tests", 0 if allowed else 2
        reason = "" if allowed else "no tests found"
        title = "Tests: none found"
        body = [
            'No tests were found: no pytest or unittest tests, no "test" script in '
            "package.json, no test target in a Makefile, no Cargo.toml.",
            "",
            'Set TEST_COMMAND in the definition\'s "env" to say how this project is tested'
            " (or TEST_ALLOW_NONE=1 to let a project without tests pass).",
        ]
        result.update(outcome=outcome)
    elif plan.missing or shutil.which(plan.argv[0]) is None:
        outcome, exit_code = "error", 2
        reason = plan.missing or f"{plan.argv[0]} is not on the worker's PATH"
        title = f"Tests: could not run ({reason})"
        fix = (
            "Install it in the project's virtual environment (.venv), or point TEST_PYTHON "
            'at an interpreter that has it in the definition\'s "env".'
            if plan.missing
            else f"Install it (PATH is {os.environ.get('PATH', '')}), or set TEST_COMMAND "
            'in the definition\'s "env".'
        )
        body = [f"`{plan.shown}` was chosen ({plan.why}), but {reason}. {fix}"]
        result.update(outcome=outcome, framework=plan.framework, command=plan.shown)
    else:
        code, summary, tail, total, seconds = run(plan, cwd)
        counts = count(summary)
        outcome, exit_code, reason = judge(plan, code, counts)
        shown = counts or {}
        numbers = (
            ", ".join(
                f"{shown[k]} {k}" for k in ("failed", "errors", "passed", "skipped") if shown.get(k)
            )
            or "counts not recognised in the output"
        )
        title = {
            "passed": "Tests: passed",
            "failed": "Tests: FAILED",
            "no_tests": "Tests: none ran",
            "error": "Tests: could not tell",
        }[outcome] + f" ({numbers})"
        header += [
            f"- Command: `{plan.shown}` ({plan.framework}: {plan.why})",
            f"- Exit code: {code}   Duration: {seconds:.1f} s",
            "- Counts: " + (", ".join(f"{k} {v}" for k, v in shown.items()) or "not recognised"),
        ]
        shown_lines = list(tail)
        body = [f"## Output (last {len(shown_lines)} of {total} lines)", "", fenced(shown_lines)]
        result.update(
            outcome=outcome,
            framework=plan.framework,
            command=plan.shown,
            exit_code=code,
            duration_seconds=round(seconds, 3),
            counts=counts,
        )
    if reason:
        header.append(f"- Why it failed: {reason}")
        result.update(error=reason)

    path = report_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([f"# {title}", "", *header, "", *body, ""]), encoding="utf-8")
    artifact, error = attach(path, role, title)
    result.update(report=str(path), artifact_id=artifact)
    if artifact is None:
        print(f"test-runner: could not attach {path}: {error}", file=sys.stderr, flush=True)
        result.update(attach_error=error[-500:])
        exit_code = max(exit_code, 2)
        reason = reason or f"could not attach the report: {error.splitlines()[-1] if error else ''}"
        result.update(error=reason)
    else:
        print(f"test-runner: attached {path} as {artifact} (role {role})", flush=True)
    write_result(result)
    # The verdict is the log's last line: what a failed run's event shows (log_tail).
    if reason:
        print(f"test-runner: FAILED: {reason}", file=sys.stderr, flush=True)
    else:
        print(f"test-runner: {title}", flush=True)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
