"""The engine adapters: argv, stdin, and the reading of each CLI's real stream format.

The streams under ``streams/`` are either recorded from the real CLIs run offline with
no credentials (``claude-auth``, ``claude-network``, ``codex-network``,
``gemini-network``, ``gemini-auth``: see streams/README.md) or written from each CLI's
source for what needs an API (success with tool calls and usage, max turns).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import msgspec
import pytest

from lattice_workers.actors._definitions import WorkerDefinition
from lattice_workers.engines import (
    ENGINES,
    ERROR_KINDS,
    StreamReader,
    engine_for,
    strip_ansi,
    with_run_limits,
)
from lattice_workers.engines.claude import carry_session, project_folder
from lattice_workers.engines.gemini import find_session_file

STREAMS = Path(__file__).parent / "streams"
FIELDS = {
    "engine",
    "model",
    "session_id",
    "turns",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cost_usd",
    "final_message",
    "error_kind",
    "error",
}


def definition(engine: str, **fields: Any) -> WorkerDefinition:
    return WorkerDefinition(name="W", engine=engine, prompt_file="p.md", **fields)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def read(
    engine: str, stream: str, *, chunk: int | None = None, **fields: Any
) -> tuple[StreamReader, str]:
    adapter = ENGINES[engine]
    reader = adapter.reader(definition(engine, **fields))
    data = (STREAMS / stream).read_bytes()
    if chunk is None:
        out = reader.feed(data)
    else:
        out = b"".join(reader.feed(data[i : i + chunk]) for i in range(0, len(data), chunk))
    out += reader.finish()
    return reader, out.decode()


# -- commands ---------------------------------------------------------------------------


def test_engine_for_a_script_is_none_and_each_agent_has_its_adapter() -> None:
    assert engine_for(WorkerDefinition(name="S", engine="script", command="true")) is None
    for name in ("claude", "codex", "gemini"):
        engine = engine_for(definition(name))
        assert engine is not None and engine.name == name


@pytest.mark.parametrize("engine", ["claude", "codex", "gemini"])
def test_the_prompt_goes_to_stdin_never_to_argv(engine: str, tmp_path: Path) -> None:
    prompt = "-- front matter\n" + "x" * 200_000  # larger than one argument may be
    cmd = ENGINES[engine].command(
        definition(engine, args=["--extra", "1"]),
        output_dir=tmp_path,
        resume_session=None,
        message=None,
        prompt=prompt,
    )
    assert cmd.stdin == prompt.encode()
    assert not any("x" * 100 in arg for arg in cmd.argv)
    assert cmd.argv[0] == engine
    assert str(tmp_path.resolve()) in cmd.argv, "the output folder must be writable"
    # the definition's args still append, before a trailing stdin marker
    assert "--extra" in cmd.argv and cmd.argv[cmd.argv.index("--extra") + 1] == "1"


def test_claude_argv_streams_and_passes_the_limits(tmp_path: Path) -> None:
    cmd = ENGINES["claude"].command(
        definition("claude", max_turns=7, max_cost_usd=0.5),
        output_dir=tmp_path,
        resume_session=None,
        message=None,
        prompt="p",
    )
    line = shlex.join(cmd.argv)
    assert line.startswith("claude -p --output-format stream-json --verbose")
    assert "--max-turns 7" in line and "--max-budget-usd 0.5" in line
    assert f"--add-dir {tmp_path.resolve()}" in line


def test_codex_argv_sandboxes_with_the_output_folder_writable(tmp_path: Path) -> None:
    cmd = ENGINES["codex"].command(
        definition("codex"), output_dir=tmp_path, resume_session=None, message=None, prompt="p"
    )
    assert cmd.argv[:3] == ["codex", "exec", "--json"]
    line = shlex.join(cmd.argv)
    assert "--sandbox workspace-write" in line and f"--add-dir {tmp_path.resolve()}" in line
    assert cmd.argv[-1] == "-"


def test_gemini_argv_trusts_the_worktree_and_runs_headless(tmp_path: Path) -> None:
    cmd = ENGINES["gemini"].command(
        definition("gemini", args=["--approval-mode", "yolo"]),
        output_dir=tmp_path,
        resume_session=None,
        message=None,
        prompt="p",
    )
    assert "--skip-trust" in cmd.argv
    assert cmd.argv[cmd.argv.index("--output-format") + 1] == "stream-json"
    assert cmd.argv[-2:] == ["-p", ""]
    assert cmd.argv.index("--approval-mode") < cmd.argv.index("-p")


def test_resume_sends_the_message_and_names_the_session(tmp_path: Path) -> None:
    claude = ENGINES["claude"].command(
        definition("claude"), output_dir=tmp_path, resume_session="abc-1", message="Fix it"
    )
    assert claude.stdin == b"Fix it"
    assert claude.argv[claude.argv.index("--resume") + 1] == "abc-1"
    codex = ENGINES["codex"].command(
        definition("codex"), output_dir=tmp_path, resume_session="t-1", message=None
    )
    assert codex.argv[:5] == ["codex", "exec", "resume", "t-1", "--json"]
    assert codex.stdin and b"Continue" in codex.stdin
    assert any("writable_roots" in a and str(tmp_path.resolve()) in a for a in codex.argv)
    home = tmp_path / "gemini-home"
    chats = home / ".gemini" / "tmp" / "some-project" / "chats"
    chats.mkdir(parents=True)
    (chats / "session-2026-12-02T07-12-s-1.jsonl").write_text('{"sessionId":"s-1"}\n')
    gemini = ENGINES["gemini"].command(
        definition("gemini"), output_dir=tmp_path, resume_session="s-1", message="go",
        env={"HOME": str(tmp_path / "elsewhere"), "GEMINI_CLI_HOME": str(home)},
    )
    assert gemini.argv[gemini.argv.index("--session-file") + 1] == str(
        chats / "session-2026-12-02T07-12-s-1.jsonl"
    )
    assert "--resume" not in gemini.argv and gemini.stdin == b"go"


def test_gemini_looks_for_a_session_in_the_workers_home_not_the_supervisors(
    tmp_path: Path,
) -> None:
    sid = "d3cb74a3-7dd7-4597-a896-3ed846f526a5"
    chats = tmp_path / "worker-home" / ".gemini" / "tmp" / "p" / "chats"
    chats.mkdir(parents=True)
    (chats / f"session-x-{sid[:8]}.jsonl").write_text(json.dumps({"sessionId": sid}) + "\n")
    found = ENGINES["gemini"].command(
        definition("gemini"), output_dir=tmp_path, resume_session=sid, message="go",
        env={"HOME": str(tmp_path / "worker-home")},
    )
    assert "--session-file" in found.argv
    with pytest.raises(ValueError, match=r"is not under .*supervisor-home.*cannot be resumed"):
        ENGINES["gemini"].command(
            definition("gemini"), output_dir=tmp_path, resume_session=sid, message="go",
            env={"HOME": str(tmp_path / "supervisor-home")},
        )


def test_a_new_session_without_a_prompt_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs the prompt"):
        ENGINES["claude"].command(
            definition("claude"), output_dir=tmp_path, resume_session=None, message=None
        )


def test_run_limits_replace_the_definitions() -> None:
    defn = definition("claude", max_turns=3)
    assert with_run_limits(defn, max_cost_usd=None, max_turns=None) is defn
    both = with_run_limits(defn, max_cost_usd=2.0, max_turns=9)
    assert (both.max_cost_usd, both.max_turns) == (2.0, 9)


@pytest.mark.parametrize(
    ("engine", "output", "problem"),
    [
        ("claude", "2.1.197 (Claude Code)", None),
        ("claude", "2.0.1 (Claude Code)", "older than 2.1.197"),
        ("codex", "codex-cli 0.171.0", None),
        ("codex", "codex-cli 0.99.3", "older than 0.171.0"),
        ("gemini", "0.61.0", None),
        ("gemini", "weird", "cannot read"),
    ],
)
def test_minimum_versions(engine: str, output: str, problem: str | None) -> None:
    found = ENGINES[engine].version_problem(output)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def test_flags_the_adapter_owns_are_refused_in_args() -> None:
    assert ENGINES["claude"].args_problems(["--output-format", "text"])
    assert ENGINES["gemini"].args_problems(["--output-format=json"])
    assert ENGINES["codex"].args_problems(["--json"])
    assert not ENGINES["claude"].args_problems(["--allowedTools", "Bash"])


# -- claude ----------------------------------------------------------------------------


def test_claude_success_transcript_and_figures() -> None:
    reader, transcript = read("claude", "claude-success.jsonl", chunk=7)
    assert "I will look at the change first." in transcript
    assert '-> Bash: git diff --stat "$LATTICE_MERGE_BASE" "$LATTICE_COMMIT_SHA"' in transcript
    assert "-> Write: /tmp/out/report.md" in transcript
    assert "[claude] done: 3 turns, 4100 in / 180 out tokens, $0.0421" in transcript
    assert "{" not in transcript, "no raw JSON in the transcript"
    report = reader.report(0)
    assert set(report) == FIELDS
    assert report == {
        "engine": "claude",
        "model": "claude-sonnet-4-5-20250929",
        "session_id": "5f0c9a1e-2b7d-4c1e-9a55-0e8c1d2f3a4b",
        "turns": 3,
        "input_tokens": 4100,
        "output_tokens": 180,
        "cache_read_tokens": 2600,
        "cost_usd": 0.0421,
        "final_message": "Verdict: approve\n\nThe change is small and correct.",
        "error_kind": None,
        "error": None,
    }


def test_claude_without_credentials_is_auth_with_what_to_do() -> None:
    reader, transcript = read("claude", "claude-auth.jsonl")
    report = reader.report(1)
    assert report["error_kind"] == "auth"
    assert "claude is not logged in" in report["error"]
    assert "set ANTHROPIC_API_KEY or run `claude login`" in report["error"]
    assert "Not logged in" in report["error"]
    assert report["session_id"] == "27271c2e-3c84-41fd-8cd9-4bfddf2c337a"
    assert report["cost_usd"] == 0
    assert "authentication_failed" in transcript
    assert "[claude] failed: Not logged in" in transcript


def test_claude_network_retries_stop_the_attempt_after_the_bound() -> None:
    clock = Clock()
    reader = ENGINES["claude"].reader(definition("claude", network_timeout_seconds=30), clock=clock)
    lines = (STREAMS / "claude-network.jsonl").read_bytes().splitlines(keepends=True)
    transcript = reader.feed(lines[0])
    assert reader.stop_reason(clock.now) is None
    clock.now = 5.0
    transcript += reader.feed(b"".join(lines[1:]))
    assert b"! claude: API error unknown, retry 1/10" in transcript
    assert reader.stop_reason(20.0) is None
    reason = reader.stop_reason(35.0)
    assert reason is not None and reason[0] == "network"
    assert "30 s" in reason[1] and "network" in reason[1]
    report = reader.report(None)
    assert report["error_kind"] == "network"
    assert report["error"] == reason[1]


def test_network_retries_followed_by_progress_do_not_stop() -> None:
    clock = Clock()
    reader = ENGINES["claude"].reader(definition("claude", network_timeout_seconds=30), clock=clock)
    net = (STREAMS / "claude-network.jsonl").read_bytes().splitlines(keepends=True)
    reader.feed(b"".join(net[:3]))
    clock.now = 25.0
    success = (STREAMS / "claude-success.jsonl").read_bytes().splitlines(keepends=True)
    reader.feed(success[1])  # an assistant message: the API answered
    assert reader.stop_reason(100.0) is None
    reader.feed(b"".join(success[2:]))
    assert reader.report(0)["error_kind"] is None


def test_claude_max_turns() -> None:
    reader, transcript = read("claude", "claude-max-turns.jsonl")
    report = reader.report(1)
    assert report["error_kind"] == "max_turns"
    assert "max_turns" in report["error"] and "--max-turns" in report["error"]
    assert report["turns"] == 2 and report["cost_usd"] == 0.0123
    assert "tool error: 1 failed" in transcript
    assert "[claude] failed (error_max_turns)" in transcript


def test_claude_budget_flag_result_is_budget() -> None:
    reader = ENGINES["claude"].reader(definition("claude"))
    reader.feed(
        json.dumps(
            {
                "type": "result",
                "subtype": "error_max_budget_usd",
                "is_error": True,
                "num_turns": 4,
                "total_cost_usd": 0.51,
                "session_id": "s",
            }
        ).encode()
        + b"\n"
    )
    report = reader.report(1)
    assert report["error_kind"] == "budget" and "$0.5100" in report["error"]


def test_malformed_lines_are_kept_verbatim_and_never_fatal() -> None:
    reader, transcript = read("claude", "claude-malformed.txt", chunk=3)
    assert "this is not JSON at all" in transcript
    assert "[1, 2, 3]" in transcript
    assert '{"type":"assistant","message":{"content":"not a list"}' in transcript
    assert '{"truncated' in transcript  # the last line had no newline: finish() flushed it
    assert "Still here." in transcript
    report = reader.report(0)
    assert report["error_kind"] is None
    assert report["input_tokens"] == 10 and report["final_message"] == "Still here."


def test_ansi_is_stripped_from_text_lines() -> None:
    reader = ENGINES["gemini"].reader()
    out = reader.feed(b"\x1b[31mWarning:\x1b[0m colours\n")
    assert out == b"Warning: colours\n"
    assert strip_ansi("\x1b]0;title\x07x\x1b[2K") == "x"


def test_final_message_is_cut_to_2_kib_on_a_character_boundary() -> None:
    reader = ENGINES["claude"].reader()
    text = "é" * 2000
    reader.feed(
        json.dumps(
            {"type": "result", "subtype": "success", "is_error": False, "result": text}
        ).encode()
        + b"\n"
    )
    final = reader.report(0)["final_message"]
    assert len(final.encode()) <= 2048 and final == "é" * 1024


def test_cost_over_the_budget_stops_with_budget_exceeded() -> None:
    reader = ENGINES["claude"].reader(definition("claude", max_cost_usd=0.01))
    reader.feed((STREAMS / "claude-success.jsonl").read_bytes())
    reason = reader.stop_reason(0.0)
    assert reason is not None and reason[0] == "budget_exceeded"
    assert reader.report(0)["error_kind"] == "budget"


def test_a_partial_line_is_buffered_until_its_newline() -> None:
    reader = ENGINES["claude"].reader()
    line = (STREAMS / "claude-success.jsonl").read_bytes().splitlines(keepends=True)[0]
    assert reader.feed(line[:40]) == b""
    assert reader.feed(line[40:]).startswith(b"[claude] session 5f0c9a1e")


# -- codex ------------------------------------------------------------------------------


def test_codex_success_transcript_and_figures() -> None:
    reader, transcript = read("codex", "codex-success.jsonl", chunk=11)
    assert "-> shell: bash -lc 'git diff --stat HEAD~1'" in transcript
    assert "-> edit: /tmp/out/report.md (add)" in transcript
    assert "Verdict: approve" in transcript
    report = reader.report(0)
    assert report["session_id"] == "0199a213-81c0-7800-8aa1-bbab2a035a53"
    assert (report["input_tokens"], report["output_tokens"], report["cache_read_tokens"]) == (
        24763,
        122,
        24448,
    )
    assert report["cost_usd"] is None and report["error_kind"] is None
    assert report["final_message"] == "Verdict: approve\n\nReport written."
    assert report["turns"] == 3


def test_codex_offline_is_network_within_the_bound() -> None:
    clock = Clock()
    reader = ENGINES["codex"].reader(definition("codex", network_timeout_seconds=10), clock=clock)
    lines = (STREAMS / "codex-network.jsonl").read_bytes().splitlines(keepends=True)
    reader.feed(b"".join(lines[:3]))  # thread.started, turn.started, the first Reconnecting
    clock.now = 60.0
    reader.feed(b"".join(lines[3:]))
    assert reader.stop_reason(9.0) is None
    reason = reader.stop_reason(10.0)
    assert reason is not None and reason[0] == "network"
    assert "Reconnecting" in reason[1]
    assert reader.report(-15)["error_kind"] == "network"


def test_codex_unauthorized_is_auth() -> None:
    reader, _ = read("codex", "codex-auth.jsonl")
    report = reader.report(1)
    assert report["error_kind"] == "auth"
    assert "OPENAI_API_KEY" in report["error"] and "codex login" in report["error"]


def test_codex_turns_past_max_turns_stop_it() -> None:
    reader, _ = read("codex", "codex-success.jsonl", max_turns=2)
    reason = reader.stop_reason(0.0)
    assert reason is not None and reason[0] == "budget_exceeded"
    assert reader.report(None)["error_kind"] == "max_turns"


def test_codex_rate_limit() -> None:
    reader = ENGINES["codex"].reader()
    reader.feed(b'{"type":"turn.failed","error":{"message":"429 Too Many Requests"}}\n')
    assert reader.report(1)["error_kind"] == "rate_limit"


# -- gemini -----------------------------------------------------------------------------


def test_gemini_success_transcript_and_figures() -> None:
    reader, transcript = read("gemini", "gemini-success.jsonl", chunk=5)
    assert "Let me read the diff." in transcript.splitlines()
    assert "-> run_shell_command: git diff --stat HEAD~1" in transcript
    report = reader.report(0)
    assert report["model"] == "gemini-2.5-pro"
    assert report["session_id"] == "d3cb74a3-7dd7-4597-a896-3ed846f526a5"
    assert (report["input_tokens"], report["output_tokens"], report["cache_read_tokens"]) == (
        5000,
        300,
        1000,
    )
    assert report["turns"] == 2
    assert report["final_message"] == "Verdict: approve\n\nLooks right."
    assert report["error_kind"] is None


def test_gemini_without_credentials_is_auth() -> None:
    reader, transcript = read("gemini", "gemini-auth.txt")
    assert "Please set an Auth method" in transcript
    report = reader.report(41)
    assert report["error_kind"] == "auth"
    assert "GEMINI_API_KEY" in report["error"]


def test_gemini_exit_41_alone_is_auth() -> None:
    assert ENGINES["gemini"].reader().report(41)["error_kind"] == "auth"


def test_gemini_offline_retries_are_network() -> None:
    clock = Clock()
    reader = ENGINES["gemini"].reader(definition("gemini", network_timeout_seconds=5), clock=clock)
    reader.feed((STREAMS / "gemini-network.txt").read_bytes())
    assert reader.session_id == "d3cb74a3-7dd7-4597-a896-3ed846f526a5"
    reason = reader.stop_reason(6.0)
    assert reason is not None and reason[0] == "network"


def test_gemini_max_turns() -> None:
    reader, _ = read("gemini", "gemini-max-turns.jsonl")
    report = reader.report(53)
    assert report["error_kind"] == "max_turns"
    assert report["model"] == "gemini-2.5-flash"


def test_every_error_kind_is_known() -> None:
    assert set(ERROR_KINDS) == {
        "auth",
        "network",
        "rate_limit",
        "max_turns",
        "budget",
        "agent_error",
    }


def test_an_unexplained_failure_is_agent_error_with_the_exit_code() -> None:
    report = ENGINES["codex"].reader().report(3)
    assert report["error_kind"] == "agent_error" and "exit code 3" in report["error"]


def test_a_run_stopped_from_outside_with_nothing_said_has_no_error_kind() -> None:
    assert ENGINES["claude"].reader().report(None)["error_kind"] is None


# -- resume -----------------------------------------------------------------------------


def test_claude_session_is_carried_to_the_new_worktree(tmp_path: Path) -> None:
    env = {"CLAUDE_CONFIG_DIR": str(tmp_path / "cfg")}
    old, new = Path("/work/wt/run_1"), Path("/work/wt/run_2")
    src = project_folder(tmp_path / "cfg", old)
    assert src.name == "-work-wt-run-1"
    src.mkdir(parents=True)
    (src / "abc-1.jsonl").write_text("{}\n")
    assert carry_session("abc-1", old_cwd=old, new_cwd=new, env=env) is None
    assert (project_folder(tmp_path / "cfg", new) / "abc-1.jsonl").read_text() == "{}\n"
    problem = carry_session("nope", old_cwd=old, new_cwd=new, env=env)
    assert problem is not None and "cannot be resumed" in problem
    bad = carry_session("../x", old_cwd=old, new_cwd=new, env=env)
    assert bad is not None and "not a session id" in bad


def test_gemini_session_file_is_found_under_any_project(tmp_path: Path) -> None:
    chats = tmp_path / ".gemini" / "tmp" / "run-1" / "chats"
    chats.mkdir(parents=True)
    sid = "d3cb74a3-7dd7-4597-a896-3ed846f526a5"
    path = chats / f"session-2026-12-02T07-12-{sid[:8]}.json"
    path.write_text(json.dumps({"sessionId": sid, "messages": []}))
    assert find_session_file(sid, tmp_path) == path
    assert find_session_file("ffffffff-0000", tmp_path) is None
    assert find_session_file("*", tmp_path) is None  # never a glob pattern


def test_definition_fields_for_budgets_validate() -> None:
    good = msgspec.convert(
        {
            "name": "A",
            "engine": "claude",
            "prompt_file": "p",
            "max_cost_usd": 1.5,
            "max_turns": 10,
            "network_timeout_seconds": 30,
        },
        WorkerDefinition,
    )
    assert good.network_timeout_seconds == 30
    assert definition("claude").network_timeout_seconds == 120
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"name": "A", "engine": "claude", "max_turns": 0}, WorkerDefinition)


def test_worker_check_flags_owned_flags_and_budgets_on_a_script(tmp_path: Path) -> None:
    from lattice_workers.actors._definitions import load_workers

    (tmp_path / "workers").mkdir()
    (tmp_path / "p.md").write_text("prompt")
    (tmp_path / "workers" / "a.json").write_text(
        json.dumps(
            {
                "name": "A",
                "engine": "claude",
                "prompt_file": "p.md",
                "args": ["--output-format", "text"],
            }
        )
    )
    (tmp_path / "workers" / "s.json").write_text(
        json.dumps({"name": "S", "engine": "script", "command": "true", "max_turns": 3})
    )
    workers = load_workers(tmp_path)
    [a_problem] = workers.get("A").problems
    assert "--output-format" in a_problem and "remove it" in a_problem
    [s_problem] = workers.get("S").problems
    assert '"max_turns" only applies to the agent engines' in s_problem


def test_a_scripts_agent_object_is_checked_before_it_goes_on_the_record() -> None:
    from lattice_workers.engines._common import agent_of_script

    assert agent_of_script(None) is None
    assert agent_of_script({"agent": "claude"}) is None
    got = agent_of_script(
        {
            "agent": {
                "engine": "claude,codex",
                "turns": 3,
                "input_tokens": -1,  # not a count
                "output_tokens": "9",  # not a number
                "cost_usd": 0.5,
                "error_kind": "auth",
                "error": "x" * 5000,
                "reviewers": [1, 2],  # not a field of the record
            }
        }
    )
    assert got is not None
    assert got["engine"] == "claude,codex" and got["turns"] == 3 and got["cost_usd"] == 0.5
    assert got["input_tokens"] is None and got["output_tokens"] is None
    assert got["error_kind"] == "auth" and len(got["error"]) == 4000
    assert "reviewers" not in got
    bad = agent_of_script({"agent": {"error_kind": "oops", "cost_usd": -2, "engine": 7}})
    assert bad is not None
    assert bad["error_kind"] is None and bad["cost_usd"] is None and bad["engine"] == "script"
