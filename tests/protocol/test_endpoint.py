"""Where the supervisor listens, and which addresses it refuses."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

from lattice_workers.errors import Code, LatticeError
from lattice_workers.protocol import default_endpoint
from lattice_workers.protocol._endpoint import (
    MAX_IPC_PATH,
    check_tcp_endpoint,
    ipc_path,
    prepare_ipc_folder,
)


def test_default_endpoint_is_a_socket_in_the_boards_runtime_folder(tmp_path: Path) -> None:
    root = tmp_path / "p"
    assert default_endpoint(root) == f"ipc://{tmp_path.resolve()}/p/.lattice/run/supervisor.sock"


def test_default_endpoint_resolves_the_root_so_every_spelling_agrees(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    monkeypatch.chdir(tmp_path)
    assert default_endpoint(Path("link")) == default_endpoint(tmp_path / "real")


def _deep(tmp_path: Path) -> Path:
    return tmp_path / ("d" * 60) / ("e" * 60)


def test_a_root_too_deep_for_a_unix_socket_falls_back_to_xdg_runtime_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A runtime folder as short as a real one (/run/user/<uid>): pytest's own
    # tmp_path can be too long for a socket path (under pytest-xdist, say).
    runtime = Path(tempfile.mkdtemp(prefix="xdg-", dir="/tmp"))
    try:
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
        endpoint = default_endpoint(_deep(tmp_path))
        path = ipc_path(endpoint)
        assert path is not None and len(os.fsencode(path)) <= MAX_IPC_PATH
        assert path.parent.parent == runtime
        assert path.parent.name.startswith(f"lattice-{os.getuid()}-")
        # computed again (as a client would), the answer is the same; another root differs
        assert default_endpoint(_deep(tmp_path)) == endpoint
        assert default_endpoint(_deep(tmp_path) / "other") != endpoint
    finally:
        shutil.rmtree(runtime, ignore_errors=True)


def test_without_xdg_runtime_dir_the_fallback_is_under_tmp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    path = ipc_path(default_endpoint(_deep(tmp_path)))
    assert path is not None and path.parent.parent == Path("/tmp")


def test_prepare_creates_the_folder_with_mode_0700(tmp_path: Path) -> None:
    sock = tmp_path / "run" / "s.sock"
    prepare_ipc_folder(sock)
    assert stat.S_IMODE((tmp_path / "run").stat().st_mode) == 0o700


def test_prepare_tightens_an_existing_folder_to_0700(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir(mode=0o755)
    (tmp_path / "run").chmod(0o755)
    prepare_ipc_folder(tmp_path / "run" / "s.sock")
    assert stat.S_IMODE((tmp_path / "run").stat().st_mode) == 0o700


def test_prepare_refuses_a_symlinked_folder(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "run").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(LatticeError) as info:
        prepare_ipc_folder(tmp_path / "run" / "s.sock")
    assert info.value.code == Code.INVALID_ARGUMENT
    assert str(tmp_path / "run") in info.value.message


def test_prepare_refuses_a_path_too_long_for_a_unix_socket(tmp_path: Path) -> None:
    with pytest.raises(LatticeError, match="longer than"):
        prepare_ipc_folder(_deep(tmp_path) / "s.sock")
    assert not _deep(tmp_path).exists()


def test_ipc_path_is_none_for_tcp_and_abstract_sockets() -> None:
    assert ipc_path("tcp://127.0.0.1:5555") is None
    assert ipc_path("ipc://@abstract") is None
    assert ipc_path("ipc:///x/y.sock") == Path("/x/y.sock")


@pytest.mark.parametrize(
    "endpoint",
    ["tcp://127.0.0.1:5555", "tcp://127.0.0.9:*", "tcp://localhost:1", "tcp://[::1]:5555"],
)
def test_loopback_tcp_is_allowed_without_keys(endpoint: str) -> None:
    check_tcp_endpoint(endpoint, curve=False)


@pytest.mark.parametrize(
    "endpoint", ["tcp://0.0.0.0:5555", "tcp://*:5555", "tcp://10.1.2.3:1", "tcp://example.com:1"]
)
def test_non_loopback_tcp_is_refused_without_curve(endpoint: str) -> None:
    with pytest.raises(LatticeError) as info:
        check_tcp_endpoint(endpoint, curve=False)
    assert info.value.code == Code.INVALID_ARGUMENT
    assert endpoint in info.value.message and "CURVE" in info.value.message
    check_tcp_endpoint(endpoint, curve=True)
