"""Files written safely: whole or not at all (write_atomically), with the permissions an ordinary new file
gets. Checkpoints (checkpoint.py) and the token cache (token_cache.py) both write through here."""

import os
import tempfile
from pathlib import Path


def readable_mode():
    """The permissions an ordinary new file gets here: rw for everyone, less the umask (often 0644)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def fsync_folder(folder):
    """Make a rename inside folder durable (POSIX). Windows cannot open folders; it has nothing to do."""
    if os.name == "nt":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path, write):
    """Call write(file) on a temporary file in path's folder, then rename it to path.

    The rename is atomic, so a crash at any moment (or a reader in another process) sees either the
    old file or the new one, never half a file. The data is fsynced before the rename and the folder
    after it, so this holds after a power cut too.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, readable_mode())  # mkstemp makes it private (0600); the result is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    fsync_folder(path.parent)


REPO = Path(__file__).resolve().parent


def shown_path(path):
    """A path as the learner would type it: relative to where they are, or to the repo, never the machine's own
    folders when it is inside either (messages, model cards and committed pages all say paths this way)."""
    path = Path(str(path)).resolve()
    for base in (Path.cwd(), REPO):
        if path.is_relative_to(base):
            return path.relative_to(base).as_posix()
    return str(path)
