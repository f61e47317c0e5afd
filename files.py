"""Writing files so that a crash or Ctrl-C never leaves half of one, and clearing what a killed writer left.

Every writer here builds its output under a hidden name starting with TEMP_PREFIX beside the
target and renames it into place when complete; remove_leftovers clears such names later.

Public names:
  TEMP_PREFIX                      '.tmp-': the start of every temporary file and folder the project writes
  atomic_write(path, mode='wb')    a file object whose content replaces path in one rename when the block ends
  write_json(path, obj), read_json(path)
  staging_folder(parent, prefix)   a hidden folder in parent to build a many-file output in; always removed after
  remove_leftovers(folder, prefix=TEMP_PREFIX, also=None) -> the names removed (files and folders)
"""
import contextlib
import json
import os
import shutil
import tempfile

TEMP_PREFIX = '.tmp-'


@contextlib.contextmanager
def atomic_write(path, mode='wb'):
    """with atomic_write(path) as f: ... -- f writes a temp file beside path that replaces path only
    when the block ends without an error; on an error (or Ctrl-C) the temp file is removed."""
    folder, name = os.path.split(path)
    fd, tmp = tempfile.mkstemp(dir=folder or '.', prefix=TEMP_PREFIX, suffix='-' + name)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes the file private (0600); give it the usual mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_json(path, obj):
    with atomic_write(path, 'w') as f:
        json.dump(obj, f, indent=2, sort_keys=True)


def read_json(path):
    with open(path) as f:
        return json.load(f)


@contextlib.contextmanager
def staging_folder(parent, prefix=TEMP_PREFIX):
    """A new hidden folder in parent (made if missing) for an output of several files, removed when the
    block ends whatever happens: move what it built into place before then."""
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=prefix)
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_leftovers(folder, prefix=TEMP_PREFIX, also=None):
    """Remove the entries of folder whose name starts with prefix (or for which also(name) is true):
    what writers killed half-way left. -> the names removed, sorted."""
    names = sorted(n for n in (os.listdir(folder) if os.path.isdir(folder) else ())
                   if n.startswith(prefix) or (also is not None and also(n)))
    for name in names:
        path = os.path.join(folder, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.remove(path)
    return names
