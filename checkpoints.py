"""Checkpoints and weights on disk: finding, restoring, saving and cleaning them, and the config.json beside them.

A run folder holds TensorFlow checkpoints model.ckpt-STEP, their config.json (the resolved config
the model is rebuilt from), best/ (the best epoch's checkpoint and best.json) and logs/. The
shipped model, pretrained/, holds weights.npz (float16 inference weights) and config.json.

Public names:
  CONFIG_FILE, CHECKPOINT_NAME, WEIGHTS_FILE, BEST_DIR, PRETRAINED_DIR
  CheckpointError                  a checkpoint or weights file missing or not matching the model (one line)
  find_checkpoints(folder)         checkpoint prefixes newest first, from the files (not the state file)
  find_weights(path)               a folder / prefix / .npz -> the file to restore
  load_config(path)                the resolved config saved beside a checkpoint or weights file
  write_config(folder, cfg)        its config.json (all but the one-command keys such as max_steps)
  default_checkpoint()             pretrained/ when the repo ships a model, else config.DEFAULTS['checkpoint_dir']
  restore(session, variables, path) -> the file read: inference weights, the moving average where one is stored
  save_weights(path, weights, dtype=np.float16)   {name: array} as an .npz, atomically
  resume(session, saver, folder) -> the prefix restored (the newest that restores), or None for a new run;
                                   files of checkpoints whose .index is gone are removed
  save(session, saver, folder, name=CHECKPOINT_NAME) -> the prefix written, at the graph's global step
                                   (CheckpointError in one line on a full disk or an unwritable folder)
  keep_if_best(session, folder, record) -> whether record beat best/ and replaced it (checkpoint and
                                   best.json) in one step
  lock_run(folder) -> the lock file, held while this process trains there (close it to let go)
  forget_run(folder)               remove a run's checkpoints, best/, logs and config (--fresh)
  remove_leftovers(folder)         remove what a save killed half-way left (TensorFlow's temp files, ours),
                                   and put back a best/ whose replacement was killed
"""
import os
import re
import shutil

try:
    import fcntl
except ImportError:  # Windows: runs there are not locked
    fcntl = None

import numpy as np

import config
import data_utils
import files
from tf_setup import tf

CONFIG_FILE = 'config.json'
CHECKPOINT_NAME = 'model.ckpt'
WEIGHTS_FILE = 'weights.npz'
BEST_DIR = 'best'
BEST_FILE = 'best.json'
LOCK_FILE = 'run.lock'  # holds the PID of the process training in the folder
# The shipped model (weights.npz + config.json), found beside this file whatever the working folder.
PRETRAINED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'pretrained')


class CheckpointError(Exception):
    """A checkpoint or weights file that is missing or does not fit the model (one-line message)."""


def _first_line(err):
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


# ----------------------------------------------------------------------------- finding

def _checkpoint_files(folder):
    return sorted(n for n in os.listdir(folder) if n.startswith(CHECKPOINT_NAME + '-')) if os.path.isdir(folder) else []


def find_checkpoints(folder):
    """The checkpoint prefixes in folder, newest (highest step) first, found from their .index files.

    Unlike tf.train.latest_checkpoint this does not trust the `checkpoint` state file, which a
    crash or a careless hand can lose or leave pointing at files that are gone.
    """
    steps = {}
    for name in _checkpoint_files(folder):
        match = re.match(r'%s-(\d+)\.index$' % re.escape(CHECKPOINT_NAME), name)
        if match:
            steps[os.path.join(folder, name[:-len('.index')])] = int(match.group(1))
    return sorted(steps, key=steps.get, reverse=True)


def find_weights(path):
    """Resolve a checkpoint prefix, a folder or a weights .npz to the file to restore."""
    if os.path.isdir(path):
        found = (find_checkpoints(path) or [None])[0]
        if found is None and os.path.isfile(os.path.join(path, WEIGHTS_FILE)):
            found = os.path.join(path, WEIGHTS_FILE)
        if found is None:
            raise CheckpointError('%s: no checkpoint or %s in this folder' % (path, WEIGHTS_FILE))
        return found
    if path.endswith('.npz'):
        if not os.path.isfile(path):
            raise CheckpointError('%s: file not found' % path)
        return path
    if os.path.isfile(path):
        # A checkpoint's prefix names no file of its own (TensorFlow would take any file for an old-format one).
        prefix = re.sub(r'\.(index|meta|data-\d+-of-\d+)$', '', path)
        raise CheckpointError('%s: not a checkpoint (%s)' % (path, 'give its prefix, %s' % prefix if prefix != path else
                                                             'give a run folder, a checkpoint prefix or a weights .npz'))
    if not tf.train.checkpoint_exists(path):
        raise CheckpointError('%s: checkpoint not found' % path)
    return path


def load_config(path):
    """The resolved config saved beside a checkpoint: path is its folder, prefix or weights file."""
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    config_path = os.path.join(folder, CONFIG_FILE)
    if not os.path.isfile(config_path):
        # best/ holds only the best checkpoint; its run's config is one folder up
        parent = os.path.join(os.path.dirname(os.path.abspath(folder)), CONFIG_FILE)
        if os.path.basename(os.path.abspath(folder)) == BEST_DIR and os.path.isfile(parent):
            config_path = parent
        else:
            raise CheckpointError('%s: no %s %s (the model is rebuilt from the config its run saved there)'
                                  % (path, CONFIG_FILE, 'in this folder' if os.path.isdir(path) else 'beside it'))
    try:
        return config.from_saved(files.read_json(config_path))
    except (ValueError, TypeError) as err:
        raise CheckpointError('%s: not a valid config (%s)' % (config_path, err)) from None


def write_config(folder, cfg):
    """folder/config.json: what load_config rebuilds the model from (config.saved_config of cfg)."""
    path = os.path.join(folder, CONFIG_FILE)
    try:
        files.write_json(path, config.saved_config(cfg))
    except OSError as err:  # a full disk, a read-only folder
        raise CheckpointError('%s: cannot write it (%s)' % (path, err.strerror or err)) from None


def default_checkpoint():
    """What evaluate.py, predict.py and export.py read when no --checkpoint is given."""
    return PRETRAINED_DIR if os.path.isdir(PRETRAINED_DIR) else config.DEFAULTS['checkpoint_dir']


# ----------------------------------------------------------------------------- inference weights

def restore(session, variables, path):
    """Load `variables` (a model's weights and batch-norm statistics) from a checkpoint prefix, a folder
    (its newest checkpoint, or its WEIGHTS_FILE) or a weights .npz; -> the file read. A checkpoint that
    holds a moving average of the weights (config ema_decay) gives the average."""
    path = find_weights(path)
    if path.endswith('.npz'):
        _load_npz(session, variables, path)
        return path
    try:
        stored = set(tf.train.load_checkpoint(path).get_variable_to_shape_map())
        naming = tf.train.ExponentialMovingAverage(0.5)  # only for average_name(): the shadows' checkpoint names
        names = {}
        for var in variables:
            average = naming.average_name(var)
            names[average if average in stored else var.op.name] = var
        with session.graph.as_default():
            tf.train.Saver(names).restore(session, path)
    except (tf.errors.OpError, ValueError) as err:
        raise CheckpointError('%s: cannot restore this model from it (%s)' % (path, _first_line(err))) from None
    for var, value in zip(variables, session.run(variables)):
        _check_finite(path, var.op.name, value)
    return path


def _load_npz(session, variables, path):
    try:
        data_utils.check_npz(path)
    except data_utils.DataError as err:
        raise CheckpointError(str(err)) from None
    half = files.unfinished(path)
    if half:
        raise CheckpointError(half + '; export the model again')
    try:
        with np.load(path, allow_pickle=False) as arrays:
            for var in variables:
                var.load(_checked_weight(path, arrays, var.op.name, tuple(var.shape.as_list())), session)
    except CheckpointError:
        raise
    except Exception as err:  # zipfile, zlib and format errors of a truncated or damaged file
        raise CheckpointError('%s: not a readable weights file (%s: %s)'
                              % (path, type(err).__name__, _first_line(err))) from None


def _checked_weight(path, arrays, name, shape):
    if name not in arrays.files:
        raise CheckpointError('%s does not match this model (no %s)' % (path, name))
    value = arrays[name]
    if value.shape != shape:
        raise CheckpointError('%s does not match this model (%s has shape %s, expected %s)'
                              % (path, name, value.shape, shape))
    # Integer weights load fine and then predict at chance, silently.
    if not np.issubdtype(value.dtype, np.floating):
        raise CheckpointError('%s: %s holds %s values, expected floats' % (path, name, value.dtype))
    _check_finite(path, name, value)
    return value.astype(np.float32)


def _check_finite(path, name, value):
    """NaN or infinite weights load fine and then predict at chance (or NaN), silently."""
    if not np.isfinite(value).all():
        raise CheckpointError('%s: %s holds %d NaN or infinite value(s)' % (path, name, int((~np.isfinite(value)).sum())))


def save_weights(path, weights, dtype=np.float16):
    """Write {name: array} to an .npz (float16 by default: half the size), replacing path in one rename."""
    with files.atomic_write(path) as f:
        np.savez_compressed(f, **{name: value.astype(dtype) for name, value in weights.items()})


# ----------------------------------------------------------------------------- training runs

def resume(session, saver, folder):
    """Restore the newest checkpoint in folder that restores, found from the files themselves; -> its
    prefix, or None when the folder holds no checkpoint (a new run).

    A damaged newer checkpoint is skipped (said in one line) and left out of the rotation; a
    folder whose checkpoint files all fail to restore is an error, never a fresh start.
    """
    candidates = find_checkpoints(folder)
    for i, prefix in enumerate(candidates):
        try:
            with session.graph.as_default():
                saver.restore(session, prefix)
        except (tf.errors.OpError, ValueError) as err:
            print('Skipping %s: it does not restore (%s)' % (prefix, _first_line(err)))
            continue
        # Rotate the earlier run's intact checkpoints too (oldest first), and point the state file
        # at the one restored, so evaluate.py finds it even if the file was lost or damaged.
        kept = candidates[i:][::-1]
        saver.recover_last_checkpoints(kept)
        try:
            tf.train.update_checkpoint_state(folder, os.path.basename(prefix), [os.path.basename(p) for p in kept])
        except tf.errors.OpError as err:  # a read-only folder, a full disk
            raise CheckpointError('%s: cannot train in this folder (%s)' % (folder, _first_line(err))) from None
        orphans = _orphans(folder)
        for name in orphans:
            os.remove(os.path.join(folder, name))
        if orphans:
            print('Removed %d file(s) of checkpoints whose .index is gone (they cannot be restored): %s'
                  % (len(orphans), ', '.join(orphans)))
        return prefix
    if candidates or _checkpoint_files(folder):
        raise CheckpointError('%s holds checkpoint files but none restores (newest: %s); use --fresh to start '
                              'over or another --checkpoint-dir' % (folder, (candidates or ['no .index'])[0]))
    best = find_checkpoints(os.path.join(folder, BEST_DIR))
    if best:  # its epoch checkpoints are gone: starting over here would replace best/ without a word
        raise CheckpointError('%s holds only %s, no checkpoint to resume; start from it with --init-from %s in '
                              'another --checkpoint-dir, or use --fresh' % (folder, best[0], os.path.dirname(best[0])))
    return None


def save(session, saver, folder, name=CHECKPOINT_NAME):
    """Save a checkpoint at the graph's global step; -> its prefix. CheckpointError in one line when the
    disk is full or the folder cannot be written: the earlier checkpoints stay as they were."""
    # In the session's graph: with eager execution on (TF2, a notebook), Saver.save reads the
    # global step eagerly unless the graph is the default one, and that fails for a graph tensor.
    try:
        with session.graph.as_default():
            return saver.save(session, os.path.join(folder, name), global_step=tf.train.get_global_step())
    except (tf.errors.OpError, OSError) as err:
        files.remove_leftovers(folder, also=_tensorflow_temp)  # this save's half-written files
        raise CheckpointError('%s: cannot save a checkpoint (%s); the earlier checkpoints are kept'
                              % (folder, _first_line(getattr(err, 'strerror', None) or err))) from None


def keep_if_best(session, folder, record):
    """If record['mean_accuracy'] beats best/'s, make best/ the session's model alone with best.json =
    record; -> whether it did. The new best/ is built beside the old one and replaces it in one
    step (files.replace_folder): a stop at any moment leaves a checkpoint and the best.json describing it."""
    path = os.path.join(folder, BEST_DIR, BEST_FILE)
    if os.path.exists(path) and record['mean_accuracy'] <= files.read_json(path).get('mean_accuracy', -1.0):
        return False
    with session.graph.as_default():
        saver = tf.train.Saver(max_to_keep=1, save_relative_paths=True)  # relative: folders stay movable
    try:
        with files.staging_folder(folder) as tmp:
            built = os.path.join(tmp, BEST_DIR)
            os.makedirs(built)
            save(session, saver, built)
            files.write_json(os.path.join(built, BEST_FILE), record)
            files.replace_folder(built, os.path.join(folder, BEST_DIR))
    except OSError as err:
        raise CheckpointError('%s: cannot save the best checkpoint (%s); the earlier one is kept'
                              % (os.path.join(folder, BEST_DIR), err.strerror or err)) from None
    return True


def lock_run(folder):
    """Lock folder for this process's training run; -> the open lock file (closing it lets go). The OS
    lets go when the process ends, even by kill -9, so no lock outlives its run. CheckpointError naming
    the process when another one holds it: two runs in one folder would write the same step names."""
    lock = open(os.path.join(folder, LOCK_FILE), 'a+')
    if fcntl is None:
        return lock
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip()
        lock.close()
        raise CheckpointError('%s: process %s is training in this folder; wait for it to end or choose another '
                              '--checkpoint-dir' % (folder, holder or '(starting)')) from None
    lock.seek(0)
    lock.truncate()
    lock.write('%d\n' % os.getpid())
    lock.flush()
    return lock


def forget_run(folder):
    """Forget a previous run in folder: its checkpoints, best copy, logs and config."""
    for name in os.listdir(folder):
        if name in ('checkpoint', CONFIG_FILE, BEST_DIR, 'logs') or name.startswith(CHECKPOINT_NAME):
            _remove(os.path.join(folder, name))


def _remove(path):
    shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


def _tensorflow_temp(name):
    """TensorFlow's names for a save under way: the state file's temp copies and a checkpoint's shard folder."""
    return ('.tempstate' in name or name.startswith('checkpoint.tmp') or
            re.match(r'%s-\d+_temp' % re.escape(CHECKPOINT_NAME), name) is not None)


def _orphans(folder):
    """Checkpoint files of a step whose .index is gone: without it they can never be restored."""
    steps = {os.path.basename(p) for p in find_checkpoints(folder)}
    parts = [(n, re.match(r'(.*)\.(meta|data-\d+-of-\d+)$', n)) for n in _checkpoint_files(folder)]
    return [n for n, match in parts if match and match.group(1) not in steps]


def remove_leftovers(folder):
    """Delete what a run killed inside a save leaves in folder and its best/: TensorFlow's temp state
    files and shard folders, and files.atomic_write's temp files."""
    removed = []
    for where in (folder, os.path.join(folder, BEST_DIR)):
        removed += files.remove_leftovers(where, also=_tensorflow_temp)
    if removed:
        print('Removed %d leftover(s) of an interrupted save: %s' % (len(removed), ', '.join(removed)))
