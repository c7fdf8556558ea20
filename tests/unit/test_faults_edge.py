"""The agent's fault edge in isolation: how each failure is classified, the writer's
whole-line guarantee under partial writes and SIGINT, /proc mount options, and the
back-end chosen once.  The real runs are in tests/integration/test_faults_*.py."""

from __future__ import annotations

import errno
import json
import os

import pytest
from sockdebug_agent import backend, faults, namespaces
from sockdebug_agent.errors import EXIT_INTERRUPTED, EXIT_OUTPUT
from sockdebug_agent.inspectors import procfs
from sockdebug_agent.netlink import NetlinkError, ProtocolError
from sockdebug_agent.schema import Warning
from sockdebug_agent.stream import Writer


@pytest.mark.parametrize("exc, code, says", [
    (KeyboardInterrupt(), "interrupted", "SIGINT"),
    (MemoryError(), "resource", "out of memory"),
    (RuntimeError("can't start new thread"), "resource", "thread"),
    (OSError(errno.EMFILE, "Too many open files"), "resource", "RLIMIT_NOFILE"),
    (OSError(errno.ENFILE, "File table overflow"), "resource", "fs.file-max"),
    (OSError(errno.ENOMEM, "Cannot allocate memory"), "resource", "out of memory"),
    (NetlinkError(errno.EBUSY, "busy"), "kernel", "could not be used"),
    (ProtocolError("stray bytes"), "kernel", "stray bytes"),
    (ValueError("bug"), "internal", "ValueError: bug"),
    (OSError(errno.EACCES, "Permission denied"), "internal", "Permission denied"),
])
def test_classify(exc, code, says):
    error = faults.classify(exc)
    assert error.code == code and says in error.message and error.hint
    if isinstance(exc, KeyboardInterrupt):
        assert error.exit_code == EXIT_INTERRUPTED


def test_output_errors_name_the_fault():
    for number, says in ((errno.EPIPE, "broken pipe"), (errno.ENOSPC, "full"), (errno.EBADF, "closed"),
                         (errno.EIO, "cannot write to stdout")):
        error = faults.output_error(OSError(number, os.strerror(number)))
        assert says in error.message and error.exit_code == EXIT_OUTPUT


class _Pipe:
    """os.write that takes at most ``chunk`` bytes a call and can fire SIGINT's handler
    in the middle of a batch, as the kernel and a signal would."""

    def __init__(self, writer: Writer, chunk: int, interrupt_at: int = -1) -> None:
        self.writer, self.chunk, self.interrupt_at, self.calls, self.data = writer, chunk, interrupt_at, 0, b""

    def __call__(self, fd: int, view) -> int:
        self.calls += 1
        if self.calls == self.interrupt_at:
            self.writer.on_sigint(2, None)  # during a batch: must not raise here
        piece = bytes(view[:self.chunk])
        self.data += piece
        return len(piece)


def test_a_sigint_inside_a_batch_waits_for_its_last_byte(monkeypatch):
    out = Writer(fd=99)
    pipe = _Pipe(out, chunk=7, interrupt_at=3)
    monkeypatch.setattr(os, "write", pipe)
    records = [Warning(f"w{i}", "x" * 30) for i in range(5)]
    with pytest.raises(KeyboardInterrupt):
        out.emit_batch(records)
    lines = pipe.data.split(b"\n")
    assert lines[-1] == b"" and len(lines) == 6 and all(json.loads(line) for line in lines[:-1])
    assert out.counts["warning"] == 5 and pipe.calls > 3
    with pytest.raises(KeyboardInterrupt):  # outside a write the handler raises at once
        out.on_sigint(2, None)


def test_a_failed_write_breaks_the_writer_for_good(monkeypatch):
    out = Writer(fd=99)

    def full(fd, view):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "write", full)
    with pytest.raises(Exception) as first:
        out.warning("w", "x")
    with pytest.raises(Exception) as second:
        out.warning("w", "y")
    assert first.value is second.value is out.broken and out.counts["warning"] == 0


def test_reserve_std_fds_fills_a_closed_stdout():
    saved = os.dup(1)
    try:
        os.close(1)
        assert faults.reserve_std_fds() == {1}
        assert os.readlink("/proc/self/fd/1") == os.devnull
    finally:
        os.dup2(saved, 1)
        os.close(saved)


MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
30 22 0:44 / /proc/sys/fs/binfmt_misc rw - binfmt_misc binfmt_misc rw
61 22 0:50 / /proc rw,relatime - proc proc rw,hidepid=invisible,gid=1001
62 1 0:51 / /mnt/with\\040space rw - proc proc rw,hidepid=2
"""


def test_proc_mount_options_take_the_mount_on_top():
    assert procfs.proc_mount_options(MOUNTINFO) == {"rw": "", "hidepid": "invisible", "gid": "1001"}
    assert procfs.proc_mount_options(MOUNTINFO, "/mnt/with space")["hidepid"] == "2"
    assert procfs.proc_mount_options("garbage\n - \n", "/proc") is None


@pytest.mark.parametrize("options, groups, ptrace, hidden", [
    ({"hidepid": "2"}, [65534], False, True),
    ({"hidepid": "ptraceable"}, [65534], False, True),
    ({"hidepid": "1"}, [65534], False, False),  # noaccess: directories listed, fds denied and counted
    ({"hidepid": "2"}, [65534], True, False),  # CAP_SYS_PTRACE sees everything
    ({"hidepid": "2", "gid": "1001"}, [65534, 1001], False, False),
    ({}, [65534], False, False),
])
def test_hidden_reason(options, groups, ptrace, hidden):
    reason = procfs.hidden_reason(options, 65534, groups, ptrace)
    assert (reason is not None) == hidden
    if hidden:
        assert "uid 65534" in reason


def test_long_paths_are_shown_abbreviated_and_escaped():
    assert namespaces.shown("/run/netns/a") == "/run/netns/a"
    long = namespaces.shown("/" + "x" * 5000 + "\udcff")
    assert len(long) < 200 and "characters" in long and long.endswith("\\xff")


def test_the_backend_is_chosen_once_and_refuses_what_it_cannot_serve():
    forced = backend.choose(force_psutil=True)
    assert isinstance(forced, backend.Psutil) and "routes" not in forced.commands and "sockets" in forced.commands
    error = forced.unsupported("routes")
    assert error.exit_code == 2 and "--psutil was given" in error.message and error.hint
    if backend.LINUX:
        native = backend.choose()
        assert isinstance(native, backend.Linux) and set(native.commands) == set(backend.ALL_COMMANDS)
        assert "summary" in forced.commands  # documented: --psutil on Linux still reads netlink for it
