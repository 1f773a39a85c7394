"""Commits between two repositories as ``git bundle`` bytes: the run's commit to a node,
the kept work back.

Why bundles and not a fetch from a remote: a bundle travels in Ray's object store, the
one channel every node already has, so a node needs no credentials for, nor a route
to, the user's repository (a laptop's repository is no remote at all). Incremental:
the sender leaves out what the receiver already holds (its cached commits, named as
the bundle's prerequisites), so the next run of a project sends only new commits, or
nothing when the node has the commit (measured in ``docs/scale.md``).

Why built by hand: ``git bundle create`` takes ref names only (a bare commit id makes
an empty bundle), and a temporary ref in the user's repository is a write there. The
v2 format is a header of prerequisite and ref lines, an empty line, then a pack, which
``git pack-objects --revs`` writes from a commit id directly. Blocking: callers run
these in a thread (supervisor) or in a Ray actor's thread (node).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from lattice_workers.actors._keep import KeepError, git

HEADER = b"# v2 git bundle\n"
#: The ref a bundle names its one commit by (never written in either repository).
BUNDLE_REF = "refs/lattice/bundle"


def has_commit(repo: Path, sha: str) -> bool:
    """Whether ``repo`` holds the commit ``sha`` (and so, its history)."""
    return git(repo, "cat-file", "-e", f"{sha}^{{commit}}", check=False).returncode == 0


def make_bundle(repo: Path, sha: str, exclude: Iterable[str] = ()) -> bytes:
    """A bundle of ``sha`` and its history, minus what the commits ``exclude`` reach
    (those of them that ``repo`` holds become the bundle's prerequisites)."""
    prereqs = [tip for tip in dict.fromkeys(exclude) if tip != sha and has_commit(repo, tip)]
    revs = "".join(f"{line}\n" for line in (sha, *(f"^{tip}" for tip in prereqs)))
    pack = git(
        repo, "pack-objects", "--revs", "--thin", "--stdout", "-q", "--delta-base-offset",
        stdin=revs.encode(),
    ).stdout
    lines = [f"-{tip} prerequisite\n" for tip in prereqs]
    lines.append(f"{sha} {BUNDLE_REF}\n\n")
    return HEADER + "".join(lines).encode() + pack


def bundle_tip(bundle: bytes) -> str:
    """The commit a bundle of :func:`make_bundle` carries; ``KeepError`` if not one."""
    if not bundle.startswith(HEADER):
        raise KeepError("not a git bundle (v2)")
    for line in bundle[len(HEADER) : len(HEADER) + 64 * 1024].split(b"\n"):
        if not line:
            break
        if not line.startswith(b"-"):
            return line.split(b" ", 1)[0].decode()
    raise KeepError("the bundle names no commit")


def receive_bundle(repo: Path, bundle: bytes, ref: str) -> str:
    """Store the bundle's objects in ``repo`` and point ``ref`` at its commit; the commit.

    ``git bundle unbundle`` checks the prerequisites and indexes the (thin) pack; the
    ref is set only once every object is in.
    """
    sha = bundle_tip(bundle)
    with tempfile.NamedTemporaryFile(prefix="lattice-bundle-", suffix=".bundle") as f:
        f.write(bundle)
        f.flush()
        os.fsync(f.fileno())
        git(repo, "bundle", "unbundle", f.name)
    if not has_commit(repo, sha):
        raise KeepError(f"the bundle did not bring commit {sha}")
    git(repo, "update-ref", ref, sha)
    return sha
