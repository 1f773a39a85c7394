#!/usr/bin/env python3
"""CodeReviewHeavy: several reviewers in parallel, merged into one attached report.

The worker of ``workers/code-review-heavy.json``. For every engine in
``REVIEW_ENGINES`` (default ``claude codex gemini``) that is on PATH, and every pass in
``REVIEW_PASSES`` (default ``standard critical``), it starts one reviewer, all at
once, in the run's worktree. An engine that is not installed is skipped, with a note
in the report; when none is, the run fails with a message that says so.

Each reviewer gets the common part of ``$LATTICE_PROMPT_FILE`` plus its pass's part
(the file is split at ``<!-- pass: NAME -->`` and ``<!-- merge -->`` lines) and prints
its review on stdout. The reviews are then merged by one engine
(``REVIEW_MERGE_ENGINE``, default: the first available engine; ``none`` turns merging
off) that gets the file's merge part as its prompt and the reviews on stdin. When no
engine can merge, or the merge fails, the reviews are concatenated under one heading
per reviewer. The report goes to ``$LATTICE_REPORT_DIR``, is attached with
``lattice attach`` (role ``$LATTICE_ARTIFACT_ROLE``) and summarised in
``$LATTICE_RESULT_FILE``.

The reviewers are plain children of this process, in the run's process group (no
``setsid``, no ``nohup``): a cancel or the run's deadline stops every one of them.

Engine command lines: ``claude -p PROMPT ARGS``, ``codex exec PROMPT ARGS``,
``gemini -p PROMPT ARGS``; ARGS come from ``REVIEW_CLAUDE_ARGS``,
``REVIEW_CODEX_ARGS``, ``REVIEW_GEMINI_ARGS`` (split like a shell would) with the
defaults below, which let a reviewer read the code and run the project's checks.

Each reviewer has ``REVIEW_TIMEOUT_MINUTES`` (default 15) to finish, and one that
prints nothing but network retries for ``REVIEW_NETWORK_SECONDS`` (default 60; codex
retries without end) is stopped then; one that takes longer is stopped (SIGTERM, then SIGKILL after 10 s, with its own children) and counts
as failed, so one hung engine cannot hold the run to its deadline. Each reviewer's end
is written to the log as it happens, a failure with the reviewer's own last words
(stdout and stderr, ANSI codes stripped: claude prints its errors on stdout).

A review is usable when its reviewer exited 0 and it names a verdict. With no usable
review nothing is attached: the run fails, and its last log line says why each
reviewer failed.

Exit codes: 0 the report is attached, 1 no reviewer gave a usable review or the report
could not be attached, 2 no reviewer engine is installed (nothing is attached).
Python 3.8+, standard library only.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

ENGINES = ("claude", "codex", "gemini")
DEFAULT_ARGS = {
    "claude": "--output-format text --allowedTools Bash,Read,Grep,Glob",
    "codex": "--sandbox workspace-write",
    # --skip-trust: gemini refuses an untrusted folder in headless mode (exit 55), and
    # each run's worktree is a new folder.
    "gemini": "--approval-mode yolo --skip-trust",
}
MODE_FLAG = {"claude": ["-p"], "codex": ["exec"], "gemini": ["-p"]}
VERDICTS = ("approve", "approve_with_nits", "request_changes")
MARKER = re.compile(r"^<!--\s*(pass:\s*([A-Za-z0-9_-]+)|merge)\s*-->\s*$")
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
#: Seconds between SIGTERM and SIGKILL for a reviewer past its time limit.
KILL_GRACE = 10.0
#: What an engine prints while it cannot reach its API (codex: "Reconnecting... 2/5",
#: gemini: "Retrying with backoff... fetch failed", and their stack frames).
NETWORK = re.compile(
    r"reconnecting|retrying with backoff|fetch failed|failed to connect|error sending "
    r"request|name does not resolve|ENOTFOUND|EAI_AGAIN|^\s+at |^Attempt \d+ failed",
    re.I,
)
_LOG_LOCK = threading.Lock()


class Reviewer:
    """One engine running one pass, its output in files under the scratch folder."""

    def __init__(self, engine: str, pass_name: str, scratch: Path) -> None:
        self.engine = engine
        self.pass_name = pass_name
        self.out = scratch / f"{engine}-{pass_name}.md"
        self.err = scratch / f"{engine}-{pass_name}.err"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.seconds = 0.0
        self.exit_code: int | None = None
        self.text = ""
        self.timed_out = False
        self.offline = False
        self._seen = 0  # bytes of stderr read so far
        self._retrying_since: float | None = None

    @property
    def label(self) -> str:
        return f"{self.engine} ({self.pass_name})"

    @property
    def ok(self) -> bool:
        """A usable review: exit 0, some text, and a verdict in it."""
        return self.exit_code == 0 and bool(self.text.strip()) and verdict_of(self.text) is not None

    def start(self, prompt: str) -> None:
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(
                engine_argv(self.engine, prompt), stdin=subprocess.DEVNULL, stdout=out, stderr=err
            )
        self.started = time.monotonic()
        log(f"started {self.label} (pid {self.proc.pid})")

    def wait(self, limit: float, network_limit: float) -> Reviewer:
        """Wait at most ``limit`` seconds, or ``network_limit`` of nothing but network
        retries (codex retries without end), then stop it; log its end either way."""
        assert self.proc is not None
        deadline = self.started + limit
        while True:
            try:
                left = deadline - time.monotonic()
                self.exit_code = self.proc.wait(timeout=max(0.0, min(1.0, left)))
                break
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            if self._only_retrying(now) and now - (self._retrying_since or now) >= network_limit:
                self.offline = True
            elif now < deadline:
                continue
            else:
                self.timed_out = True
            stop(self.proc)
            self.exit_code = self.proc.returncode
            break
        self.seconds = time.monotonic() - self.started
        self.text = self.out.read_text(encoding="utf-8", errors="replace").strip()
        if self.ok:
            log(f"finished {self.label}: ok in {self.seconds:.1f} s")
        else:
            log(f"finished {self.label}: {self.failure()}")
        return self

    def _only_retrying(self, now: float) -> bool:
        """Whether all it printed on stderr since it last made progress is network
        retries (and since when, in ``_retrying_since``)."""
        try:
            with open(self.err, "rb") as f:
                f.seek(self._seen)
                new = f.read()
        except OSError:
            return False
        end = new.rfind(b"\n") + 1
        self._seen += end
        text = new[:end].decode("utf-8", "replace")
        lines = [ANSI.sub("", x).strip() for x in text.splitlines()]
        lines = [x for x in lines if x]
        if lines and all(NETWORK.search(x) for x in lines):
            if self._retrying_since is None:
                self._retrying_since = now
        elif lines:
            self._retrying_since = None  # something else: it is working
        return self._retrying_since is not None

    def failure(self) -> str:
        """Why this reviewer gave no usable review, in its own last words."""
        if self.offline:
            why = f"only network retries: it could not reach its API; stopped at {self.seconds:.0f} s"
        elif self.timed_out:
            why = f"no review within its time limit of {self.seconds:.0f} s; stopped"
        elif self.exit_code:
            why = f"exit code {self.exit_code}"
        elif not self.text:
            why = "no output"
        else:
            why = "no verdict in its review"
        said = last_words(self.out, self.err)
        return f"{self.label} failed ({why})" + (": " + said if said else "")


def log(message: str) -> None:
    with _LOG_LOCK:
        print(f"code-review-heavy: {message}", flush=True)


def last_words(*paths: Path, lines: int = 5, limit: int = 400) -> str:
    """The last non-empty lines of the files, ANSI codes stripped, joined with " / "."""
    said: list[str] = []
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        said += [ANSI.sub("", line).strip() for line in text.splitlines()]
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
    """SIGTERM to a reviewer and what it started, then SIGKILL after KILL_GRACE.

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


def engine_argv(engine: str, prompt: str) -> list[str]:
    args = os.environ.get(f"REVIEW_{engine.upper()}_ARGS", DEFAULT_ARGS[engine])
    if prompt.startswith("-"):
        prompt = "\n" + prompt
    return [engine, *MODE_FLAG[engine], prompt, *shlex.split(args)]


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
    engine: str, instructions: str, done: list[Reviewer], scratch: Path, limit: float
) -> tuple[str | None, str]:
    """(merged text or None, why not)."""
    bundle = scratch / "reviews.md"
    bundle.write_text(
        "\n\n".join(f"=== REVIEW: {r.label} ===\n\n{r.text}" for r in done) + "\n",
        encoding="utf-8",
    )
    log(f"merging {len(done)} reviews with {engine}")
    try:
        with open(bundle, "rb") as stdin:
            proc = subprocess.run(
                engine_argv(engine, instructions), stdin=stdin, capture_output=True, timeout=limit
            )
    except subprocess.TimeoutExpired:
        return None, f"the merge by {engine} took longer than {limit:.0f} s and was stopped"
    text = proc.stdout.decode("utf-8", "replace").strip()
    if proc.returncode != 0 or not text:
        said = [ANSI.sub("", line).strip() for line in proc.stderr.decode("utf-8", "replace")
                .splitlines()]
        err = [line for line in said if line][-3:]
        why = f"exit code {proc.returncode}" if proc.returncode else "no output"
        return None, f"the merge by {engine} failed ({why}{': ' + ' / '.join(err) if err else ''})"
    return text, ""


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
        write_result({"outcome": "error", "error": message, "skipped": skipped})
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
        network_limit = 120.0
    for r in reviewers:
        r.start(common + "\n\n" + passes.get(r.pass_name, ""))
    # One waiter per reviewer: each end is logged as it happens, not in start order.
    with ThreadPoolExecutor(max_workers=len(reviewers)) as pool:
        for _ in as_completed([pool.submit(r.wait, limit, network_limit) for r in reviewers]):
            pass
    done = [r for r in reviewers if r.ok]
    notes += [r.failure() + "." for r in reviewers if not r.ok]
    if not done:
        message = "no reviewer gave a usable review (nothing attached): " + " | ".join(
            r.failure() for r in reviewers
        )
        write_result(
            {
                "outcome": "failed",
                "error": message[:4000],
                "reviewers": [
                    {"engine": r.engine, "pass": r.pass_name, "ok": False,
                     "exit_code": r.exit_code, "seconds": round(r.seconds, 1)}
                    for r in reviewers
                ],
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
            merged, why = merge_reviews(choice, merge_part, done, scratch, limit)
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
    summary: dict[str, object] = {
        "outcome": "reviewed",
        "verdict": verdict,
        "reviewers": [
            {
                "engine": r.engine,
                "pass": r.pass_name,
                "ok": r.ok,
                "exit_code": r.exit_code,
                "seconds": round(r.seconds, 1),
            }
            for r in reviewers
        ],
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
