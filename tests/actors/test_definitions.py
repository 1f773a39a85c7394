"""Worker definitions: every validation rule, path tricks, reload, argv and preflight."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from lattice_workers.actors._definitions import (
    WorkerDefinition,
    command_for,
    load_workers,
    preflight,
    workers_fingerprint,
)
from lattice_workers.engines import ENGINES
from lattice_workers.errors import Code, LatticeError


@pytest.fixture
def root(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    (project / "workers").mkdir(parents=True)
    (project / "prompts").mkdir()
    (project / "prompts" / "review.md").write_text("Review the diff.\n")
    return project


def write(root: Path, file_name: str, content: Any) -> Path:
    path = root / "workers" / file_name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def script(root: Path, rel: str, executable: bool = True) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\necho hi\n")
    if executable:
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def agent(**fields: Any) -> dict[str, Any]:
    return {"name": "Lite", "engine": "claude", "prompt_file": "prompts/review.md", **fields}


def problems_of(root: Path, content: Any, file_name: str = "w.json") -> list[str]:
    write(root, file_name, content)
    return load_workers(root).files[0].problems


# -- valid definitions ------------------------------------------------------------------


def test_valid_agent_definition_loads_with_documented_defaults(root: Path) -> None:
    write(root, "lite.json", agent(description="quick review"))
    workers = load_workers(root)
    lite = workers.get("lite")
    assert lite.valid, lite.problems
    defn = lite.require()
    assert (defn.worktree, defn.timeout_minutes, defn.kill_grace_seconds) == (True, 10, 10)
    assert (defn.retries, defn.max_concurrent, defn.env, defn.args) == (0, None, {}, [])
    assert lite.actor == "agent:lite"
    assert lite.path == root / "workers" / "lite.json"


def test_valid_script_definition_with_relative_script_inside_root(root: Path) -> None:
    script(root, "workers/run-tests.sh")
    write(
        root,
        "tests.json",
        {"name": "Tests", "engine": "script", "command": "./workers/run-tests.sh --fast"},
    )
    assert load_workers(root).get("Tests").valid


def test_script_with_argv_list_and_prompt_is_valid(root: Path) -> None:
    write(
        root,
        "heavy.json",
        {
            "name": "Heavy",
            "engine": "script",
            "command": ["python3", "-c", "print(1)"],
            "args": ["x"],
            "prompt_file": "prompts/review.md",
            "actor": "team:reviewers",
            "timeout_minutes": 0.5,
            "max_concurrent": 2,
            "env": {"FOO": "bar"},
        },
    )
    heavy = load_workers(root).get("HEAVY")
    assert heavy.valid, heavy.problems
    assert heavy.actor == "team:reviewers"
    assert heavy.require().timeout_minutes == 0.5


def test_no_workers_folder_is_an_empty_set(tmp_path: Path) -> None:
    workers = load_workers(tmp_path)
    assert len(workers) == 0
    with pytest.raises(LatticeError) as err:
        workers.get("anything")
    assert err.value.code == Code.NOT_FOUND
    assert "lattice worker init" in err.value.message


# -- the review's broken CodeReviewHeavy -------------------------------------------------


def test_code_review_heavy_with_missing_script_and_prompt_lists_both_problems(root: Path) -> None:
    write(
        root,
        "code-review-heavy.json",
        {
            "name": "CodeReviewHeavy",
            "engine": "script",
            "command": "./workers/code-review-heavy.sh",
            "prompt_file": "prompts/workers/code-review-heavy.md",
        },
    )
    heavy = load_workers(root).get("codereviewheavy")
    assert not heavy.valid
    assert len(heavy.problems) == 2
    joined = " ".join(heavy.problems)
    assert "./workers/code-review-heavy.sh" in joined and "does not exist" in joined
    assert "prompts/workers/code-review-heavy.md" in joined
    assert all(p.startswith("workers/code-review-heavy.json: ") for p in heavy.problems)
    with pytest.raises(LatticeError) as err:
        heavy.require()
    assert err.value.code == Code.INVALID_WORKER
    assert "code-review-heavy.sh" in err.value.message
    assert "code-review-heavy.md" in err.value.message


# -- file-level problems -------------------------------------------------------------------


def test_json_syntax_error_names_the_file_and_uses_the_file_stem(root: Path) -> None:
    write(root, "broken.json", '{"name": "X", }')
    broken = load_workers(root).get("broken")
    assert broken.definition is None
    assert broken.problems[0].startswith("workers/broken.json is not valid JSON")
    assert "fix the syntax" in broken.problems[0]


def test_a_json_array_is_refused(root: Path) -> None:
    assert "must hold a JSON object" in problems_of(root, [1, 2])[0]


def test_unknown_fields_are_errors_with_their_path_and_a_hint(root: Path) -> None:
    problems = problems_of(root, agent(comand="x", colour="red"))
    assert len(problems) == 2
    assert 'unknown field "comand"' in problems[0] and "Object contains" not in problems[0]
    assert 'did you mean "command"' in problems[0]
    assert load_workers(root).files[0].definition is None


def test_missing_required_fields_are_all_reported(root: Path) -> None:
    problems = problems_of(root, {"description": "nothing else"})
    assert any('"name" is missing' in p for p in problems)
    assert any('"engine" is missing' in p for p in problems)


@pytest.mark.parametrize("name", ["1abc", "has space", "../etc", "", "a" * 65, "a/b"])
def test_names_outside_the_pattern_are_refused(root: Path, name: str) -> None:
    problems = problems_of(root, agent(name=name))
    assert len(problems) == 1
    assert problems[0].startswith('workers/w.json: "name" must be a name that starts')
    assert "$.name" in problems[0]
    assert load_workers(root).files[0].name == "w"  # the stem, never the bad name


def test_names_unique_ignoring_case_flags_both_files(root: Path) -> None:
    write(root, "a.json", agent(name="Review"))
    write(root, "b.json", agent(name="REVIEW"))
    write(root, "c.json", agent(name="Other"))
    workers = load_workers(root)
    a, b, c = workers.files
    assert not a.valid and "workers/b.json" in a.problems[0]
    assert not b.valid and "workers/a.json" in b.problems[0]
    assert "unique ignoring case" in a.problems[0]
    assert c.valid
    assert not workers.get("review").valid


def test_a_broken_file_does_not_make_a_worker_with_its_stem_as_name_a_duplicate(
    root: Path,
) -> None:
    write(root, "review.json", "{not json")
    write(root, "z.json", agent(name="Review"))
    workers = load_workers(root)
    assert workers.get("review").path.name == "z.json"
    assert workers.get("review").valid


# -- field rules -------------------------------------------------------------------------


def test_engine_must_be_a_known_one(root: Path) -> None:
    problems = problems_of(root, agent(engine="gpt"))
    assert problems == [
        'workers/w.json: engine "gpt" is not one of claude, codex, gemini, script; '
        "pick one of them."
    ]


@pytest.mark.parametrize("engine", ["claude", "codex", "gemini"])
def test_command_on_an_agent_engine_says_to_use_args(root: Path, engine: str) -> None:
    problems = problems_of(root, agent(engine=engine, command="claude -p hi"))
    assert len(problems) == 1
    assert '"command" only applies to engine "script"' in problems[0]
    assert '"args"' in problems[0]


def test_script_requires_a_command(root: Path) -> None:
    problems = problems_of(root, {"name": "S", "engine": "script"})
    assert problems == [
        'workers/w.json: engine "script" needs a "command" (a string run with bash -c, '
        "or an argv list); add one."
    ]


def test_agent_engines_require_a_prompt_file(root: Path) -> None:
    problems = problems_of(root, {"name": "A", "engine": "codex"})
    assert len(problems) == 1 and 'needs a "prompt_file"' in problems[0]


def test_args_with_a_string_command_are_refused(root: Path) -> None:
    problems = problems_of(
        root, {"name": "S", "engine": "script", "command": "true", "args": ["x"]}
    )
    assert len(problems) == 1 and '"args" cannot be appended' in problems[0]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("timeout_minutes", 0),
        ("timeout_minutes", -1),
        ("timeout_minutes", "10"),
        ("kill_grace_seconds", -0.5),
        ("max_concurrent", 0),
        ("retries", -1),
        ("retries", True),
        ("retry_backoff_seconds", -1),
        ("worktree", "yes"),
        ("worktree_reuse", "keep-all"),
        ("worktree_reuse", True),
        ("args", "--model x"),
        ("env", {"1BAD": "x"}),
        ("env", {"OK": 1}),
        ("env_strip", ["BAD-NAME"]),
        ("command", []),
        ("prompt_file", ""),
    ],
)
def test_field_values_of_the_wrong_type_or_range_are_refused(
    root: Path, field: str, value: Any
) -> None:
    problems = problems_of(
        root,
        agent(**{field: value})
        if field != "command"
        else {"name": "S", "engine": "script", field: value},
    )
    assert len(problems) == 1, problems
    assert problems[0].startswith(f'workers/w.json: "{field}" must be ')
    assert f"$.{field}" in problems[0]


def test_worktree_reuse_is_clean_unless_a_worker_keeps_its_ignored_files(root: Path) -> None:
    assert problems_of(root, agent(worktree_reuse="keep-ignored")) == []
    assert problems_of(root, agent(worktree_reuse="clean")) == []


def test_fractional_timeouts_and_zero_grace_are_accepted(root: Path) -> None:
    assert problems_of(root, agent(timeout_minutes=0.01, kill_grace_seconds=0)) == []


@pytest.mark.parametrize("actor", ["robot:x", "agent:", ":x", "nocolon", "agent:a\nb", "agent: "])
def test_invalid_actor_is_refused(root: Path, actor: str) -> None:
    problems = problems_of(root, agent(actor=actor))
    assert len(problems) == 1 and f"actor {actor!r}" in problems[0]
    assert problems[0].endswith('fix "actor".')


def test_env_may_not_set_the_supervisors_variables(root: Path) -> None:
    problems = problems_of(root, agent(env={"LATTICE_ROOT": "/x", "LATTICE_OWN": "ok"}))
    assert len(problems) == 1 and "LATTICE_ROOT" in problems[0]
    assert "LATTICE_OWN" not in problems[0]


def test_every_problem_is_collected_not_the_first(root: Path) -> None:
    problems = problems_of(
        root,
        {
            "name": "Many",
            "engine": "claude",
            "command": "x",
            "timeout_minutes": -1,
            "actor": "bad",
            "extra": 1,
            "prompt_file": "prompts/missing.md",
        },
    )
    assert len(problems) == 5, problems


# -- paths: existence and containment ------------------------------------------------------


@pytest.mark.parametrize("prompt", ["../../etc/passwd", "prompts/../../outside.md", "/etc/passwd"])
def test_prompt_paths_outside_the_root_are_refused(root: Path, prompt: str) -> None:
    (root.parent / "outside.md").write_text("x")
    problems = problems_of(root, agent(prompt_file=prompt))
    assert len(problems) == 1
    assert "outside the project root" in problems[0] or "must be a path relative" in problems[0]


def test_a_prompt_symlink_pointing_out_of_the_root_is_refused(root: Path) -> None:
    (root.parent / "secret.md").write_text("x")
    (root / "prompts" / "link.md").symlink_to(root.parent / "secret.md")
    problems = problems_of(root, agent(prompt_file="prompts/link.md"))
    assert len(problems) == 1 and "outside the project root" in problems[0]


def test_a_prompt_symlink_inside_the_root_is_fine(root: Path) -> None:
    (root / "prompts" / "link.md").symlink_to(root / "prompts" / "review.md")
    assert problems_of(root, agent(prompt_file="prompts/link.md")) == []


def test_a_prompt_folder_is_not_a_prompt_file(root: Path) -> None:
    problems = problems_of(root, agent(prompt_file="prompts"))
    assert len(problems) == 1 and "not a regular file" in problems[0]


@pytest.mark.parametrize("command", ["../evil.sh", ["./workers/../../evil.sh", "x"]])
def test_script_paths_outside_the_root_are_refused(root: Path, command: Any) -> None:
    script(root.parent, "evil.sh")
    problems = problems_of(root, {"name": "S", "engine": "script", "command": command})
    assert len(problems) == 1 and "outside the project root" in problems[0]


def test_a_script_symlink_pointing_out_of_the_root_is_refused(root: Path) -> None:
    outside = script(root.parent, "evil.sh")
    (root / "workers" / "x.sh").symlink_to(outside)
    problems = problems_of(root, {"name": "S", "engine": "script", "command": "./workers/x.sh"})
    assert len(problems) == 1 and "outside the project root" in problems[0]


def test_a_script_that_is_not_executable_is_refused(root: Path) -> None:
    script(root, "workers/x.sh", executable=False)
    problems = problems_of(root, {"name": "S", "engine": "script", "command": "workers/x.sh"})
    assert len(problems) == 1 and "chmod +x" in problems[0]


def test_an_unbalanced_quote_in_a_command_is_refused(root: Path) -> None:
    problems = problems_of(root, {"name": "S", "engine": "script", "command": "echo 'oops"})
    assert len(problems) == 1 and "not valid shell syntax" in problems[0]


def test_report_dir_may_not_escape_the_root(root: Path) -> None:
    assert len(problems_of(root, agent(report_dir="../reports"))) == 1
    assert problems_of(root, agent(report_dir="reports/review")) == []


# -- lookups and reload -------------------------------------------------------------------


def test_get_is_case_insensitive_and_not_found_lists_known_names(root: Path) -> None:
    write(root, "a.json", agent(name="Beta"))
    write(root, "b.json", agent(name="alpha"))
    workers = load_workers(root)
    assert workers.get("BETA").name == "Beta"
    with pytest.raises(LatticeError) as err:
        workers.get("Gamma")
    assert err.value.code == Code.NOT_FOUND
    assert err.value.message == "no worker named 'Gamma' in workers/ (known: alpha, Beta)"


def test_fingerprint_changes_when_a_definition_changes(root: Path) -> None:
    path = write(root, "a.json", agent(name="A"))
    (root / "workers" / "notes.txt").write_text("not a definition")
    workers = load_workers(root)
    assert workers.fingerprint == workers_fingerprint(root)
    assert not workers.stale()
    path.write_text(json.dumps(agent(name="A", description="longer now")))
    assert workers_fingerprint(root) != workers.fingerprint and workers.stale()
    workers = load_workers(root)
    write(root, "b.json", agent(name="B"))
    assert workers.stale()
    workers = load_workers(root)
    path.unlink()
    assert workers.stale()
    assert workers_fingerprint(root) == (workers.fingerprint[1],)


def test_stale_notices_a_missing_prompt_that_appears(root: Path) -> None:
    write(root, "a.json", agent(name="A", prompt_file="prompts/later.md"))
    workers = load_workers(root)
    assert not workers.get("a").valid and not workers.stale()
    (root / "prompts" / "later.md").write_text("now it exists")
    assert workers.stale()
    assert load_workers(root).get("a").valid


# -- argv and preflight -------------------------------------------------------------------


def defn(**fields: Any) -> WorkerDefinition:
    return WorkerDefinition(**{"name": "W", "engine": "script", **fields})


@pytest.mark.parametrize(
    ("engine", "head"),
    [
        ("claude", ["claude", "-p", "--output-format", "stream-json"]),
        ("codex", ["codex", "exec", "--json"]),
        ("gemini", ["gemini", "--output-format", "stream-json"]),
    ],
)
def test_agent_argv_comes_from_its_adapter_with_the_args_and_the_prompt_on_stdin(
    engine: str, head: list[str], tmp_path: Path
) -> None:
    d = defn(engine=engine, prompt_file="p.md", args=["--model", "x"])
    cmd = ENGINES[engine].command(d, output_dir=tmp_path, prompt="PROMPT")
    assert cmd.argv[: len(head)] == head
    assert cmd.argv[cmd.argv.index("--model") + 1] == "x" and "PROMPT" not in cmd.argv
    assert cmd.stdin == b"PROMPT"
    with pytest.raises(ValueError, match="engines"):
        command_for(d, Path("/r"), "PROMPT")


def test_a_prompt_starting_with_a_dash_reaches_the_agent_as_written(tmp_path: Path) -> None:
    d = defn(engine="claude", prompt_file="p")
    cmd = ENGINES["claude"].command(d, output_dir=tmp_path, prompt="---\ntitle: x\n")
    assert cmd.stdin == b"---\ntitle: x\n"  # on stdin it cannot be read as an option


def test_a_prompt_too_large_for_one_argument_goes_through_stdin(tmp_path: Path) -> None:
    d = defn(engine="codex", prompt_file="p")
    cmd = ENGINES["codex"].command(d, output_dir=tmp_path, prompt="x" * 200_000)
    assert cmd.stdin == b"x" * 200_000 and max(len(a) for a in cmd.argv) < 1000


def test_script_argv_for_a_string_and_a_list() -> None:
    root = Path("/project")
    assert command_for(defn(command="echo hi && true"), root, "") == [
        "bash",
        "-c",
        "echo hi && true",
    ]
    assert command_for(defn(command=["python3", "-V"], args=["-x"]), root, "") == [
        "python3",
        "-V",
        "-x",
    ]


def test_relative_script_paths_run_from_the_project_root() -> None:
    root = Path("/my project")
    assert command_for(defn(command="./workers/x.sh --fast"), root, "") == [
        "bash",
        "-c",
        "'/my project/workers/x.sh' --fast",
    ]
    assert (
        command_for(defn(command=["workers/x.sh", "a"]), root, "")[0] == "/my project/workers/x.sh"
    )


def fake_program(folder: Path, name: str) -> None:
    folder.mkdir(exist_ok=True)
    script(folder, name)


def test_preflight_finds_the_engine_on_the_workers_path(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    fake_program(bin_dir, "claude")
    d = defn(engine="claude", prompt_file="p")
    assert preflight(d, tmp_path, str(bin_dir)) is None
    problem = preflight(defn(engine="codex", prompt_file="p"), tmp_path, str(bin_dir))
    assert problem is not None
    assert problem.startswith("worker 'W' cannot start: program 'codex' was not found")
    assert str(bin_dir) in problem


def test_preflight_checks_the_first_plain_word_of_a_shell_command(tmp_path: Path) -> None:
    path = os.environ["PATH"]
    assert preflight(defn(command="no-such-tool-xyz --flag"), tmp_path, path) is not None
    for command in ["cd src && no-such-tool-xyz", "FOO=1 no-such-tool-xyz", "echo $(x)", "{ x; }"]:
        assert preflight(defn(command=command), tmp_path, path) is None, command
    assert preflight(defn(command="true"), tmp_path, path) is None


def test_preflight_checks_bash_itself(tmp_path: Path) -> None:
    problem = preflight(defn(command="true"), tmp_path, str(tmp_path / "empty"))
    assert problem is not None and "'bash'" in problem


def test_preflight_checks_relative_and_absolute_scripts(tmp_path: Path) -> None:
    path = os.environ["PATH"]
    assert preflight(defn(command=["./workers/x.sh"]), tmp_path, path) is not None
    script(tmp_path, "workers/x.sh")
    assert preflight(defn(command=["./workers/x.sh"]), tmp_path, path) is None
    assert preflight(defn(command="./workers/x.sh arg"), tmp_path, path) is None
    assert preflight(defn(command=["/no/such/program"]), tmp_path, path) is not None
