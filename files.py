"""Writing files so that a crash or Ctrl-C never leaves half of one, and clearing what a killed writer left.

Every writer here builds its output under a hidden name starting with TEMP_PREFIX beside the
target and renames it into place when complete; remove_leftovers clears such names later, but
never one a live process is still writing (each writer holds an OS lock on its temp file or
folder, which the OS lets go when the process ends, even by kill -9). A folder replaced by
replace_folder is kept as OLD_PREFIX + its name until the new one is in place, so a crash between
the two renames loses nothing: remove_leftovers puts it back. Outputs of several files that a
folder rename cannot publish together are listed in a file, UNFINISHED, while they are moved
into place (publishing): readers refuse a file still listed there (unfinished).

Public names:
  TEMP_PREFIX, OLD_PREFIX          '.tmp-' (temporary files and folders), '.tmp-old-' (a replaced folder)
  atomic_write(path, mode='wb')    a file object whose content replaces path in one rename when the block ends
  write_json(path, obj), read_json(path)
  staging_folder(parent, prefix)   a hidden folder in parent to build a many-file output in; always removed after
  replace_folder(built, out)       move the folder built to out, replacing out without a moment with neither
  remove_leftovers(folder, prefix=TEMP_PREFIX, also=None) -> the names removed (files and folders)
  UNFINISHED                       '.unfinished.json': the files a publishing block has not finished
  publishing(folder, paths)        a block that moves a set of files into place, listed in UNFINISHED meanwhile
  unfinished(path, folder=None) -> None, or one line: path belongs to a set published half-way
"""
import contextlib
import json
import os
import shutil
import tempfile

try:
    import fcntl
except ImportError:  # Windows: temp files are not locked, and a clean-up may take a live one
    fcntl = None

TEMP_PREFIX = '.tmp-'
OLD_PREFIX = TEMP_PREFIX + 'old-'  # in our namespace: no user's folder is ever taken for one
UNFINISHED = '.unfinished.json'


def _hold(fd):
    """Mark fd's file or folder as this process's: remove_leftovers leaves it alone while we live."""
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX)


def _held_by_another_process(path):
    if fcntl is None:
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path, mode='wb'):
    """with atomic_write(path) as f: ... -- f writes a temp file beside path that replaces path only
    when the block ends without an error; on an error (or Ctrl-C) the temp file is removed."""
    folder, name = os.path.split(path)
    fd, tmp = tempfile.mkstemp(dir=folder or '.', prefix=TEMP_PREFIX, suffix='-' + name)
    try:
        _hold(fd)
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes the file private (0600); give it the usual mode
            os.replace(tmp, path)  # before the file closes: its lock keeps a clean-up away until then
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
    fd = os.open(tmp, os.O_RDONLY)
    try:
        _hold(fd)
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        os.close(fd)


def replace_folder(built, out):
    """Rename the folder built to out. An earlier out is first renamed to OLD_PREFIX + its name and
    removed only once built is in place: killed between the two renames, the old folder is still
    there, and remove_leftovers (which every writer runs first) renames it back."""
    parent, name = os.path.split(os.path.abspath(out))
    old = os.path.join(parent, OLD_PREFIX + name)
    _recover(parent, OLD_PREFIX + name)
    if not os.path.exists(out):
        os.rename(built, out)
        return
    fd = os.open(out, os.O_RDONLY)  # the lock moves with the folder: no clean-up restores it under us
    try:
        _hold(fd)
        os.rename(out, old)
        try:
            os.rename(built, out)
        except BaseException:  # an error or Ctrl-C, not a kill: put the old folder back at once
            os.rename(old, out)
            raise
    finally:
        os.close(fd)
    shutil.rmtree(old, ignore_errors=True)


def _recover(folder, name):
    """An OLD_PREFIX folder: put it back (saying so) if its replacement never arrived, else remove it;
    -> True if it removed it (a live process replacing it right now is left alone)."""
    old = os.path.join(folder, name)
    if not os.path.exists(old) or _held_by_another_process(old):
        return False
    out = os.path.join(folder, name[len(OLD_PREFIX):])
    if os.path.exists(out):
        shutil.rmtree(old, ignore_errors=True)
        return True
    os.rename(old, out)
    print('put back %s from %s: the run replacing it was stopped before the new one was in place' % (out, old))
    return False


def remove_leftovers(folder, prefix=TEMP_PREFIX, also=None):
    """Remove the entries of folder whose name starts with prefix (or for which also(name) is true) and
    that no live process holds: what writers killed half-way left. A folder replace_folder was killed
    inside is finished: the old folder is put back (one line) if the new one is missing, else removed.
    -> the names removed, sorted."""
    names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    done = [n for n in names if n.startswith(OLD_PREFIX) and _recover(folder, n)]
    for name in names:
        path = os.path.join(folder, name)
        ours = not name.startswith(OLD_PREFIX) and (name.startswith(prefix) or (also is not None and also(name)))
        if not ours or _held_by_another_process(path):
            continue
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.exists(path):
            os.remove(path)
        done.append(name)
    return sorted(done)


@contextlib.contextmanager
def publishing(folder, paths):
    """with publishing(folder, paths): move files that belong together into place (paths: inside folder).
    They are first listed in folder/UNFINISHED and taken off only when the block ends without an
    error: killed or failing half-way, the set stays listed, and readers that call unfinished() refuse
    its files instead of taking old and new ones for one set. A later publish of the same files
    finishes it."""
    mark = os.path.join(folder, UNFINISHED)
    names = {os.path.relpath(p, folder) for p in paths}
    earlier = set(_listed(mark))
    write_json(mark, sorted(earlier | names))
    yield
    if earlier - names:
        write_json(mark, sorted(earlier - names))
    else:
        os.remove(mark)


def _listed(mark):
    try:
        listed = read_json(mark)
    except (OSError, ValueError):
        return []
    return [n for n in listed if isinstance(n, str)] if isinstance(listed, list) else []


def unfinished(path, folder=None):
    """One line saying path belongs to a set whose publishing stopped half-way (see publishing), or None.
    folder: where the set's list is kept (default: path's own folder)."""
    folder = os.path.dirname(path) if folder is None else folder
    if os.path.relpath(path, folder) not in _listed(os.path.join(folder, UNFINISHED)):
        return None
    return ('%s: the run that was replacing it and the files written with it stopped half-way (listed in %s), '
            'so it may not match them' % (path, os.path.join(folder, UNFINISHED)))
