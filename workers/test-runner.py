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
     ``PYTHON -m pytest`` when that interpreter has pytest, else ``PYTHON -m unittest
     discover``. PYTHON is ``TEST_PYTHON``, else ``$LATTICE_ROOT/.venv/bin/python``,
     else ``$VIRTUAL_ENV/bin/python``, else ``python3``.
  2. ``npm test`` when package.json has a real "test" script.
  3. ``make test`` when a Makefile has a ``test:`` target.
  4. ``cargo test`` when there is a Cargo.toml.
Nothing found: the report says so and the run succeeds (there was nothing to fail);
set ``TEST_REQUIRE=1`` to make that a failure instead.

Exit codes: 0 tests passed (or none found), 1 tests failed, 2 the runner could not do
its job (test tool missing, attach failed, no tests with TEST_REQUIRE=1).

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

    def __init__(self, framework: str, argv: list[str], why: str) -> None:
        self.framework = framework
        self.argv = argv
        self.why = why

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
    python = _python_interpreter()
    has_pytest = (
        subprocess.run(
            [python, "-c", "import pytest"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ).returncode
        == 0
    )
    if has_pytest:
        return Plan("pytest", [python, "-m", "pytest", "-q", "-rfE"], why)
    argv = [python, "-m", "unittest", "discover", "-v"]
    for folder in ("tests", "test"):
        if (cwd / folder).is_dir():
            argv += ["-s", folder]
            if (cwd / folder / "__init__.py").is_file():
                argv += ["-t", "."]
            break
    return Plan("unittest", argv, f"{why}; pytest is not installed for {python}")


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


def _python_interpreter() -> str:
    chosen = os.environ.get("TEST_PYTHON")
    if chosen:
        return chosen
    root, venv = os.environ.get("LATTICE_ROOT"), os.environ.get("VIRTUAL_ENV")
    candidates = [Path(root) / ".venv" / "bin" / "python"] if root else []
    candidates += [Path(venv) / "bin" / "python"] if venv else []
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("python3") or sys.executable


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
    if plan is None:
        required = os.environ.get("TEST_REQUIRE", "") not in ("", "0")
        outcome, exit_code = ("error", 2) if required else ("no_tests", 0)
        title = "Tests: none found"
        body = [
            'No tests were found: no pytest or unittest tests, no "test" script in '
            "package.json, no test target in a Makefile, no Cargo.toml.",
            "",
            'Set TEST_COMMAND in the definition\'s "env" to say how this project is tested.',
        ]
        result.update(outcome=outcome)
        print("test-runner: no tests found", flush=True)
    elif shutil.which(plan.argv[0]) is None:
        outcome, exit_code = "error", 2
        title = f"Tests: could not run ({plan.argv[0]} not found)"
        body = [
            f"`{plan.shown}` was chosen ({plan.why}), but `{plan.argv[0]}` is not on "
            f"the worker's PATH ({os.environ.get('PATH', '')}). Install it, or set "
            'TEST_COMMAND in the definition\'s "env".'
        ]
        result.update(outcome=outcome, framework=plan.framework, command=plan.shown)
        print(f"test-runner: {plan.argv[0]} not found on PATH", file=sys.stderr, flush=True)
    else:
        code, summary, tail, total, seconds = run(plan, cwd)
        counts = count(summary)
        no_tests = (plan.framework == "pytest" and code == 5) or (
            counts is not None and code in (0, 5) and not any(counts.values())
        )
        failed = not no_tests and (
            code != 0 or (counts is not None and counts["failed"] + counts["errors"] > 0)
        )
        outcome = "no_tests" if no_tests else "failed" if failed else "passed"
        exit_code = 1 if failed else 0
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
            "no_tests": "Tests: none found",
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
        print(f"test-runner: {title}", flush=True)

    path = report_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([f"# {title}", "", *header, "", *body, ""]), encoding="utf-8")
    artifact, error = attach(path, role, title)
    result.update(report=str(path), artifact_id=artifact)
    if artifact is None:
        print(f"test-runner: could not attach {path}: {error}", file=sys.stderr, flush=True)
        result.update(attach_error=error[-500:])
        exit_code = max(exit_code, 2)
    else:
        print(f"test-runner: attached {path} as {artifact} (role {role})", flush=True)
    write_result(result)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
