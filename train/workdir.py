"""A run directory's lifecycle: its identity, its lock, and how failures reach the CLI.

* **Identity.** A run *is* its resolved config (``config.json``'s ``"config"``). A workdir may
  only be continued by the same config up to :data:`RESUMABLE_FIELDS` (e.g. more ``steps``);
  :func:`config_difference` names what differs, as dotted fields with old and new values.
* **Lock.** A trainer holds an exclusive ``fcntl.flock`` on ``WORKDIR/.lock`` for its whole
  life (:class:`WorkdirLock`); the kernel drops it when the process dies, so nothing is stale.
  The sweep launcher takes the same lock and hands the locked descriptor to its trainer
  (``ATTNLAB_LOCK_FD``), so a run is never trained twice at once even if a launcher is killed.
* **Exit codes** (:data:`EXIT_CODES`) and one-line messages for I/O errors
  (:func:`io_error_message`): an ``OSError`` (or a library error carrying one, e.g. a
  tensorstore ``RESOURCE_EXHAUSTED ... No space left on device``) becomes one line naming the
  file and the fix.

Pure Python (no JAX), so the sweep launcher can use it cheaply.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re

EXIT_OK = 0
EXIT_FAILED = 1        # the run failed (diverged, no intact checkpoint, a sweep run failed)
EXIT_CONFIG = 2        # bad config or usage; workdir holds another run or is locked
EXIT_IO = 74           # EX_IOERR: disk full, read-only or unwritable workdir
EXIT_PREEMPTED = 75    # EX_TEMPFAIL: stopped by SIGTERM after saving; rerun to resume

EXIT_CODES = {
    EXIT_OK: "finished (or already finished)",
    EXIT_FAILED: "failed: diverged, no intact checkpoint, or a sweep run failed",
    EXIT_CONFIG: "config/usage error, workdir holds a different run, or workdir locked",
    EXIT_IO: "I/O error: disk full, read-only or permission denied",
    EXIT_PREEMPTED: "preempted (SIGTERM): checkpoint saved, rerun the same command to resume",
}

# Fields that may change when a run is continued in the same workdir.
RESUMABLE_FIELDS = ("steps", "log_every", "eval_every", "checkpoint")

LOCK_NAME = ".lock"
LOCK_FD_ENV = "ATTNLAB_LOCK_FD"


class WorkdirBusy(RuntimeError):
  """Another process holds the workdir's lock."""


_EARLY_SIGTERM = {"received": False}


def note_early_sigterm(*_) -> None:
  """Signal handler for start-up: remember a SIGTERM for the training loop to act on.

  It only sets a flag: an exception raised from a signal handler can land inside library code
  that catches it (JAX's compilation cache turns it into a warning) and be lost.
  """
  _EARLY_SIGTERM["received"] = True


def early_sigterm_received() -> bool:
  """Whether SIGTERM arrived during start-up (the loop then saves and exits 75 at once)."""
  return _EARLY_SIGTERM["received"]


class StateError(RuntimeError):
  """A run's files on disk cannot be used (e.g. no intact checkpoint); one line for the CLI."""


# -- identity --------------------------------------------------------------------------------


def normalize(config) -> dict:
  """A config as JSON reads it back (tuples become lists), for comparisons."""
  return json.loads(json.dumps(dict(config)))


def _flatten(tree, prefix=""):
  out = {}
  for k, v in tree.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict) and v:
      out.update(_flatten(v, key + "."))
    else:
      out[key] = v
  return out


def config_difference(old: dict, new: dict, *, resumable: bool = False) -> list[str]:
  """``["optimizer.lr: 0.003 -> 0.01", ...]``: the dotted fields where ``old`` and ``new``
  differ. ``resumable`` False skips :data:`RESUMABLE_FIELDS` (the run's identity); True lists
  only those."""
  a, b = _flatten(normalize(old)), _flatten(normalize(new))
  out = []
  for key in sorted(set(a) | set(b)):
    if (key.split(".")[0] in RESUMABLE_FIELDS) != resumable:
      continue
    if a.get(key, "<unset>") != b.get(key, "<unset>"):
      out.append(f"{key}: {a.get(key, '<unset>')!r} -> {b.get(key, '<unset>')!r}")
  return out


def read_config(workdir: str) -> dict | None:
  """The ``"config"`` of ``workdir/config.json``; None if there is none.

  Raises:
    StateError: config.json exists but is not valid JSON.
  """
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      return json.load(f).get("config", {})
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise StateError(f"{path} is damaged ({e}); move it away to start this run again") from None


def write_json_atomic(path: str, obj) -> None:
  """Write ``obj`` to ``path`` via a temporary file and a rename (never half-written)."""
  tmp = f"{path}.tmp{os.getpid()}"
  try:
    with open(tmp, "w") as f:
      json.dump(obj, f, indent=2, sort_keys=True)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


# -- lock ------------------------------------------------------------------------------------


def _holder(path: str) -> str:
  try:
    with open(path) as f:
      return f.read().strip() or "another process"
  except OSError:
    return "another process"


class WorkdirLock:
  """Exclusive, non-blocking ``fcntl.flock`` on ``workdir/.lock`` (the file records
  ``host pid``). Released on :meth:`release` or when the process dies.

  If ``ATTNLAB_LOCK_FD`` names an inherited descriptor open on this very lock file (the sweep
  launcher passes its locked one), that descriptor is used: the lock is already ours.
  """

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.path = os.path.join(workdir, LOCK_NAME)
    self.fd = None
    self.inherited = False

  def _inherited(self):
    text = os.environ.get(LOCK_FD_ENV)
    if not text:
      return None
    try:
      fd = int(text)
      st, mine = os.fstat(fd), os.stat(self.path)
    except (ValueError, OSError):
      return None
    if (st.st_dev, st.st_ino) != (mine.st_dev, mine.st_ino):
      return None
    os.environ.pop(LOCK_FD_ENV, None)  # not for our own children
    return fd

  def try_acquire(self) -> bool:
    """True if this process now holds the lock, False if another one does."""
    fd = self._inherited()
    self.inherited = fd is not None
    if fd is None:
      fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      os.close(fd)
      return False
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.uname().nodename} pid {os.getpid()}\n".encode(), 0)
    self.fd = fd
    return True

  def acquire(self) -> "WorkdirLock":
    """Take the lock or raise :class:`WorkdirBusy` naming its holder."""
    if not self.try_acquire():
      raise WorkdirBusy(f"workdir {self.workdir!r} is in use by {_holder(self.path)} "
                        f"(lock {self.path}); wait for it to finish or stop it first")
    return self

  def release(self) -> None:
    if self.fd is not None:
      try:
        if not self.inherited:  # an inherited lock stays with the launcher that passed it
          fcntl.flock(self.fd, fcntl.LOCK_UN)
      finally:
        os.close(self.fd)
        self.fd = None

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()
    return False


# -- I/O errors ------------------------------------------------------------------------------

# Text that libraries (tensorstore, orbax) put in errors that wrap an OS error.
_ERRNO_TEXT = {
    errno.ENOSPC: ("No space left on device", "os_error_code='28'"),
    errno.EDQUOT: ("Disk quota exceeded", "os_error_code='122'"),
    errno.EROFS: ("Read-only file system", "os_error_code='30'"),
    errno.EACCES: ("Permission denied", "os_error_code='13'"),
    errno.EPERM: ("Operation not permitted",),
}
_FIX = {
    errno.ENOSPC: "disk full: free space there (or use a --workdir on a larger disk) and rerun "
                  "the same command; training resumes from the last intact checkpoint",
    errno.EDQUOT: "disk quota exceeded: free space there (or use another --workdir) and rerun "
                  "the same command; training resumes from the last intact checkpoint",
    errno.EROFS: "the file system is read-only: use a writable --workdir",
    errno.EACCES: "permission denied: make the workdir writable or use another --workdir",
    errno.EPERM: "not permitted: make the workdir writable or use another --workdir",
}
_QUOTED_PATH = re.compile(r'"(/[^"]+)"')


def _chain(exc):
  seen = set()
  while exc is not None and id(exc) not in seen:
    seen.add(id(exc))
    yield exc
    for sub in getattr(exc, "exceptions", ()) or ():  # ExceptionGroup
      yield from _chain(sub)
    exc = exc.__cause__ or exc.__context__


def io_errno_of_text(text: str) -> int | None:
  for code, marks in _ERRNO_TEXT.items():
    if any(m in text for m in marks):
      return code
  return None


def io_error(exc: BaseException) -> tuple[int, str | None] | None:
  """``(errno, filename)`` if ``exc`` (or an exception it was raised from) is an I/O error
  of :data:`_FIX`'s kinds, else None."""
  for e in _chain(exc):
    if isinstance(e, OSError) and e.errno in _FIX:
      return e.errno, e.filename
  for e in _chain(exc):
    code = io_errno_of_text(str(e))
    if code is not None:
      paths = _QUOTED_PATH.findall(str(e))
      return code, (paths[-1] if paths else None)
  return None


def io_error_message(exc: BaseException, workdir: str | None = None) -> str | None:
  """One line for an I/O error (None if ``exc`` is not one)."""
  found = io_error(exc)
  if found is None:
    return None
  code, filename = found
  where = filename or workdir or "the workdir"
  return f"{where}: {os.strerror(code)} ({_FIX[code]})"
