"""An agent attempt's output folder (``LATTICE_OUTPUT_DIR``), attached by the supervisor.

A sandboxed agent cannot write the board: codex's ``workspace-write`` sandbox leaves
only its working folder and ``/tmp`` writable, so ``lattice attach`` inside it fails
with a read-only file system. Each attempt therefore gets a folder the adapter makes
writable (``--add-dir`` and its equivalents), outside the worktree (whose files are
the agent's work, kept by the "keep the work" step), and when the attempt ends the
supervisor attaches what is there: every regular file with the definition's
``artifact_role``; when the agent left nothing, its final answer (the engine's
``final_message``) as role ``answer``. Nothing is lost: a file that cannot be
attached stays in the folder, and the returned problems name it.

Blocking (file copies, board writes): the lifecycle calls :func:`attach_outputs` in a
thread, after the attempt's process is gone and before its terminal event.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from lattice_workers.errors import LatticeError
from lattice_workers.store import Board

#: The role of the agent's final answer when it attached no report.
ANSWER_ROLE = "answer"
#: At most this many files of one attempt are attached (the rest stay, and are named).
MAX_FILES = 20
#: What the folder is called under the board's runtime folder.
OUTPUTS = "outputs"


@dataclass
class Attached:
    """What :func:`attach_outputs` did: the artifacts, and what it could not attach."""

    artifacts: list[dict[str, str | None]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def output_dir(run_dir: Path, run_id: str, attempt: int) -> Path:
    """The attempt's output folder (not created): ``<run dir>/outputs/<run>/<attempt>``."""
    return run_dir / OUTPUTS / run_id / str(attempt)


def make_output_dir(run_dir: Path, run_id: str, attempt: int) -> Path:
    """Create the attempt's output folder, empty, and return its absolute path."""
    folder = output_dir(run_dir, run_id, attempt)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder.resolve()


def attach_outputs(
    board: Board,
    task_id: str,
    folder: Path,
    *,
    role: str | None,
    actor: str,
    final_message: str | None,
    skip: tuple[str, ...] = (),
) -> Attached:
    """Attach the folder's files (``role``), else ``final_message`` (role ``answer``).

    ``skip`` names files that are not outputs (the result file, when it lives there).
    Attached files are removed from the folder; the folder goes when it is empty.
    """
    done = Attached()
    try:
        files = sorted(
            p for p in folder.iterdir()
            if p.is_file() and not p.is_symlink() and not p.name.startswith(".")
            and p.name not in skip
        )
    except OSError as err:
        done.problems.append(f"cannot read the output folder {folder}: {err.strerror}")
        return done
    for extra in files[MAX_FILES:]:
        done.problems.append(
            f"{extra.name} was not attached: at most {MAX_FILES} files are; it is in {folder}"
        )
    for path in files[:MAX_FILES]:
        _attach_one(board, task_id, path, role, actor, done)
    if not done.artifacts and final_message and final_message.strip():
        answer = folder / "answer.md"
        try:
            answer.write_text(final_message.rstrip() + "\n", encoding="utf-8")
        except OSError as err:
            done.problems.append(f"cannot write the final answer to {answer}: {err.strerror}")
        else:
            _attach_one(board, task_id, answer, ANSWER_ROLE, actor, done, title="Final answer")
    try:
        folder.rmdir()
    except OSError:
        pass  # not empty: what could not be attached stays
    return done


def _attach_one(
    board: Board,
    task_id: str,
    path: Path,
    role: str | None,
    actor: str,
    done: Attached,
    *,
    title: str | None = None,
) -> None:
    try:
        result = board.attach(task_id, path, role=role, actor=actor, title=title or path.name)
    except LatticeError as err:
        done.problems.append(
            f"{path.name} was not attached ({err.message}); it is in {path.parent}"
        )
        return
    done.artifacts.append(
        {"artifact_id": str(result.event["data"]["artifact_id"]), "role": role, "file": path.name}
    )
    try:
        path.unlink()
    except OSError:
        pass
