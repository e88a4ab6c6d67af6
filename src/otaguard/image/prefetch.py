"""Hash an image's signed bytes in a child process while the CLI is still starting.

Why: ``otaguard verify`` of a large image is bound by SHA-256 (about 1.3 GB/s
here) plus a fixed ~0.1 s of interpreter and library start-up. Forking one
child before the heavy imports lets the payload be hashed on the second core
while the first one imports click and cryptography, so the whole command
costs about what the hash alone costs (bench/RESULTS.md).

Safety: the child only computes a digest of a byte range of a file. The
verifier uses it only for the very file it opened (same device, inode, size,
mtime and ctime: a file rewritten in place may keep the first four, as
``touch -d`` can put its mtime back, but every write moves its ctime and no
system call sets that) and the very range and algorithm its *parsed* header
names; anything else (another file, a guess that was wrong, a failed child)
falls back to hashing in-process. Nothing here decides trust, and the guess of
which argument is the image can only cost speed, never correctness.

This module imports nothing but the standard library (and ``otaguard.image.sniff``,
which does the same), on purpose.
"""

from __future__ import annotations

import os

from otaguard.image import sniff

TYPE_CHECKING = False  # typing costs ~8 ms to import: keep it out of the path to the fork
if TYPE_CHECKING:
    from typing import BinaryIO

#: Below this the fork is not worth it.
MIN_PAYLOAD = 8 << 20
_CHUNK = 1 << 17
#: The running job of this process, if any (set by :func:`start`).
_ACTIVE: list[Job] = []


class _Range:
    # Plain classes, not dataclasses: importing dataclasses before the fork
    # would cost more start-up than this module saves on small images.
    def __init__(self, path: str, offset: int, length: int, algorithm: str) -> None:
        self.path, self.offset, self.length, self.algorithm = path, offset, length, algorithm


class Job:
    def __init__(self, pid: int, read_fd: int) -> None:
        self.pid, self.read_fd, self.done = pid, read_fd, False

    def cancel(self) -> None:
        """Stop the child if its result was never asked for (an error, another path)."""
        if self.done:
            return
        self.done = True
        os.close(self.read_fd)
        try:
            import signal

            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass

    def digest_for(
        self, stream: BinaryIO, offset: int, length: int, algorithm: str
    ) -> bytes | None:
        """The child's digest if it hashed exactly this range of this open file."""
        if self.done:
            return None
        self.done = True
        with os.fdopen(self.read_fd, "rb") as pipe:
            line = pipe.read(512)
        os.waitpid(self.pid, 0)
        try:
            dev, ino, size, mtime, ctime, off, n, alg, hexdigest = line.decode().split()
            st = os.fstat(stream.fileno())
        except (ValueError, OSError, AttributeError):
            return None
        same_file = (int(dev), int(ino), int(size), int(mtime), int(ctime)) == (
            st.st_dev,
            st.st_ino,
            st.st_size,
            st.st_mtime_ns,
            st.st_ctime_ns,
        )
        if same_file and (int(off), int(n), alg) == (offset, length, algorithm):
            return bytes.fromhex(hexdigest)
        return None


def _guess_range(image: str | None) -> _Range | None:
    if image is None:  # not a plain verify: click will parse it; no prefetch then
        return None
    try:
        with open(image, "rb") as handle:
            head = handle.read(sniff.LAYOUT_SIZE)
    except OSError:
        return None
    found = sniff.layout(head)
    if found is None or found.digest_length < MIN_PAYLOAD:
        return None
    # MCUboot names its hash in the TLV area: SHA-256 is what every key type but P-384
    # and pure Ed25519 uses (the verifier asks for this range only when it is SHA-256)
    algorithm = found.digest_algorithm or "sha256"
    return _Range(image, found.digest_offset, found.digest_length, algorithm)


def _child(job: _Range, write_fd: int) -> None:
    import hashlib  # after the fork: its import cost is paid on the other core

    # read, not mapped: mapped file pages count as this process's resident memory and
    # a 4 GiB image would show 4 GiB of it; a read buffer keeps the child at ~20 MiB.
    hasher = hashlib.new(job.algorithm)
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    with open(job.path, "rb", buffering=0) as handle:
        st = os.fstat(handle.fileno())
        handle.seek(job.offset)
        left = job.length
        while left:
            n = handle.readinto(view[: min(left, _CHUNK)])
            if not n:
                return
            hasher.update(view[:n])
            left -= n
    line = (
        f"{st.st_dev} {st.st_ino} {st.st_size} {st.st_mtime_ns} {st.st_ctime_ns} "
        f"{job.offset} {job.length} {job.algorithm} {hasher.hexdigest()}\n"
    )
    os.write(write_fd, line.encode())


def start(image: str | None) -> Job | None:
    """Fork the hashing child for ``otaguard verify IMAGE`` of a large image.

    ``image`` is the IMAGE of a plain verify command line (``verify_args.parse``), or
    ``None`` for anything else.
    """
    job = _guess_range(image)
    if job is None or not hasattr(os, "fork"):
        return None
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: no imports, no atexit handlers, no stdio flushing
        code = 1
        try:
            os.close(read_fd)
            _child(job, write_fd)
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    _ACTIVE[:] = [Job(pid, read_fd)]
    return _ACTIVE[0]


def active() -> Job | None:
    """The job :func:`start` began in this process, if any."""
    return _ACTIVE[0] if _ACTIVE else None
