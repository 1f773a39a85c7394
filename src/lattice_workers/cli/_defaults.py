"""What ``lattice-workers`` assumes when the user did not say: the actor, the project code.

A new user's first commands (``init``, ``create``, ``status``) must work without
flags: the README's "Using it" block is run verbatim by a test. So ``init`` derives a
project code from the folder's name (short ids by default) and stores a default actor
taken from who the user already is to git, and says both once.
"""

from __future__ import annotations

import os
import re
import subprocess
import unicodedata
from pathlib import Path

#: The code used when a folder's name has no letter at all (``2024``).
FALLBACK_CODE = "T"


def derive_project_code(folder_name: str) -> str:
    """1 to 5 capital letters for short ids, from a folder name.

    One word gives its first five letters (``calc`` -> ``CALC``, ``myapp`` -> ``MYAPP``);
    several words whose letters do not fit in five give their initials
    (``lattice-workers`` -> ``LW``); accents are dropped (``café`` -> ``CAFE``).
    """
    ascii_name = unicodedata.normalize("NFKD", folder_name).encode("ascii", "ignore").decode()
    words = [w.upper() for w in re.findall(r"[A-Za-z]+", ascii_name)]
    letters = "".join(words)
    if not letters:
        return FALLBACK_CODE
    if len(words) > 1 and len(letters) > 5:
        return "".join(w[0] for w in words)[:5]
    return letters[:5]


def guess_actor(cwd: Path) -> tuple[str, str]:
    """``(actor, where it came from)`` for a user who named none.

    ``LATTICE_ACTOR``, else ``human:<git config user.name>`` (else the part of
    ``user.email`` before the ``@``), else ``human:$USER``, else ``human:user``.
    Whitespace in a name becomes ``-``, so the actor is one shell word.
    """
    env = os.environ.get("LATTICE_ACTOR", "").strip()
    if env:
        return env, "LATTICE_ACTOR"
    for key in ("user.name", "user.email"):
        value = _git_config(cwd, key)
        if key == "user.email":
            value = value.partition("@")[0]
        name = "-".join(value.split())
        if name:
            return f"human:{name}", f"git config {key}"
    for var in ("USER", "LOGNAME", "USERNAME"):
        name = "-".join(os.environ.get(var, "").split())
        if name:
            return f"human:{name}", f"${var}"
    return "human:user", "no git user and no $USER"


def _git_config(cwd: Path, key: str) -> str:
    try:
        proc = subprocess.run(
            ["git", "config", "--get", key],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return proc.stdout.strip() if proc.returncode == 0 else ""
