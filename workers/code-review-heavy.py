#!/usr/bin/env python3
"""CodeReviewHeavy: several reviewers in parallel, merged into one attached report.

The worker of ``workers/code-review-heavy.json``. For every engine in
``REVIEW_ENGINES`` (default ``claude codex gemini``) that is on PATH, and every pass in
``REVIEW_PASSES`` (default ``standard critical``), it starts one reviewer, all at
once, in the run's worktree. An engine that is not installed is skipped, with a note
in the report; when none is, the run fails with a message that says so.

Each reviewer runs through the engine's adapter, as an agent worker of that engine
does: ``$LATTICE_PYTHON -m lattice_workers.engines run ENGINE`` (the supervisor's
Python, which has this package) gives the CLI its unattended argv (streamed output,
trust and sandbox flags), the prompt on standard input (never in argv, where ``ps``
shows it), reads its stream, and prints one JSON summary: the ``agent`` object
(model, turns, tokens, cost, ``error_kind`` and a sentence saying what to fix) and the
final answer, which is the review. Each reviewer's readable transcript goes to the
run's log as it happens, its lines prefixed with the reviewer (``[claude (critical)]``).

Each reviewer gets the common part of ``$LATTICE_PROMPT_FILE`` plus its pass's part
(the file is split at ``<!-- pass: NAME -->`` and ``<!-- merge -->`` lines). The
reviews are then merged by one engine (``REVIEW_MERGE_ENGINE``, default: the first
available engine; ``none`` turns merging off), given the file's merge part followed
by the reviews. When no engine can merge, or the merge fails, the reviews are
concatenated under one heading per reviewer. The report goes to
``$LATTICE_REPORT_DIR``, is attached with ``lattice attach`` (role
``$LATTICE_ARTIFACT_ROLE``) and summarised in ``$LATTICE_RESULT_FILE``, whose
``agent`` object (the reviewers' figures summed; ``error_kind`` and ``error`` when no
review was usable) the supervisor puts on the run's terminal event.

``REVIEW_CLAUDE_ARGS``, ``REVIEW_CODEX_ARGS``, ``REVIEW_GEMINI_ARGS`` (split like a
shell would) are appended to each CLI's argv, with the defaults below, which let a
reviewer read the code and run the project's checks.

Each reviewer has ``REVIEW_TIMEOUT_MINUTES`` (default 15) to finish, and one that
prints nothing but network retries for ``REVIEW_NETWORK_SECONDS`` (default 60; codex
retries without end) is stopped then, with what it started (SIGTERM, then SIGKILL
after 10 s), and counts as failed, so one hung engine cannot hold the run to its
deadline. The reviewers are plain children of this process, in the run's process
group (no ``setsid``, no ``nohup``): a cancel or the run's deadline stops every one.
Each reviewer's end is written to the log as it happens, a failure with its
``error_kind`` and the sentence its engine's reader wrote from the CLI's own words.

A review is usable when its reviewer ended without an ``error_kind`` and it names a
verdict. With no usable review nothing is attached: the run fails, its error says
why each engine's reviewers failed, and its ``error_kind`` is theirs (the commonest).

Exit codes: 0 the report is attached, 1 no reviewer gave a usable review or the report
could not be attached, 2 no reviewer engine is installed (nothing is attached).
Python 3.8+, standard library only (the engines run under ``$LATTICE_PYTHON``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

ENGINES = ("claude", "codex", "gemini")
#: Appended to the adapter's argv (which already streams, takes the prompt on stdin,
#: trusts the worktree and lets the agent write it: docs/workers.md).
DEFAULT_ARGS = {
    "claude": "--allowedTools Bash,Read,Grep,Glob",
    "codex": "",
    "gemini": "--approval-mode yolo",
}
VERDICTS = ("approve", "approve_with_nits", "request_changes")
#: The order in which a run's ``error_kind`` is chosen among equally common ones.
ERROR_KINDS = ("auth", "network", "rate_limit", "budget", "max_turns", "agent_error")
MARKER = re.compile(r"^<!--\s*(pass:\s*([A-Za-z0-9_-]+)|merge)\s*-->\s*$")
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
#: Seconds between SIGTERM and SIGKILL for a reviewer that must be stopped.
KILL_GRACE = 10.0
#: How much longer than its time limit a reviewer's runner may take to stop it and
#: report, before this script stops the runner itself.
RUNNER_SLACK = KILL_GRACE + 30.0
_LOG_LOCK = threading.Lock()


class Agent:
    """One engine on one prompt, through ``python -m lattice_workers.engines run``."""

    def __init__(self, engine: str, label: str, scratch: Path) -> None:
        self.engine = engine
        self.label = label
        name = re.sub(r"[^A-Za-z0-9]+", "-", label).strip("-")
        self.prompt_file = scratch / f"{name}.prompt"
        self.summary_file = scratch / f"{name}.json"
        self.output_dir = scratch / f"{name}-out"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.seconds = 0.0
        self.summary: dict[str, object] | None = None
        self.runner_exit: int | None = None

    @property
    def agent(self) -> dict[str, object]:
        found = (self.summary or {}).get("agent")
        return found if isinstance(found, dict) else {}

    @property
    def answer(self) -> str:
        return str((self.summary or {}).get("answer") or "").strip()

    def start(self, prompt: str, limit: float, network_limit: float) -> None:
        self.prompt_file.write_text(prompt, encoding="utf-8")
        argv = [
            os.environ.get("LATTICE_PYTHON") or sys.executable,
            "-m",
            "lattice_workers.engines",
            "run",
            self.engine,
            "--args",
            os.environ.get(f"REVIEW_{self.engine.upper()}_ARGS", DEFAULT_ARGS[self.engine]),
            "--output-dir",
            str(self.output_dir),
            "--timeout",
            str(limit),
            "--network-seconds",
            str(network_limit),
            "--kill-grace",
            str(KILL_GRACE),
            "--label",
            self.label,
            "--network-knob",
            'REVIEW_NETWORK_SECONDS in the definition\'s "env"',
            "--timeout-knob",
            'REVIEW_TIMEOUT_MINUTES in the definition\'s "env"',
        ]
        with open(self.prompt_file, "rb") as stdin, open(self.summary_file, "wb") as out:
            # Its transcript (stderr) goes straight to the run's log, line by line.
            self.proc = subprocess.Popen(argv, stdin=stdin, stdout=out)
        self.started = time.monotonic()

    def wait(self, limit: float) -> None:
        assert self.proc is not None
        try:
            self.runner_exit = self.proc.wait(timeout=limit + RUNNER_SLACK)
        except subprocess.TimeoutExpired:
            stop(self.proc)
            self.runner_exit = self.proc.returncode
        self.seconds = time.monotonic() - self.started
        try:
            lines = self.summary_file.read_text(encoding="utf-8").strip().splitlines()
            found = json.loads(lines[-1]) if lines else None
        except (OSError, ValueError):
            found = None
        self.summary = found if isinstance(found, dict) else None

    def failure(self) -> tuple[str, str] | None:
        """(error_kind, sentence) when it gave nothing usable, else None."""
        if self.summary is None:
            return "agent_error", (
                f"the engine runner (`$LATTICE_PYTHON -m lattice_workers.engines run "
                f"{self.engine}`) gave no summary (exit code {self.runner_exit}); see the "
                "run's log. Run this worker with `lattice worker run`, which sets "
                "LATTICE_PYTHON to a Python that has lattice-workers"
            )
        kind = self.agent.get("error_kind")
        if kind:
            return str(kind), str(self.agent.get("error") or f"{self.engine} failed")
        return None

    def figures(self) -> dict[str, object]:
        return self.agent


class Reviewer(Agent):
    """One engine running one pass."""

    def __init__(self, engine: str, pass_name: str, scratch: Path) -> None:
        super().__init__(engine, f"{engine} ({pass_name})", scratch)
        self.pass_name = pass_name

    @property
    def text(self) -> str:
        return self.answer

    @property
    def ok(self) -> bool:
        """A usable review: no error_kind, and a verdict in its answer."""
        return self.failure() is None and verdict_of(self.text) is not None

    def start_review(self, prompt: str, limit: float, network_limit: float) -> None:
        self.start(prompt, limit, network_limit)
        assert self.proc is not None
        log(f"started {self.label} (pid {self.proc.pid})")

    def wait_review(self, limit: float) -> Reviewer:
        self.wait(limit)
        if self.ok:
            log(f"finished {self.label}: ok in {self.seconds:.1f} s")
        else:
            log(f"finished {self.label}: {self.said()}")
        return self

    def kind(self) -> str:
        found = self.failure()
        return found[0] if found else "agent_error"

    def why(self) -> str:
        found = self.failure()
        if found is not None:
            return found[1]
        said = last_words(self.text)
        return "no verdict in its review" + (": " + said if said else "")

    def said(self) -> str:
        """Why this reviewer gave no usable review, with its kind."""
        return f"{self.label} failed ({self.kind()}): {self.why()}"


def log(message: str) -> None:
    with _LOG_LOCK:
        print(f"code-review-heavy: {message}", flush=True)


def last_words(text: str, lines: int = 5, limit: int = 400) -> str:
    """The last non-empty lines of ``text``, ANSI codes stripped, joined with " / "."""
    said = [ANSI.sub("", line).strip() for line in text.splitlines()]
    joined = " / ".join([line for line in said if line][-lines:])
    return joined if len(joined) <= limit else "..." + joined[-(limit - 3) :]


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc), children first."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children") as f:
                    kids = [int(x) for x in f.read().split()]
            except (OSError, ValueError):
                continue
            found += kids
            todo += kids
    return found


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to a runner and what it started, then SIGKILL after KILL_GRACE.

    They stay in the run's process group (no setsid: a cancel must reach them), so
    they are found through /proc instead of signalled as a group."""
    family = [proc.pid, *descendants(proc.pid)]
    for pid in family:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    try:
        proc.wait(timeout=KILL_GRACE)
    except subprocess.TimeoutExpired:
        pass
    for pid in [*family, *descendants(proc.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    proc.wait()


def summed(agents: list[Agent]) -> dict[str, object]:
    """One ``agent`` object for the run: the engines and models that ran, the turns,
    tokens and cost they reported, summed (None where none reported any)."""
    figures = [a.figures() for a in agents]

    def total(key: str) -> object:
        values = [f.get(key) for f in figures]
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if not numbers:
            return None
        return round(sum(numbers), 6) if key == "cost_usd" else int(sum(numbers))

    def distinct(key: str) -> str | None:
        seen = [str(f[key]) for f in figures if f.get(key)]
        return ",".join(dict.fromkeys(seen)) or None

    return {
        "engine": ",".join(dict.fromkeys(a.engine for a in agents)) or None,
        "model": distinct("model"),
        "session_id": None,
        "turns": total("turns"),
        "input_tokens": total("input_tokens"),
        "output_tokens": total("output_tokens"),
        "cache_read_tokens": total("cache_read_tokens"),
        "cost_usd": total("cost_usd"),
        "final_message": None,
        "error_kind": None,
        "error": None,
    }


def none_usable(reviewers: list[Reviewer]) -> tuple[str, str]:
    """(error_kind, sentence) of a run whose reviewers all failed: each engine's
    reviewers with their kind and their engine's own sentence, once per engine and
    kind."""
    groups: dict[tuple[str, str], list[Reviewer]] = {}
    for r in reviewers:
        groups.setdefault((r.engine, r.kind()), []).append(r)
    parts = []
    for (engine, kind), members in groups.items():
        passes = ", ".join(r.pass_name for r in members)
        parts.append(f"{engine} ({passes}) failed ({kind}): {members[0].why()}")
    counts = Counter(r.kind() for r in reviewers)
    kind = max(
        counts,
        key=lambda k: (counts[k], -ERROR_KINDS.index(k) if k in ERROR_KINDS else -99),
    )
    return kind, "no reviewer gave a usable review (nothing attached): " + " | ".join(parts)


def split_prompt(text: str) -> tuple[str, dict[str, str], str]:
    """(common part, {pass: its part}, merge part) of the prompt file."""
    common: list[str] = []
    passes: dict[str, list[str]] = {}
    merge: list[str] = []
    current = common
    for line in text.splitlines():
        m = MARKER.match(line.strip())
        if m is None:
            current.append(line)
        elif m.group(2):
            current = passes.setdefault(m.group(2), [])
        else:
            current = merge
    return (
        "\n".join(common).strip(),
        {k: "\n".join(v).strip() for k, v in passes.items()},
        "\n".join(merge).strip(),
    )


def verdict_of(text: str) -> str | None:
    m = re.search(
        r"^\W*verdict\W*\s*(approve_with_nits|approve|request_changes)\b", text, re.I | re.M
    )
    return m.group(1).lower() if m else None


def task_title() -> str:
    try:
        proc = subprocess.run(
            ["lattice", "show", os.environ["LATTICE_TASK_ID"], "--json"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return str(json.loads(proc.stdout)["data"]["task"]["title"])
    except (OSError, ValueError, KeyError, TypeError, subprocess.TimeoutExpired):
        return ""


def merge_reviews(
    engine: str,
    instructions: str,
    done: list[Reviewer],
    scratch: Path,
    limit: float,
    network_limit: float,
) -> tuple[Agent, str | None, str]:
    """(the merging agent, merged text or None, why not)."""
    reviews = "\n\n".join(f"=== REVIEW: {r.label} ===\n\n{r.text}" for r in done)
    merger = Agent(engine, f"{engine} (merge)", scratch)
    log(f"merging {len(done)} reviews with {engine}")
    merger.start(instructions + "\n\n" + reviews + "\n", limit, network_limit)
    merger.wait(limit)
    failed = merger.failure()
    if failed is not None:
        return merger, None, f"the merge by {engine} failed ({failed[0]}): {failed[1]}"
    if not merger.answer:
        return merger, None, f"the merge by {engine} failed (agent_error): no answer"
    return merger, merger.answer, ""


def attach(path: Path, role: str) -> tuple[str | None, str]:
    argv = [
        "lattice",
        "attach",
        os.environ["LATTICE_TASK_ID"],
        str(path),
        "--role",
        role,
        "--title",
        "Code review (heavy)",
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


def reviewer_summary(r: Reviewer) -> dict[str, object]:
    """One reviewer in the result file: how it ended and what its engine reported."""
    figures = r.figures()
    return {
        "engine": r.engine,
        "pass": r.pass_name,
        "ok": r.ok,
        "error_kind": None if r.ok else r.kind(),
        "error": None if r.ok else r.why()[:1000],
        "exit_code": (r.summary or {}).get("exit_code"),
        "seconds": round(r.seconds, 1),
        **{
            key: figures.get(key)
            for key in ("model", "session_id", "turns", "input_tokens", "output_tokens",
                        "cost_usd")
        },
    }


def write_result(summary: dict[str, object]) -> None:
    target = os.environ.get("LATTICE_RESULT_FILE")
    if target:
        Path(target).write_text(json.dumps(summary, sort_keys=True) + "\n", encoding="utf-8")


def main(scratch: Path) -> int:
    for name in ("LATTICE_ROOT", "LATTICE_TASK_ID", "LATTICE_PROMPT_FILE"):
        if not os.environ.get(name):
            print(
                f"code-review-heavy: {name} is not set; run me with `lattice worker run "
                'CodeReviewHeavy TASK` (and keep "prompt_file" in the definition)',
                file=sys.stderr,
            )
            return 2
    wanted = os.environ.get("REVIEW_ENGINES", " ".join(ENGINES)).split()
    unknown = [e for e in wanted if e not in ENGINES]
    if unknown:
        print(
            f"code-review-heavy: REVIEW_ENGINES names {', '.join(unknown)}; the engines "
            f"are {', '.join(ENGINES)}",
            file=sys.stderr,
        )
        return 2
    engines = [e for e in wanted if shutil.which(e)]
    skipped = [e for e in wanted if e not in engines]
    path_shown = os.environ.get("PATH", "")
    notes = [f"{e} was skipped: `{e}` is not on the worker's PATH." for e in skipped]
    for note in notes:
        log(note)
    if not engines:
        message = (
            f"no reviewer engine is installed: none of {', '.join(wanted)} is on the worker's "
            f'PATH ({path_shown}); install one of them, or set PATH in the definition\'s "env"'
        )
        print(f"code-review-heavy: {message}", file=sys.stderr, flush=True)
        agent = summed([])
        agent["engine"] = ",".join(wanted)
        agent["error"] = message  # the run's error (no agent ran: no error_kind)
        write_result({"outcome": "error", "error": message, "agent": agent, "skipped": skipped})
        return 2

    common, passes, merge_part = split_prompt(
        Path(os.environ["LATTICE_PROMPT_FILE"]).read_text(encoding="utf-8")
    )
    pass_names = os.environ.get("REVIEW_PASSES", "standard critical").split()
    for name in pass_names:
        if name not in passes:
            notes.append(
                f"pass {name!r} has no `<!-- pass: {name} -->` section in the prompt "
                "file; it ran with the common instructions only."
            )
    reviewers = [Reviewer(e, p, scratch) for e in engines for p in pass_names]
    try:
        limit = float(os.environ.get("REVIEW_TIMEOUT_MINUTES") or 15) * 60
    except ValueError:
        limit = 15 * 60.0
    try:
        network_limit = float(os.environ.get("REVIEW_NETWORK_SECONDS") or 60)
    except ValueError:
        network_limit = 60.0
    for r in reviewers:
        r.start_review(common + "\n\n" + passes.get(r.pass_name, ""), limit, network_limit)
    # One waiter per reviewer: each end is logged as it happens, not in start order.
    with ThreadPoolExecutor(max_workers=len(reviewers)) as pool:
        for _ in as_completed([pool.submit(r.wait_review, limit) for r in reviewers]):
            pass
    done = [r for r in reviewers if r.ok]
    notes += [r.said() + "." for r in reviewers if not r.ok]
    agents: list[Agent] = list(reviewers)
    if not done:
        kind, message = none_usable(reviewers)
        agent = summed(agents)
        agent["error_kind"] = kind
        agent["error"] = message[:4000]
        write_result(
            {
                "outcome": "failed",
                "error": message[:4000],
                "error_kind": kind,
                "agent": agent,
                "reviewers": [reviewer_summary(r) for r in reviewers],
                "skipped": skipped,
            }
        )
        print(f"code-review-heavy: {message}", file=sys.stderr, flush=True)
        return 1

    merged: str | None = None
    merged_by: str | None = None
    choice = os.environ.get("REVIEW_MERGE_ENGINE", "").strip() or (engines[0] if engines else "")
    if len(done) > 1 and choice != "none":
        if choice not in ENGINES or not shutil.which(choice):
            notes.append(f"the merge engine {choice!r} is not available; reviews are concatenated.")
        elif not merge_part:
            notes.append(
                "the prompt file has no `<!-- merge -->` section; reviews are concatenated."
            )
        else:
            merger, merged, why = merge_reviews(
                choice, merge_part, done, scratch, limit, network_limit
            )
            agents.append(merger)
            if merged is None:
                notes.append(why + "; reviews are concatenated.")
            else:
                merged_by = choice
    verdicts = [v for v in (verdict_of(r.text) for r in done) if v]
    verdict = verdict_of(merged or "") or (max(verdicts, key=VERDICTS.index) if verdicts else None)

    task = os.environ.get("LATTICE_SHORT_ID") or os.environ["LATTICE_TASK_ID"]
    title = task_title()
    merge_base = os.environ.get("LATTICE_MERGE_BASE") or "-"
    base_ref = os.environ.get("LATTICE_BASE_REF") or "-"
    lines = [
        f"# Code review (heavy): {task}" + (f" {title}" if title else ""),
        "",
        f"- Task: {task} ({os.environ['LATTICE_TASK_ID']})",
        f"- Commit: {os.environ.get('LATTICE_COMMIT_SHA', '-')}   Merge base: "
        f"{merge_base} ({base_ref})",
        f"- Run: {os.environ.get('LATTICE_RUN_ID', '-')}",
        "- Reviewers: "
        + ", ".join(
            f"{r.label} {'ok' if r.ok else 'failed'} ({r.seconds:.0f} s)" for r in reviewers
        ),
        f"- Skipped: {', '.join(skipped) if skipped else 'none'}",
        f"- Merged by: {merged_by or 'none (one heading per reviewer)'}",
        f"- Verdict: {verdict or 'unknown'}",
    ]
    if notes:
        lines += ["", "## Notes", "", *[f"- {n}" for n in notes]]
    if merged is not None:
        lines += ["", "## Merged review", "", merged, "", "## Individual reviews"]
    else:
        lines += ["", "## Reviews"]
    for r in done:
        lines += ["", f"### {r.label}", "", r.text]

    folder = Path(
        os.environ.get("LATTICE_REPORT_DIR")
        or Path(os.environ["LATTICE_ROOT"]) / ".lattice" / "reports"
    )
    prefix = os.environ.get("LATTICE_REPORT_PREFIX") or "code-review-heavy"
    report = folder / f"{prefix}-{task}-{os.environ.get('LATTICE_RUN_ID', 'manual')}.md"
    folder.mkdir(parents=True, exist_ok=True)
    report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    role = os.environ.get("LATTICE_ARTIFACT_ROLE") or "review"
    artifact, error = attach(report, role)
    agent = summed(agents)
    agent["final_message"] = f"Verdict: {verdict or 'unknown'}"
    summary: dict[str, object] = {
        "outcome": "reviewed",
        "verdict": verdict,
        "agent": agent,
        "reviewers": [reviewer_summary(r) for r in reviewers],
        "skipped": skipped,
        "merged_by": merged_by,
        "report": str(report),
        "artifact_id": artifact,
    }
    if artifact is None:
        print(f"code-review-heavy: could not attach {report}: {error}", file=sys.stderr)
        summary["attach_error"] = error[-500:]
    else:
        log(f"attached {report} as {artifact} (role {role})")
    write_result(summary)
    return 0 if artifact else 1


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    # The supervisor stops a run with SIGTERM to its whole group: the reviewers get it
    # too; this process only has to clean up its scratch folder on the way out.
    signal.signal(signal.SIGTERM, _terminate)
    with tempfile.TemporaryDirectory(prefix="code-review-heavy-") as scratch_dir:
        sys.exit(main(Path(scratch_dir)))
