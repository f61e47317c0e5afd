"""Shared fixtures: the repo root on sys.path, a demo data set, the shared real archives, and Ctrl-C at a chosen moment.

Tests that train, start a TensorFlow subprocess or restore a trained model are marked slow (the fast
tier is `python -m pytest -q -m "not slow"`); a test that uses a fixture of SLOW_FIXTURES is marked
slow here, whatever it does itself.

The real-data tests skip when ../shared/data lacks an archive, except under CI (CI=true), where
they fail: there the archives must be present (require_shared_data, running_in_ci).
"""
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

SHARED_DATA = os.path.normpath(os.path.join(ROOT, '..', 'shared', 'data'))
SHARED_ARCHIVES = ('genki4k.npz', 'fer2013.npz', 'gender.npz')
SLOW_FIXTURES = {'demo_checkpoint', 'two_checkpoints'}  # they train a model


def pytest_collection_modifyitems(items):
    for item in items:
        if SLOW_FIXTURES.intersection(item.fixturenames):
            item.add_marker(pytest.mark.slow)


def handout_all_data_cell(data_dir, data_type, expected):
    """The handout's first check cell as it is written, with the expected count passed in."""
    import numpy as np

    import data_provider
    dataset = data_provider.Dataset(data_type=data_type, batch_size=64, data_dir=data_dir)

    assert len(dataset.all_data) == expected
    for i in range(len(dataset.all_data)):
        label = np.squeeze(np.array(dataset.all_data[i][1]))
        index = dataset.all_data[i][2]
        assert np.sum(label) == 1
        assert index == 1.0 or index == 2.0 or index == 3.0
        assert label.shape == (7,)


@pytest.fixture(scope='session')
def demo_dir(tmp_path_factory):
    """A demo data set (prepare_data.make_demo, seed 0) in a session-wide temp folder; read it only."""
    import prepare_data
    path = str(tmp_path_factory.mktemp('demo') / 'data')
    prepare_data.make_demo(path, seed=0)
    return path


def log_softmax(z):
    """Row-wise log softmax in NumPy: the reference the loss tests compare TensorFlow's with."""
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def mixed_batch(rng, n=24):
    """A batch of random faces cycling through the three tasks, with random one-hot labels of each task's classes."""
    import config
    indexes = np.array(list(config.TASKS) * (n // len(config.TASKS)), np.float32)
    labels = np.zeros((n, config.LABEL_WIDTH), np.float32)
    labels[np.arange(n), [rng.randint(config.NUM_CLASSES[int(t)]) for t in indexes]] = 1.0
    images = rng.uniform(-0.5, 0.5, (n, config.IMAGE_SIZE, config.IMAGE_SIZE, 1)).astype(np.float32)
    return images, labels, indexes


def running_in_ci(environ):
    """True when CI is set to anything but '', '0' or 'false' (CI services set CI=true)."""
    return environ.get('CI', '').strip().lower() not in ('', '0', 'false')


def require_shared_data(folder, environ):
    """Return folder if it holds every real archive; else fail in CI (where it must be there), skip elsewhere."""
    missing = [n for n in SHARED_ARCHIVES if not os.path.isfile(os.path.join(folder, n))]
    if not missing:
        return folder
    reason = ('real data archives not found: %s missing from %s (they are never in the repo; see '
              'PROVENANCE.md of the shared data folder)' % (', '.join(missing), folder))
    if running_in_ci(environ):
        pytest.fail('CI is set, so the real-data tests must run: ' + reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope='session')
def shared_data_dir():
    """The folder of the real archives (../shared/data beside the repo); fails under CI and skips
    elsewhere when one is missing."""
    return require_shared_data(SHARED_DATA, os.environ)


@pytest.fixture(scope='session')
def real_data_dir(shared_data_dir, tmp_path_factory):
    """The three real archives imported once into the practice's layout (a temp folder) -> its path."""
    import contextlib
    import io

    import prepare_data
    data_dir = str(tmp_path_factory.mktemp('real') / 'data')
    with contextlib.redirect_stdout(io.StringIO()):
        for task, archive in (('smile', 'genki4k.npz'), ('emotion', 'fer2013.npz'), ('gender', 'gender.npz')):
            prepare_data.import_npz(os.path.join(shared_data_dir, archive), prepare_data.TASK_BY_NAME[task], data_dir)
    return data_dir


@pytest.fixture(scope='session')
def demo_checkpoint(demo_dir, tmp_path_factory):
    """A model trained on the demo data (3 epochs of batch 64 like train.py --demo, ~1 min); returns its folder.

    Training on the demo set is what `python train.py --demo` does; tests of evaluation,
    prediction and export share this one run.
    """
    import model
    import tf_setup
    tf = tf_setup.import_tf()
    ckpt_dir = str(tmp_path_factory.mktemp('demo_ckpt'))
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as session:
        net = model.Multitask_BKNet(session, data_dir=demo_dir, checkpoint_dir=ckpt_dir, epochs=3,
                                    batch_size=64, augment=False, verbose=False)
        net.train()
    return ckpt_dir


# Runs a script as `python script args` with SIGINT sent to it at a chosen moment: when the script
# first imports a module ('import cv2'), or as soon as a call of module.function returns
# ('data_utils:save_split'; only calls the script makes through that module's attribute).
INTERRUPT = """
import importlib, os, runpy, signal, sys
script, when = sys.argv[1:3]
sys.argv = [script] + sys.argv[3:]

def interrupt():
    os.kill(os.getpid(), signal.SIGINT)

if when.startswith('import '):
    class Trigger(object):
        def find_spec(self, name, path=None, target=None):
            if name == when[len('import '):]:
                sys.meta_path.remove(self)
                interrupt()
    sys.meta_path.insert(0, Trigger())
else:
    module, name = when.split(':')
    module = importlib.import_module(module)
    real = getattr(module, name)

    def interrupted_after(*args, **kwargs):
        result = real(*args, **kwargs)
        interrupt()
        return result
    setattr(module, name, interrupted_after)
runpy.run_path(script, run_name='__main__')
"""


def run_interrupted(script, when, *args, timeout=180):
    """-> CompletedProcess of script run from the repo root and sent SIGINT at `when` (see INTERRUPT)."""
    return subprocess.run([sys.executable, '-c', INTERRUPT, script, when] + [str(a) for a in args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)


# Runs `python script args` and kills it with SIGKILL (no clean-up runs, as when the power goes)
# right after its Nth call of os.replace or os.rename; with 'final', only calls that move a file to
# its final place count (not into a hidden name or a hidden temp folder): a many-file output half published.
KILL = """
import os, runpy, signal, sys
script, function, n, which = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
sys.argv = [script] + sys.argv[5:]
real, calls = getattr(os, function), []

def killed_after(src, dst, *args, **kwargs):
    result = real(src, dst, *args, **kwargs)
    hidden = os.path.basename(dst).startswith('.') or '/.tmp-' in os.path.abspath(dst)
    calls.extend([dst] if which == 'any' or not hidden else [])
    if len(calls) == n:
        os.kill(os.getpid(), signal.SIGKILL)
    return result
setattr(os, function, killed_after)
runpy.run_path(script, run_name='__main__')
"""


def run_killed(script, function, n, which, *args, timeout=180):
    """-> CompletedProcess of script killed by SIGKILL right after its nth os.<function> call (see KILL)."""
    result = subprocess.run([sys.executable, '-c', KILL, script, function, str(n), which] + [str(a) for a in args],
                            cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == -9, (result.returncode, result.stderr[-2000:])
    return result


def assert_interrupted(result):
    """Exit code 130 and the one line 'interrupted' last on stderr (TensorFlow may log before it), no traceback."""
    assert result.returncode == 130, result.stderr
    assert result.stderr.splitlines()[-1] == 'interrupted' and 'Traceback' not in result.stderr, result.stderr


# ----------------------------------------------------------------------------- prepare_data's tests
# Shared by test_prepare_data.py and test_import_folders.py.

def npy_files(folder):
    """Every .npy file under folder, hidden temp files included."""
    return sorted(os.path.relpath(os.path.join(d, f), folder)
                  for d, _, files in os.walk(folder) for f in files if f.endswith('.npy'))


def read_split(data_dir, task, split):
    """A split file of the layout -> (images, labels)."""
    import data_utils
    records = np.load(data_utils.split_path(str(data_dir), task, split))
    return records['image'], records['label']


def run_prepare_data(argv, capsys):
    """prepare_data.main in-process -> (exit code, stdout, stderr)."""
    import prepare_data
    code = prepare_data.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_refused(argv, out_dir, capsys, *fragments):
    """The CLI stops with exit code 2, one 'error:' line holding every fragment, and writes nothing."""
    code, _, err = run_prepare_data(list(argv) + ['--data-dir', out_dir], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert 'Traceback' not in err
    assert not os.path.exists(str(out_dir)) or npy_files(str(out_dir)) == []
    return lines[0]


def smile_npz(path, **override):
    """A valid smile archive of 4 faces (2 train, 2 test), with any array replaced by override."""
    arrays = dict(images=np.arange(4 * 48 * 48).reshape(4, 48, 48).astype(np.uint8), labels=np.array([0, 1, 1, 0]),
                  split=np.array([0, 0, 1, 1]), split_names=np.array(['train', 'test']))
    arrays.update(override)
    np.savez(str(path), **arrays)
    return str(path)
