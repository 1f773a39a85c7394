"""Worker definitions: the ``workers/*.json`` files, read, validated and turned into argv.

A definition is decoded with msgspec, but not in one ``decode`` call: that stops at the
first error, and a person fixing a broken file wants every problem at once (the first
implementation shipped ``CodeReviewHeavy`` naming a missing script *and* a missing
prompt). So the JSON is decoded to plain values first, then each field is converted on
its own against the struct's annotated type, then the rules that span fields or touch
the file system run on whatever converted cleanly.

This module imports no Trio: the ``lattice worker`` commands use it directly.
"""

from __future__ import annotations

import difflib
import functools
import json
import os
import re
import shlex
import shutil
import stat
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from lattice_workers.errors import Code, LatticeError
from lattice_workers.store import validate_actor

NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
#: Names in ``env_strip`` / ``env_keep`` may be shell-style patterns such as ``AWS_*``.
ENV_PATTERN_PATTERN = r"^[A-Za-z_*?][A-Za-z0-9_*?]*$"
AGENT_ENGINES = ("claude", "codex", "gemini")
ENGINES = (*AGENT_ENGINES, "script")
WORKERS_DIR = "workers"
#: The variables the supervisor sets for every run (SPEC section 2); ``env`` may not set them.
RESERVED_ENV = frozenset(
    {
        "LATTICE_ROOT",
        "LATTICE_TASK_ID",
        "LATTICE_SHORT_ID",
        "LATTICE_RUN_ID",
        "LATTICE_STARTED_EVENT_ID",
        "LATTICE_WORKER",
        "LATTICE_ACTOR",
        "LATTICE_COMMIT_SHA",
        "LATTICE_BASE_REF",
        "LATTICE_MERGE_BASE",
        "LATTICE_WORKTREE",
        "LATTICE_LOG",
        "LATTICE_RESULT_FILE",
        "LATTICE_PROMPT_FILE",
        "LATTICE_ARTIFACT_ROLE",
        "LATTICE_REPORT_DIR",
        "LATTICE_REPORT_PREFIX",
        "LATTICE_OUTPUT_DIR",
    }
)

Name = Annotated[str, Meta(pattern=NAME_PATTERN)]
EnvName = Annotated[str, Meta(pattern=ENV_NAME_PATTERN)]
EnvPattern = Annotated[str, Meta(pattern=ENV_PATTERN_PATTERN)]
NonEmpty = Annotated[str, Meta(min_length=1)]
Minutes = Annotated[float, Meta(gt=0)]
Seconds = Annotated[float, Meta(ge=0)]


class WorkerDefinition(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One ``workers/<file>.json`` (SPEC section 2). Unknown fields are errors."""

    name: Name
    engine: str
    description: str | None = None
    prompt_file: NonEmpty | None = None
    command: NonEmpty | Annotated[list[str], Meta(min_length=1)] | None = None
    args: list[str] = []
    actor: str | None = None
    worktree: bool = True
    #: "clean": a reused workspace is cleaned of everything; "keep-ignored": its
    #: git-ignored files (a .venv, a build folder) stay for this worker's next run.
    worktree_reuse: Literal["clean", "keep-ignored"] = "clean"
    timeout_minutes: Minutes = 10
    kill_grace_seconds: Seconds = 10
    max_concurrent: Annotated[int, Meta(ge=1)] | None = None
    env: dict[EnvName, str] = {}
    env_strip: list[EnvPattern] = []
    env_keep: list[EnvPattern] = []
    retries: Annotated[int, Meta(ge=0)] = 0
    retry_backoff_seconds: Seconds = 0
    artifact_role: str | None = None
    report_prefix: str | None = None
    report_dir: str | None = None
    log_max_mib: Annotated[float, Meta(gt=0)] | None = None
    max_cost_usd: Annotated[float, Meta(gt=0)] | None = None
    max_turns: Annotated[int, Meta(ge=1)] | None = None
    network_timeout_seconds: Annotated[float, Meta(gt=0)] = 120
    #: Where its runs go: "local", or "ray" (the cluster of ``workers.executor``);
    #: None: the board's ``workers.executor``.
    executor: Literal["local", "ray"] | None = None


#: What each field must be, in words, for the message when its value does not convert.
_REQUIREMENT = {
    "name": "a name that starts with a letter followed by at most 63 letters, digits, "
    "'_', '.' or '-'",
    "engine": "one of " + ", ".join(ENGINES),
    "description": "a string",
    "prompt_file": "a non-empty path relative to the project root",
    "command": "a non-empty string (run with bash -c) or a non-empty list of strings",
    "args": "a list of strings",
    "actor": "an actor such as agent:reviewer",
    "worktree": "true or false",
    "worktree_reuse": '"clean" (the default: a reused worktree keeps nothing) or '
    '"keep-ignored" (git-ignored files stay between runs of this worker)',
    "timeout_minutes": "a number of minutes greater than 0",
    "kill_grace_seconds": "a number of seconds, 0 or more",
    "max_concurrent": "a whole number of at least 1, or null",
    "env": "an object mapping variable names (letters, digits and '_', not starting "
    "with a digit) to strings",
    "env_strip": "a list of variable names or patterns such as AWS_*",
    "env_keep": "a list of variable names or patterns such as AWS_*",
    "retries": "a whole number, 0 or more",
    "retry_backoff_seconds": "a number of seconds, 0 or more",
    "artifact_role": "a string",
    "report_prefix": "a string",
    "report_dir": "a path",
    "log_max_mib": "a number of MiB greater than 0 (the run's log keeps at most that much)",
    "max_cost_usd": "a number of US dollars greater than 0, or null",
    "max_turns": "a whole number of at least 1, or null",
    "network_timeout_seconds": "a number of seconds greater than 0",
    "executor": '"local" or "ray" (where its runs go; omit it for the board\'s workers.executor)',
}
_FIELDS = {f.name: f for f in msgspec.structs.fields(WorkerDefinition)}

#: bash keywords and builtins: a command starting with one runs no program of its own.
_SHELL_WORDS = frozenset(
    str.split(
        "! [[ ]] { } case coproc do done elif else esac fi for function if in select then time "
        "until while . : [ alias bg bind break builtin caller cd command compgen complete compopt "
        "continue declare dirs disown echo enable eval exec exit export false fc fg getopts hash "
        "help history jobs kill let local logout mapfile popd printf pushd pwd read readarray "
        "readonly return set shift shopt source suspend test times trap true type typeset ulimit "
        "umask unalias unset wait"
    )
)


class LoadedWorker(msgspec.Struct):
    """One definition file, valid or not, with every problem found in it."""

    name: str
    path: Path
    definition: WorkerDefinition | None
    problems: list[str]
    #: False when ``name`` is the file stem because the "name" field was missing or bad.
    named: bool = True

    @property
    def valid(self) -> bool:
        return self.definition is not None and not self.problems

    @property
    def actor(self) -> str:
        """The actor the worker's events are written as."""
        if self.definition is not None and self.definition.actor:
            return self.definition.actor
        return f"agent:{self.name.lower()}"

    def require(self) -> WorkerDefinition:
        """The definition, or ``INVALID_WORKER`` listing every problem."""
        if self.definition is None or self.problems:
            raise LatticeError(
                Code.INVALID_WORKER,
                f"worker {self.name!r} cannot start: " + " ".join(self.problems),
                details={"worker": self.name, "path": str(self.path), "problems": self.problems},
            )
        return self.definition

    def info(self, root: Path) -> Any:
        """This worker as the protocol's ``WorkerInfo`` (what ``worker list`` shows)."""
        from lattice_workers.protocol._messages import WorkerInfo

        defn = self.definition
        return WorkerInfo(
            name=self.name,
            path=_display(self.path, root),
            valid=self.valid,
            problems=list(self.problems),
            engine=defn.engine if defn else None,
            description=defn.description if defn else None,
            actor=self.actor,
            worktree=defn.worktree if defn else True,
            max_concurrent=defn.max_concurrent if defn else None,
        )


class WorkerSet:
    """Every ``<root>/workers/*.json``, keyed by name in lower case.

    ``files`` lists every file (duplicates included, sorted by file name); ``workers``
    maps each name to one of them. ``fingerprint`` is what :func:`workers_fingerprint`
    returned when the files were read; :meth:`stale` also notices a prompt or script
    that appeared, vanished or changed since, which a definition's validity depends on.
    """

    def __init__(
        self,
        root: Path,
        files: list[LoadedWorker],
        fingerprint: tuple[Any, ...],
        referenced: tuple[str, ...] = (),
    ) -> None:
        self.root = root
        self.files = files
        self.fingerprint = fingerprint
        self.referenced = referenced
        self._references = _stat_all(root, referenced)
        self.workers: dict[str, LoadedWorker] = {}
        # A file whose name came from its own "name" field wins over a broken file
        # that is only known by its file stem.
        for lw in sorted(files, key=lambda w: (not w.named, w.path.name)):
            self.workers.setdefault(lw.name.lower(), lw)

    def __iter__(self) -> Any:
        return iter(self.files)

    def __len__(self) -> int:
        return len(self.files)

    def get(self, name: str) -> LoadedWorker:
        """The worker named ``name`` (any case), valid or not; else ``NOT_FOUND``."""
        found = self.workers.get(name.lower())
        if found is None:
            known = ", ".join(sorted({w.name for w in self.workers.values()}, key=str.lower))
            hint = f"known: {known}" if known else "none defined; run `lattice worker init`"
            raise LatticeError(
                Code.NOT_FOUND, f"no worker named {name[:80]!r} in {WORKERS_DIR}/ ({hint})"
            )
        return found

    def require(self, name: str) -> WorkerDefinition:
        """The valid definition named ``name``: ``NOT_FOUND`` or ``INVALID_WORKER`` else."""
        return self.get(name).require()

    def stale(self) -> bool:
        """True when a definition file or a file one of them names has changed."""
        return (
            workers_fingerprint(self.root) != self.fingerprint
            or _stat_all(self.root, self.referenced) != self._references
        )


def workers_fingerprint(root: Path) -> tuple[Any, ...]:
    """``(file name, mtime_ns, size)`` of every ``workers/*.json``: stat calls only."""
    out = []
    try:
        with os.scandir(root / WORKERS_DIR) as entries:
            for entry in entries:
                if not entry.name.endswith(".json"):
                    continue
                try:
                    st = entry.stat()
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    out.append((entry.name, st.st_mtime_ns, st.st_size))
    except OSError:
        return ()
    return tuple(sorted(out))


def load_workers(root: Path) -> WorkerSet:
    """Read and validate every definition under ``root``; never raises for a bad file."""
    fingerprint = workers_fingerprint(root)
    files: list[LoadedWorker] = []
    referenced: list[str] = []
    for file_name, _, _ in fingerprint:
        lw, refs = _load_one(root, root / WORKERS_DIR / file_name)
        files.append(lw)
        referenced.extend(refs)
    _flag_duplicates(root, files)
    return WorkerSet(root, files, fingerprint, tuple(dict.fromkeys(referenced)))


def command_for(defn: WorkerDefinition, root: Path, prompt_text: str) -> list[str]:
    """The argv a script run executes (an agent engine's comes from its adapter in
    :mod:`lattice_workers.engines`, with the prompt on stdin).

    ``["bash", "-c", command]`` for a string, else the list plus ``args``. A first word
    that is a relative path (``./workers/x.sh``) is made absolute against ``root``:
    definitions and their scripts come from the project root, as ``worker check``
    validated them, while the run's cwd is usually a worktree at another commit (where
    a new, uncommitted script would not exist).
    """
    if defn.engine != "script":
        raise ValueError(
            f"worker {defn.name!r}: the argv of engine {defn.engine!r} comes from "
            "lattice_workers.engines (engine_for), not command_for"
        )
    command = defn.command
    if isinstance(command, str):
        return ["bash", "-c", _absolute_script(command, root)]
    if command is None:
        raise LatticeError(
            Code.INVALID_WORKER, f"worker {defn.name!r} has engine script but no command"
        )
    first = command[0]
    if _is_relative_path(first):
        first = str(root / first)
    return [first, *command[1:], *defn.args]


def programs_of(defn: WorkerDefinition) -> list[str]:
    """The programs a run of ``defn`` executes: for ``bash -c "cmd ..."`` both bash and
    the first word of ``cmd``, unless that word is a shell keyword, a builtin, an
    assignment or anything but a plain word (then only bash)."""
    programs: list[str] = []
    if defn.engine in AGENT_ENGINES:
        programs.append(defn.engine)
    elif isinstance(defn.command, list):
        programs.append(defn.command[0])
    elif isinstance(defn.command, str):
        programs.append("bash")
        first = _first_word(defn.command)
        if first is not None and _is_plain_program(first):
            programs.append(first)
    return programs


def preflight(
    defn: WorkerDefinition, root: Path, path_env: str, *, paths_only: bool = False
) -> str | None:
    """Why the program a run would execute cannot be found (``ENGINE_NOT_FOUND``), or None.

    ``path_env`` is the ``PATH`` the worker will have (see :func:`programs_of` for what
    is checked). ``paths_only``: only programs named by a path in the project (a run
    on a cluster: its nodes look for the others on their own PATH).
    """
    for program in programs_of(defn):
        if paths_only and "/" not in program:
            continue
        problem = _find_program(program, root, path_env)
        if problem is not None:
            return f"worker {defn.name!r} cannot start: {problem}"
    return None


# -- one file --------------------------------------------------------------------------


def _load_one(root: Path, path: Path) -> tuple[LoadedWorker, list[str]]:
    shown = _display(path, root)
    stem_name = path.stem
    problems: list[str] = []
    referenced: list[str] = []

    def broken(problem: str) -> tuple[LoadedWorker, list[str]]:
        return LoadedWorker(stem_name, path, None, [problem], named=False), []

    try:
        data = path.read_bytes()
    except OSError as err:
        return broken(f"{shown} cannot be read ({err.strerror}); fix its permissions.")
    try:
        raw = msgspec.json.decode(data)
    except msgspec.DecodeError as err:
        return broken(f"{shown} is not valid JSON ({err}); fix the syntax.")
    if not isinstance(raw, dict):
        kind = type(raw).__name__
        return broken(f"{shown} must hold a JSON object, not a {kind}; wrap it in {{}}.")

    values: dict[str, Any] = {}
    failed: set[str] = set()
    for key, value in raw.items():
        if key not in _FIELDS:
            close = difflib.get_close_matches(key, list(_FIELDS), n=1)
            hint = f' (did you mean "{close[0]}"?)' if close else ""
            problems.append(
                f'{shown}: unknown field "{key}"{hint}; remove it or fix its spelling.'
            )
            continue
        try:
            values[key] = msgspec.convert(value, _FIELDS[key].type)
        except msgspec.ValidationError as err:
            failed.add(key)
            problems.append(
                f'{shown}: "{key}" must be {_REQUIREMENT[key]}, not {_short(value)} '
                f"({_at_field(str(err), key)}); fix it."
            )
    for key in ("name", "engine"):
        if key not in raw:
            problems.append(f'{shown}: required field "{key}" is missing; add it.')

    declared = values.get("name")
    name = declared if isinstance(declared, str) else stem_name
    problems.extend(_check_fields(root, shown, values, failed, referenced))

    definition: WorkerDefinition | None = None
    if all(key in values for key in raw) and "name" in values and "engine" in values:
        definition = msgspec.convert(values, WorkerDefinition)
    return LoadedWorker(name, path, definition, problems, named=name == declared), referenced


def _check_fields(
    root: Path, shown: str, v: dict[str, Any], failed: set[str], referenced: list[str]
) -> list[str]:
    """The rules that span fields or look at files, on the fields that converted.

    ``failed`` names the fields present but already reported as malformed, so that a
    "needs a ..." rule does not report them a second time as missing.
    """
    problems: list[str] = []
    engine = v.get("engine")
    command = v.get("command")
    if engine is not None and engine not in ENGINES:
        problems.append(
            f'{shown}: engine "{engine}" is not one of {", ".join(ENGINES)}; pick one of them.'
        )
    if engine in AGENT_ENGINES:
        if command is not None:
            problems.append(
                f'{shown}: "command" only applies to engine "script" (for {engine} the '
                'command line is built from "prompt_file"); put extra arguments in "args".'
            )
        if isinstance(v.get("args"), list):
            from lattice_workers.engines import ENGINES as ADAPTERS

            problems.extend(f"{shown}: {p}." for p in ADAPTERS[engine].args_problems(v["args"]))
        if "prompt_file" not in v and "prompt_file" not in failed:
            problems.append(
                f'{shown}: engine "{engine}" needs a "prompt_file" (a path relative to the '
                "project root); add one."
            )
    if engine == "script":
        for key in ("max_cost_usd", "max_turns"):
            if v.get(key) is not None:
                problems.append(
                    f'{shown}: "{key}" only applies to the agent engines (a script reports no '
                    "cost or turns); remove it."
                )
        if command is None and "command" not in failed:
            problems.append(
                f'{shown}: engine "script" needs a "command" (a string run with bash -c, '
                "or an argv list); add one."
            )
        if isinstance(command, str) and v.get("args"):
            problems.append(
                f'{shown}: "args" cannot be appended to a string "command" (it runs with '
                'bash -c); write the arguments into "command", or make "command" a list.'
            )
    if isinstance(v.get("prompt_file"), str):
        prompt = v["prompt_file"]
        referenced.append(prompt)
        problem = _file_problem(root, prompt, "prompt file", "prompt_file", executable=False)
        if problem:
            problems.append(f"{shown}: {problem}")
    if engine == "script" and command is not None:
        try:
            if isinstance(command, str):
                shlex.split(command)  # the whole line must parse, not only its first word
            first = command[0] if isinstance(command, list) else _first_word(command)
        except ValueError as err:
            problems.append(f'{shown}: "command" is not valid shell syntax ({err}); fix it.')
            first = None
        if first is not None and _is_relative_path(first):
            referenced.append(first)
            problem = _file_problem(root, first, "script", "command", executable=True)
            if problem:
                problems.append(f"{shown}: {problem}")
    actor = v.get("actor")
    if isinstance(actor, str):
        try:
            validate_actor(actor)
        except LatticeError as err:
            problems.append(f'{shown}: {err.message}; fix "actor".')
    reserved = sorted(RESERVED_ENV.intersection(v.get("env", {})))
    if reserved:
        problems.append(
            f'{shown}: "env" sets {", ".join(reserved)}, which the supervisor sets for '
            "every run; remove it."
        )
    for key in ("command", "args", "env"):
        if any("\x00" in text for text in _strings(v.get(key))):
            problems.append(
                f'{shown}: "{key}" contains a NUL character, which no process can receive; '
                "remove it."
            )
    if v.get("executor") == "ray" and v.get("worktree") is False:
        problems.append(
            f'{shown}: "executor": "ray" runs the worker in a worktree on a cluster node; '
            'remove "worktree": false, or run it locally ("executor": "local").'
        )
    report_dir = v.get("report_dir")
    if (
        isinstance(report_dir, str)
        and not os.path.isabs(report_dir)
        and not _inside(root, root / report_dir)
    ):
        problems.append(
            f'{shown}: report folder "{report_dir}" resolves outside the project root; '
            "keep it inside the project, or give an absolute path."
        )
    return problems


def _flag_duplicates(root: Path, files: list[LoadedWorker]) -> None:
    by_name: dict[str, list[LoadedWorker]] = {}
    for lw in files:
        if lw.named:
            by_name.setdefault(lw.name.lower(), []).append(lw)
    for group in by_name.values():
        if len(group) < 2:
            continue
        for lw in group:
            others = ", ".join(_display(o.path, root) for o in group if o is not lw)
            lw.problems.append(
                f'{_display(lw.path, root)}: worker name "{lw.name}" is also used by {others} '
                "(names must be unique ignoring case); rename one of them."
            )


def _file_problem(root: Path, rel: str, what: str, field: str, *, executable: bool) -> str | None:
    """Why ``rel`` is not a usable file inside ``root``, or None."""
    if os.path.isabs(rel):
        return f'{what} "{rel}" must be a path relative to the project root; fix "{field}".'
    target = root / rel
    if not _inside(root, target):
        return (
            f'{what} "{rel}" resolves outside the project root ({os.path.realpath(target)}); '
            f'keep it inside the project and fix "{field}".'
        )
    if not target.exists():
        return f'{what} "{rel}" does not exist; create it, or fix "{field}".'
    if not target.is_file():
        return f'{what} "{rel}" is not a regular file; fix "{field}".'
    if executable and not os.access(target, os.X_OK):
        return f'{what} "{rel}" is not executable; run `chmod +x {shlex.quote(rel)}`.'
    return None


# -- helpers -----------------------------------------------------------------------------


def _inside(root: Path, target: Path) -> bool:
    """Whether ``target`` (symlinks followed) lies inside ``root``."""
    real_root = os.path.realpath(root)
    real = os.path.realpath(target)
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def _display(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [x for x in value if isinstance(x, str)]
    if isinstance(value, dict):
        return [*value, *value.values()]
    return []


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _at_field(message: str, field: str) -> str:
    """msgspec's message with its path rooted at ``$.field``."""
    if " - at `" in message:
        return message.replace("`$", f"`$.{field}", 1)
    return f"{message} - at `$.{field}`"


@functools.lru_cache(maxsize=256)
def _first_word(command: str) -> str | None:
    """The first shell word of ``command``, or None when it has none or cannot be parsed.

    Cached: every Run request and every spawn asks it of the same few commands."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        return lexer.get_token() or None
    except ValueError:
        return None


def _is_plain_program(word: str) -> bool:
    if word in _SHELL_WORDS or re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", word):
        return False
    return re.fullmatch(r"[A-Za-z0-9_./+@%,-]+", word) is not None


def _is_relative_path(word: str) -> bool:
    return "/" in word and not word.startswith("/")


def _absolute_script(command: str, root: Path) -> str:
    """``command`` with a relative script path as its first word made absolute."""
    stripped = command.lstrip()
    first = _first_word(stripped)
    if first is None or not _is_relative_path(first) or not stripped.startswith(first):
        return command
    rest = stripped[len(first) :]
    if rest and not rest[0].isspace() and rest[0] not in ";&|<>()":
        return command
    return shlex.quote(str(root / first)) + rest


def _find_program(program: str, root: Path, path_env: str) -> str | None:
    if "/" in program:
        target = Path(program) if program.startswith("/") else root / program
        if not target.is_file():
            return f"program {program!r} does not exist; create it or fix the command."
        if not os.access(target, os.X_OK):
            return f"program {program!r} is not executable; run `chmod +x {shlex.quote(program)}`."
        return None
    if shutil.which(program, path=path_env) is None:
        shown = path_env if len(path_env) <= 200 else path_env[:197] + "..."
        return (
            f"program {program!r} was not found on the worker's PATH ({shown}); install it, "
            'or set PATH in the definition\'s "env".'
        )
    return None


def _stat_all(root: Path, paths: tuple[str, ...]) -> tuple[Any, ...]:
    out: list[tuple[str, int | None, int | None, int | None]] = []
    for rel in paths:
        try:
            st = os.stat(root / rel)
            out.append((rel, st.st_mtime_ns, st.st_size, st.st_mode))
        except OSError:
            out.append((rel, None, None, None))
    return tuple(out)
