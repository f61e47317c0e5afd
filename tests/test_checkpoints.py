"""Checkpoints are never lost: resume from the files themselves, skip damaged ones, refuse bad weights.

Each test damages a run's folder the way a crash, a full disk or a careless hand would, then checks
that training resumes from the newest checkpoint that restores (said in one line), that nothing
good is overwritten or deleted, and that inference names the bad file in one line.
"""
import json
import os
import shutil

import numpy as np
import pytest

import checkpoints
import config
import model
import tf_setup

tf = tf_setup.import_tf()


def _train(demo_dir, ckpt_dir, **overrides):
    overrides.setdefault('keep_checkpoints', 5)
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as session:
        net = model.Multitask_BKNet(session, data_dir=demo_dir, checkpoint_dir=ckpt_dir, batch_size=64,
                                    augment=False, verbose=False, **overrides)
        net.train()
        return net


def _step(ckpt_dir, prefix=None):
    reader = tf.train.load_checkpoint(prefix or checkpoints.find_checkpoints(ckpt_dir)[0])
    return int(reader.get_tensor('global_step'))


def _contents(folder):
    """Every file's bytes, to prove nothing was changed."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            with open(os.path.join(root, name), 'rb') as f:
                out[os.path.relpath(os.path.join(root, name), folder)] = f.read()
    return out


@pytest.fixture(scope='module')
def two_checkpoints(demo_dir, tmp_path_factory):
    """A run folder holding model.ckpt-3 and model.ckpt-5; tests damage copies of it."""
    ckpt_dir = str(tmp_path_factory.mktemp('run'))
    _train(demo_dir, ckpt_dir, max_steps=3)
    _train(demo_dir, ckpt_dir, max_steps=5)
    assert [os.path.basename(p) for p in checkpoints.find_checkpoints(ckpt_dir)] == ['model.ckpt-5', 'model.ckpt-3']
    return ckpt_dir


@pytest.fixture
def run_dir(two_checkpoints, tmp_path):
    path = str(tmp_path / 'run')
    shutil.copytree(two_checkpoints, path)
    return path


def _damage(path, how):
    with open(path, 'r+b') as f:
        data = bytearray(f.read())
        if how == 'truncate':
            f.seek(0)
            f.truncate(len(data) // 2)
        elif how == 'bitflip':  # one bit in the middle of the tensor data
            f.seek(len(data) // 2)
            f.write(bytes([data[len(data) // 2] ^ 0x10]))
        elif how == 'empty':
            f.truncate(0)


@pytest.mark.parametrize('state', ['missing', 'junk', 'names a step whose files are gone'])
def test_resume_does_not_trust_the_state_file(demo_dir, run_dir, capsys, state):
    state_file = os.path.join(run_dir, 'checkpoint')
    if state == 'missing':
        os.remove(state_file)
    elif state == 'junk':
        with open(state_file, 'wb') as f:
            f.write(b'\x00\xffnot a checkpoint state {{{')
    else:
        with open(state_file, 'w') as f:
            f.write('model_checkpoint_path: "model.ckpt-99"\nall_model_checkpoint_paths: "model.ckpt-99"\n')
    _train(demo_dir, run_dir, max_steps=6)
    out = capsys.readouterr().out
    assert 'Reading model parameters from %s' % os.path.join(run_dir, 'model.ckpt-5') in out
    assert 'fresh parameters' not in out
    assert _step(run_dir) == 6
    for step in (3, 5, 6):  # the older checkpoints are all still there
        assert os.path.isfile(os.path.join(run_dir, 'model.ckpt-%d.index' % step))
    # and the state file is whole again, so TensorFlow's own lookup agrees
    assert tf.train.latest_checkpoint(run_dir) == os.path.join(run_dir, 'model.ckpt-6')


def test_inference_finds_checkpoints_without_the_state_file(run_dir):
    os.remove(os.path.join(run_dir, 'checkpoint'))
    assert checkpoints.find_weights(run_dir) == os.path.join(run_dir, 'model.ckpt-5')
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as session:
        _, path = model.load_model(session, run_dir)
    assert path == os.path.join(run_dir, 'model.ckpt-5')


@pytest.mark.parametrize('part, how', [('data-00000-of-00001', 'truncate'), ('data-00000-of-00001', 'bitflip'),
                                       ('index', 'truncate'), ('index', 'bitflip'), ('index', 'empty'),
                                       ('index', 'missing')])
def test_a_damaged_newest_checkpoint_falls_back_to_the_older_one(demo_dir, run_dir, capsys, part, how):
    newest = os.path.join(run_dir, 'model.ckpt-5.' + part)
    if how == 'missing':
        os.remove(newest)
    else:
        _damage(newest, how)
    older = _contents(run_dir)
    older = {k: v for k, v in older.items() if k.startswith('model.ckpt-3.')}
    _train(demo_dir, run_dir, max_steps=4)
    out = capsys.readouterr().out
    if how != 'missing':  # a checkpoint with no .index is not a checkpoint at all: nothing to skip
        lines = [line for line in out.splitlines() if line.startswith('Skipping')]
        assert len(lines) == 1 and os.path.join(run_dir, 'model.ckpt-5') in lines[0], out
    assert 'Reading model parameters from %s' % os.path.join(run_dir, 'model.ckpt-3') in out
    assert 'fresh parameters' not in out
    assert _step(run_dir, os.path.join(run_dir, 'model.ckpt-4')) == 4
    now = _contents(run_dir)
    for name, data in older.items():  # the good older checkpoint is untouched
        assert now[name] == data, name


def test_inference_names_a_damaged_checkpoint_in_one_line(run_dir):
    _damage(os.path.join(run_dir, 'model.ckpt-5.data-00000-of-00001'), 'truncate')
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as session:
        with pytest.raises(checkpoints.CheckpointError) as err:
            model.load_model(session, run_dir)
    message = str(err.value)
    assert message.startswith(os.path.join(run_dir, 'model.ckpt-5') + ': cannot restore') and '\n' not in message


def test_a_folder_whose_checkpoints_all_fail_is_an_error_not_a_fresh_start(demo_dir, run_dir, capsys):
    for step in (3, 5):
        _damage(os.path.join(run_dir, 'model.ckpt-%d.data-00000-of-00001' % step), 'truncate')
    before = _contents(run_dir)
    with pytest.raises(checkpoints.CheckpointError, match='holds checkpoint files but none restores.*--fresh'):
        _train(demo_dir, run_dir, max_steps=8)
    assert 'fresh parameters' not in capsys.readouterr().out
    assert _contents(run_dir) == before  # nothing overwritten, nothing deleted


def test_data_files_without_an_index_still_block_a_fresh_start(demo_dir, run_dir):
    for step in (3, 5):
        os.remove(os.path.join(run_dir, 'model.ckpt-%d.index' % step))
    with pytest.raises(checkpoints.CheckpointError, match='none restores'):
        _train(demo_dir, run_dir, max_steps=8)
    assert os.path.isfile(os.path.join(run_dir, 'model.ckpt-5.data-00000-of-00001'))


def test_fresh_removes_the_old_run_and_starts_over(demo_dir, run_dir, capsys):
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as session:
        net = model.Multitask_BKNet(session, data_dir=demo_dir, checkpoint_dir=run_dir, batch_size=64,
                                    verbose=False, max_steps=2)
        net.train(fresh=True)
    assert 'Created model with fresh parameters.' in capsys.readouterr().out
    assert [os.path.basename(p) for p in checkpoints.find_checkpoints(run_dir)] == ['model.ckpt-2']


def test_leftovers_of_an_interrupted_save_are_removed(demo_dir, run_dir, capsys):
    leftovers = ['checkpoint.tempstate8213712', 'model.ckpt-7_temp', os.path.join('best', 'checkpoint.tempstate1'),
                 '.tmp-k2j3h4-config.json', os.path.join('best', '.tmp-7q8r9s-best.json')]
    os.makedirs(os.path.join(run_dir, 'best'), exist_ok=True)
    for name in leftovers[:1] + leftovers[2:]:
        open(os.path.join(run_dir, name), 'w').close()
    os.makedirs(os.path.join(run_dir, leftovers[1]))
    open(os.path.join(run_dir, leftovers[1], 'part-00000-of-00001.data-00000-of-00001'), 'w').close()
    _train(demo_dir, run_dir, max_steps=5)  # already there: only the clean-up runs
    assert 'Removed 5 leftover(s) of an interrupted save' in capsys.readouterr().out
    for name in leftovers:
        assert not os.path.exists(os.path.join(run_dir, name))
    assert [os.path.basename(p) for p in checkpoints.find_checkpoints(run_dir)] == ['model.ckpt-5', 'model.ckpt-3']


# ----------------------------------------------------------------------------- weights .npz and config.json

def _inference_net(session):
    return model.Multitask_BKNet(session, training=False, verbose=False)


@pytest.fixture(scope='module')
def weights_npz(demo_checkpoint, tmp_path_factory):
    path = str(tmp_path_factory.mktemp('weights') / checkpoints.WEIGHTS_FILE)
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as session:
        net, _ = model.load_model(session, demo_checkpoint)
        checkpoints.save_weights(path, net.inference_weights())
    return path


def _rewrite_npz(source, path, change):
    with np.load(source) as arrays:
        values = {name: arrays[name] for name in arrays.files}
    name = sorted(values)[0]
    values[name] = change(values[name])
    np.savez(path, **values)
    return name


@pytest.mark.parametrize('fault, expected', [
    ('nan', r'holds 1 NaN or infinite value'),
    ('integer', r'holds int32 values, expected floats'),
    ('truncated', r'not a readable weights file'),
    ('empty', r'empty file \(0 bytes\), not an \.npz archive'),
    ('crc', r'not a readable weights file'),
    ('text', r'not an \.npz archive \(not a zip file'),  # NumPy takes it for a pickle
    ('npy', r'a single \.npy array, not an \.npz archive'),
])
def test_bad_weights_npz_is_one_line_naming_the_file(weights_npz, tmp_path, fault, expected):
    path = str(tmp_path / 'weights.npz')
    if fault == 'nan':
        def set_nan(a):
            a = a.copy()
            a.flat[0] = np.nan
            return a
        _rewrite_npz(weights_npz, path, set_nan)
    elif fault == 'integer':
        _rewrite_npz(weights_npz, path, lambda a: np.zeros(a.shape, np.int32))
    else:
        with open(weights_npz, 'rb') as f:
            data = bytearray(f.read())
        if fault == 'truncated':
            data = data[:len(data) // 2]
        elif fault == 'empty':
            data = b''
        elif fault == 'text':
            data = b'conv1,conv2\n0.1,0.2\n'
        elif fault == 'npy':
            data = bytearray(b'\x93NUMPY') + data
        else:  # one byte of the compressed data changed: the zip CRC no longer matches
            data[len(data) // 3] ^= 0xFF
        with open(path, 'wb') as f:
            f.write(bytes(data))
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as session:
        net = _inference_net(session)
        with pytest.raises(checkpoints.CheckpointError, match=expected) as err:
            net.restore(path)
    assert str(err.value).startswith(path) and '\n' not in str(err.value)
    assert 'pickle' not in str(err.value)  # never advise unpickling a file


@pytest.mark.parametrize('entry, value, expected', [
    ('learning_rate', 'fast', "learning_rate must be a number, got 'fast'"),
    ('optimizer', 'sgd', "optimizer must be one of momentum, adam, got 'sgd'"),
    ('batch_size', 0, 'batch_size must be an integer >= 1, got 0'),
    ('task_weights', [1, 1], 'task_weights must be 3 non-negative numbers'),
])
def test_a_bad_config_json_is_one_line_naming_it(tmp_path, entry, value, expected):
    path = tmp_path / checkpoints.CONFIG_FILE
    path.write_text(json.dumps({entry: value}))
    with pytest.raises(checkpoints.CheckpointError) as err:
        checkpoints.load_config(str(tmp_path))
    assert str(err.value).startswith(str(path)) and expected in str(err.value)


def test_a_missing_config_json_names_what_was_given(tmp_path):
    weights = tmp_path / 'weights.npz'
    np.savez(str(weights), w=np.zeros(1))
    for given, where in ((str(weights), 'beside it'), (str(tmp_path), 'in this folder')):
        with pytest.raises(checkpoints.CheckpointError) as err:
            checkpoints.load_config(given)
        assert str(err.value).startswith(given + ': no config.json ' + where), str(err.value)


def test_a_saved_max_steps_is_ignored(tmp_path):
    (tmp_path / checkpoints.CONFIG_FILE).write_text(json.dumps({'max_steps': 3, 'epochs': 2}))
    cfg = checkpoints.load_config(str(tmp_path))
    assert (cfg['max_steps'], cfg['epochs']) == (0, 2)
    assert 'max_steps' not in config.saved_config(config.resolve_config(max_steps=7))


def test_a_config_from_before_validation_and_the_average_resumes_as_it_was(tmp_path):
    (tmp_path / checkpoints.CONFIG_FILE).write_text(json.dumps({'epochs': 2}))
    cfg = checkpoints.load_config(str(tmp_path))
    assert (cfg['validation_fraction'], cfg['ema_decay']) == (0.0, 0.0)
    assert config.resolve_config()['ema_decay'] == config.DEFAULTS['ema_decay'] > 0  # new runs keep the average


# ----------------------------------------------------------------------------- folders no run may use

def _untrained_checkpoint(folder, poison=None):
    """A checkpoint of a fresh model saved in folder with its config.json (poison: a variable set to NaN)."""
    os.makedirs(folder, exist_ok=True)
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as session:
        net = model.Multitask_BKNet(session, verbose=False, checkpoint_dir=folder, ema_decay=0.0)  # no shadows
        session.run(tf.global_variables_initializer())
        if poison:
            var = next(v for v in net.model_variables if v.op.name == poison)
            value = session.run(var)
            value.flat[0] = np.nan
            var.load(value, session)
        checkpoints.write_config(folder, net.config)
        return checkpoints.save(session, net.saver, folder)


def test_nan_in_a_tensorflow_checkpoint_is_one_line_naming_the_variable(tmp_path):
    prefix = _untrained_checkpoint(str(tmp_path / 'run'), poison='head_emotion/logits/weights')
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as session:
        with pytest.raises(checkpoints.CheckpointError) as info:
            model.load_model(session, str(tmp_path / 'run'))
    assert str(info.value) == '%s: head_emotion/logits/weights holds 1 NaN or infinite value(s)' % prefix


def test_a_folder_holding_only_best_is_refused_not_started_over(tmp_path):
    run = str(tmp_path / 'run')
    best = _untrained_checkpoint(os.path.join(run, checkpoints.BEST_DIR))
    shutil.copy(os.path.join(run, checkpoints.BEST_DIR, checkpoints.CONFIG_FILE), run)
    before = _contents(run)
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as session:
        net = model.Multitask_BKNet(session, verbose=False)
        with pytest.raises(checkpoints.CheckpointError) as info:
            checkpoints.resume(session, net.saver, run)
    assert str(info.value) == ('%s holds only %s, no checkpoint to resume; start from it with --init-from %s in '
                               'another --checkpoint-dir, or use --fresh' % (run, best, os.path.dirname(best)))
    assert _contents(run) == before


def test_the_shipped_models_folder_is_never_trained_in(tmp_path):
    import training
    os.symlink(checkpoints.PRETRAINED_DIR, str(tmp_path / 'link'))
    before = _contents(checkpoints.PRETRAINED_DIR)
    for folder in (checkpoints.PRETRAINED_DIR, str(tmp_path / 'link')):
        with pytest.raises(checkpoints.CheckpointError, match='holds the shipped model and is never trained in'):
            with training.RunFolder(folder):
                pass
    assert _contents(checkpoints.PRETRAINED_DIR) == before


def test_a_checkpoint_dir_that_cannot_be_a_folder_is_one_line(demo_dir, tmp_path, capsys):
    import train
    (tmp_path / 'taken').write_text('a file of mine')
    for folder in (tmp_path / 'taken', tmp_path / 'taken' / 'run'):
        assert train.main(['--data-dir', demo_dir, '--checkpoint-dir', str(folder), '--max-steps', '1', '--quiet']) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith('error: %s: cannot train in this folder (' % folder), err
    assert (tmp_path / 'taken').read_text() == 'a file of mine'


# ----------------------------------------------------------------------------- faults while saving

def test_orphan_files_of_a_checkpoint_whose_index_is_gone_are_removed_on_resume(demo_dir, run_dir, capsys):
    os.remove(os.path.join(run_dir, 'model.ckpt-5.index'))
    _train(demo_dir, run_dir, max_steps=3)  # resumes model.ckpt-3, already there: nothing else runs
    assert ('Removed 2 file(s) of checkpoints whose .index is gone (they cannot be restored): '
            'model.ckpt-5.data-00000-of-00001, model.ckpt-5.meta') in capsys.readouterr().out
    assert not [name for name in os.listdir(run_dir) if name.startswith('model.ckpt-5')]
    assert [os.path.basename(p) for p in checkpoints.find_checkpoints(run_dir)] == ['model.ckpt-3']


def test_a_full_disk_during_a_save_is_one_line_and_keeps_the_earlier_checkpoints(demo_dir, run_dir, capsys,
                                                                                monkeypatch):
    import train
    before = _contents(run_dir)

    def disk_full(self, sess, save_path, *args, **kwargs):  # what TensorFlow leaves and raises on ENOSPC
        open(os.path.join(os.path.dirname(save_path), 'checkpoint.tmp5f1d'), 'w').close()
        raise tf.errors.ResourceExhaustedError(None, None, '%s; No space left on device' % save_path)
    monkeypatch.setattr(tf.train.Saver, 'save', disk_full)
    assert train.main(['--data-dir', demo_dir, '--checkpoint-dir', run_dir, '--max-steps', '7', '--quiet']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ['error: %s: cannot save a checkpoint (%s; No space left on device); the earlier checkpoints are kept'
                   % (run_dir, os.path.join(run_dir, 'model.ckpt'))], err
    after = _contents(run_dir)
    assert {name: after[name] for name in before if name.startswith('model.ckpt')} == {
        name: data for name, data in before.items() if name.startswith('model.ckpt')}
    assert not [name for name in after if name.startswith('checkpoint.tmp')]


def test_a_run_folder_that_cannot_be_written_on_resume_is_one_line(demo_dir, run_dir, capsys, monkeypatch):
    import train

    def read_only(*args, **kwargs):  # what a read-only folder answers (as root, chmod would not stop the test)
        raise tf.errors.PermissionDeniedError(None, None, '%s/checkpoint.tmp1; Read-only file system' % run_dir)
    monkeypatch.setattr(tf.train, 'update_checkpoint_state', read_only)
    assert train.main(['--data-dir', demo_dir, '--checkpoint-dir', run_dir, '--max-steps', '7', '--quiet']) == 2
    assert capsys.readouterr().err == ('error: %s: cannot train in this folder (%s/checkpoint.tmp1; Read-only file '
                                       'system)\n' % (run_dir, run_dir))


def test_best_killed_between_its_two_renames_is_put_back_whole(tmp_path, monkeypatch):
    import files
    run = str(tmp_path / 'run')
    os.makedirs(run)
    best = os.path.join(run, checkpoints.BEST_DIR)
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as session:
        net = model.Multitask_BKNet(session, verbose=False, checkpoint_dir=run, ema_decay=0.0)
        session.run(tf.global_variables_initializer())
        assert checkpoints.keep_if_best(session, run, dict(mean_accuracy=0.5, epoch=1))
        first = _contents(best)
        session.run(net.global_step.assign(7))
        renames = []

        def killed_after_the_first(src, dst):  # the old best/ has moved aside; the new one is not in place
            os.replace(src, dst)
            renames.append(dst)
            raise KeyboardInterrupt
        monkeypatch.setattr(files.os, 'rename', killed_after_the_first)
        with pytest.raises(KeyboardInterrupt):
            checkpoints.keep_if_best(session, run, dict(mean_accuracy=0.9, epoch=2))
        monkeypatch.undo()
    assert renames == [os.path.join(run, '.tmp-old-best')] and not os.path.exists(best)
    checkpoints.remove_leftovers(run)  # what the next run in the folder does first
    assert _contents(best) == first and sorted(os.listdir(run)) == [checkpoints.BEST_DIR]
    assert [os.path.basename(p) for p in checkpoints.find_checkpoints(best)] == ['model.ckpt-0']
    assert json.load(open(os.path.join(best, checkpoints.BEST_FILE)))['mean_accuracy'] == 0.5


def test_a_full_disk_at_start_up_is_one_line_and_leaves_no_folder(demo_dir, tmp_path, capsys, monkeypatch):
    import errno

    import files
    import train

    def disk_full(path, obj):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
    monkeypatch.setattr(files, 'write_json', disk_full)
    run = tmp_path / 'run'
    assert train.main(['--data-dir', demo_dir, '--checkpoint-dir', str(run), '--max-steps', '1', '--quiet']) == 2
    assert capsys.readouterr().err == 'error: %s: cannot write it (No space left on device)\n' % (run / 'config.json')
    assert os.listdir(tmp_path) == []
