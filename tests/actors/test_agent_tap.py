"""An agent's output through its reader: a real stand-in CLI, a real pipe, a real LogSink.

And the output folder attached by the supervisor, on a real board.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio
import trio.testing

from lattice_workers.actors._agent_outputs import (
    ANSWER_ROLE,
    MAX_FILES,
    attach_outputs,
    make_output_dir,
    output_dir,
)
from lattice_workers.actors._agent_tap import AgentTap
from lattice_workers.actors._definitions import WorkerDefinition
from lattice_workers.actors._logsink import LogSink
from lattice_workers.engines import ENGINES
from lattice_workers.store import Board

STANDIN = Path(__file__).resolve().parent.parent / "engines" / "standin" / "agent.py"
STREAMS = STANDIN.parent.parent / "streams"
ACTOR = "agent:w"


def standin(folder: Path, engine: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / engine
    path.write_text(f"#!{sys.executable}\n" + STANDIN.read_text().split("\n", 1)[1])
    path.chmod(0o755)
    return path


async def run_through_tap(
    tmp_path: Path, engine: str, stream: str, *, delay: float = 0, **fields: object
) -> tuple[AgentTap, bytes, bytes, list[tuple[str, str]], int]:
    """Run the stand-in as the lifecycle would: stdout+stderr into a pipe, the pipe
    through a LogSink with the tap, and return (tap, log, raw, stops, exit code)."""
    program = standin(tmp_path / "bin", engine)
    defn = WorkerDefinition(name="W", engine=engine, prompt_file="p.md", **fields)  # type: ignore[arg-type]
    stops: list[tuple[str, str]] = []
    reader = ENGINES[engine].reader(defn, clock=trio.current_time)
    log_path, raw_path = tmp_path / "ev_1.log", tmp_path / "ev_1.jsonl"
    tap = AgentTap(reader, raw_path, 1 << 20, lambda r, s: stops.append((r, s)), trio.current_time)
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    env = {**os.environ, "STANDIN_STREAM": str(STREAMS / stream), "STANDIN_DELAY": str(delay)}

    def spawn() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [str(program), "-p"], stdin=subprocess.DEVNULL, stdout=write_fd, stderr=write_fd,
            env=env,
        )

    proc = await trio.to_thread.run_sync(spawn)
    os.close(write_fd)
    log_fd = os.open(log_path, os.O_RDWR | os.O_CREAT, 0o644)
    sink = LogSink(read_fd, log_fd, 1 << 20, tap=tap)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sink.pump)
        code = await trio.to_thread.run_sync(proc.wait)
    await sink.finish()
    tap.close()
    return tap, log_path.read_bytes(), raw_path.read_bytes(), stops, code


async def test_the_log_gets_the_transcript_and_the_raw_stream_is_kept(tmp_path: Path) -> None:
    tap, log, raw, stops, code = await run_through_tap(tmp_path, "claude", "claude-success.jsonl")
    assert code == 0 and stops == []
    assert raw == (STREAMS / "claude-success.jsonl").read_bytes()
    text = log.decode()
    assert "-> Bash: git diff --stat" in text and "[claude] done: 3 turns" in text
    assert '"type"' not in text
    report = tap.reader.report(code)
    assert report["cost_usd"] == 0.0421 and report["error_kind"] is None


async def test_malformed_lines_reach_the_log_verbatim(tmp_path: Path) -> None:
    tap, log, _, _, code = await run_through_tap(tmp_path, "claude", "claude-malformed.txt")
    assert b"this is not JSON at all\n" in log
    assert log.endswith(b'{"truncated\n')  # the last line had no newline: finish() kept it
    assert tap.reader.report(code)["final_message"] == "Still here."


async def test_gemini_stderr_and_stdout_share_the_pipe(tmp_path: Path) -> None:
    tap, log, _, _, _ = await run_through_tap(tmp_path, "gemini", "gemini-auth.txt")
    assert b"Please set an Auth method" in log
    assert tap.reader.report(41)["error_kind"] == "auth"


async def test_a_budget_past_its_limit_asks_for_a_stop_as_output_arrives(tmp_path: Path) -> None:
    _, _, _, stops, _ = await run_through_tap(
        tmp_path, "claude", "claude-success.jsonl", max_cost_usd=0.01
    )
    assert [r for r, _ in stops] == ["budget_exceeded"]
    assert "max_cost_usd" in stops[0][1]


async def test_a_quiet_agent_retrying_the_network_is_stopped_by_watch(
    autojump_clock: trio.testing.MockClock,
) -> None:
    defn = WorkerDefinition(
        name="W", engine="codex", prompt_file="p.md", network_timeout_seconds=30
    )
    reader = ENGINES["codex"].reader(defn, clock=trio.current_time)
    stops: list[tuple[str, str]] = []
    stopped = trio.Event()

    def on_stop(reason: str, sentence: str) -> None:
        stops.append((reason, sentence))
        stopped.set()

    tap = AgentTap(reader, None, 1 << 20, on_stop, trio.current_time)
    lines = (STREAMS / "codex-network.jsonl").read_bytes().splitlines(keepends=True)
    tap(b"".join(lines[:3]))  # started, then its first "Reconnecting..."; then silence
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tap.watch)
        with trio.fail_after(60):
            await stopped.wait()
        nursery.cancel_scope.cancel()
    assert stops[0][0] == "timeout" and "could not reach its API" in stops[0][1]
    assert 30 <= trio.current_time() <= 32
    assert reader.report(None)["error_kind"] == "network"


def test_the_raw_stream_is_bounded(tmp_path: Path) -> None:
    reader = ENGINES["claude"].reader()
    tap = AgentTap(reader, tmp_path / "raw.jsonl", 100, lambda r, s: None, lambda: 0.0)
    for _ in range(10):
        tap(b"x" * 40 + b"\n")
    tap.close()
    raw = (tmp_path / "raw.jsonl").read_bytes()
    assert raw.startswith(b"x" * 40) and raw.endswith(b"the rest was dropped\"}\n")
    assert len(raw) < 200


# -- the output folder ------------------------------------------------------------------


@pytest.fixture
def board(tmp_path: Path) -> tuple[Board, str]:
    (tmp_path / "project").mkdir()
    b = Board.init(tmp_path / "project", project_code="T", default_actor="human:ana")
    return b, str(b.create_task("t", actor="human:ana")["id"])


def attached_events(b: Board, task_id: str) -> list[dict[str, object]]:
    lines = b.events_path(task_id).read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["type"] == "artifact_attached"]


def test_the_report_in_the_output_folder_is_attached_with_the_role(
    board: tuple[Board, str], tmp_path: Path
) -> None:
    b, task_id = board
    folder = make_output_dir(b.dir / "run", "run_1", 1)
    assert folder == output_dir(b.dir / "run", "run_1", 1).resolve()
    (folder / "report.md").write_text("# Review\nVerdict: approve\n")
    (folder / "result.json").write_text("{}")
    done = attach_outputs(
        b, task_id, folder, role="review", actor=ACTOR, final_message="ignored",
        skip=("result.json",),
    )
    assert [a["role"] for a in done.artifacts] == ["review"] and not done.problems
    [event] = attached_events(b, task_id)
    assert event["data"] == {"artifact_id": done.artifacts[0]["artifact_id"], "role": "review"}
    assert not (folder / "report.md").exists()


def test_with_no_report_the_final_answer_is_attached_as_answer(board: tuple[Board, str]) -> None:
    b, task_id = board
    folder = make_output_dir(b.dir / "run", "run_2", 1)
    done = attach_outputs(
        b, task_id, folder, role="review", actor=ACTOR, final_message="Verdict: approve"
    )
    assert [a["role"] for a in done.artifacts] == [ANSWER_ROLE]
    payloads = list((b.dir / "artifacts" / "payload").iterdir())
    assert [p.read_text() for p in payloads] == ["Verdict: approve\n"]
    assert not folder.exists()
    nothing = attach_outputs(
        b, task_id, make_output_dir(b.dir / "run", "run_3", 1), role=None, actor=ACTOR,
        final_message=None,
    )
    assert nothing.artifacts == [] and nothing.problems == []


def test_what_cannot_be_attached_stays_and_is_named(board: tuple[Board, str]) -> None:
    b, task_id = board
    folder = make_output_dir(b.dir / "run", "run_4", 1)
    for i in range(MAX_FILES + 1):
        (folder / f"f{i:02}.md").write_text(str(i))
    done = attach_outputs(b, task_id, folder, role="bad role!", actor=ACTOR, final_message=None)
    assert done.artifacts == []
    assert len(done.problems) == MAX_FILES + 1
    assert "invalid role" in done.problems[-1] and "it is in" in done.problems[-1]
    assert len(list(folder.iterdir())) == MAX_FILES + 1, "nothing lost"
