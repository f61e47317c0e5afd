"""Training end to end: train.py's CLI, resume, interruption, divergence, and a demo run that learns."""
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import config
from config import TASKS
import data_provider
import model

tf = config.import_tf()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_train(*args, **kwargs):
    return subprocess.run([sys.executable, 'train.py'] + list(args), cwd=ROOT, capture_output=True, text=True,
                          timeout=600, **kwargs)


def _progress(ckpt_dir):
    """(global step, [epochs done, steps into the epoch]) of the newest checkpoint."""
    reader = tf.train.NewCheckpointReader(tf.train.latest_checkpoint(ckpt_dir))
    return int(reader.get_tensor('global_step')), reader.get_tensor('progress').tolist()


def test_demo_smoke_run_end_to_end(tmp_path):
    data_dir, ckpt_dir = str(tmp_path / 'data'), str(tmp_path / 'ckpt')
    result = _run_train('--demo', '--data-dir', data_dir, '--checkpoint-dir', ckpt_dir, '--max-steps', '3')
    assert result.returncode == 0, result.stderr
    assert 'Generating the demo data set' in result.stdout
    assert 'Created model with fresh parameters.' in result.stdout
    assert 'Stopped at step 3 (max_steps)' in result.stdout
    assert _progress(ckpt_dir) == (3, [0, 3])
    saved = model.load_config(ckpt_dir)
    assert (saved['data_dir'], saved['batch_size'], saved['max_steps']) == (data_dir, 64, 3)


def test_missing_data_is_one_line_naming_the_file(tmp_path):
    result = _run_train('--data-dir', str(tmp_path / 'nowhere'), '--checkpoint-dir', str(tmp_path / 'ckpt'))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: ')
    assert os.path.join('nowhere', 'smile_data', 'train.npy') in lines[0] and 'prepare_data.py' in lines[0]


def test_flags_set_the_config_they_name():
    import train
    args = train.parse_args(['--epochs', '14', '--lr', '0.02', '--lr-schedule', 'cosine', '--aug-pad', '6',
                             '--task-weights', '3', '1', '0.5', '--optimizer', 'adam', '--no-augment'])
    assert train.config_overrides(args) == dict(epochs=14, learning_rate=0.02, lr_schedule='cosine', aug_pad=6,
                                                task_weights=[3.0, 1.0, 0.5], optimizer='adam', augment=False)
    demo = train.config_overrides(train.parse_args(['--demo', '--epochs', '2']))
    assert demo == dict(data_dir=train.DEMO_DATA_DIR, checkpoint_dir=train.DEMO_CHECKPOINT_DIR, epochs=2,
                        batch_size=train.DEMO_BATCH_SIZE, augment=False)


def _train(demo_dir, ckpt_dir, **overrides):
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as session:
        net = model.Multitask_BKNet(session, data_dir=demo_dir, checkpoint_dir=ckpt_dir, batch_size=64,
                                    verbose=False, **overrides)
        return net.train()


def test_resume_continues_at_the_saved_step(demo_dir, tmp_path, capsys):
    ckpt_dir = str(tmp_path)
    _train(demo_dir, ckpt_dir, max_steps=4, keep_checkpoints=1)
    assert _progress(ckpt_dir) == (4, [0, 4])
    _train(demo_dir, ckpt_dir, max_steps=7, keep_checkpoints=1)
    out = capsys.readouterr().out
    assert 'Reading model parameters from %s' % os.path.join(ckpt_dir, 'model.ckpt-4') in out
    assert _progress(ckpt_dir) == (7, [0, 7])
    assert sorted(f for f in os.listdir(ckpt_dir) if f.endswith('.index')) == ['model.ckpt-7.index']  # 4 rotated out


def test_init_from_starts_a_new_run_from_other_weights(demo_dir, demo_checkpoint, tmp_path, capsys):
    """--init-from copies the weights (not the step or optimizer); resuming that run ignores it."""
    ckpt_dir = str(tmp_path)
    _train(demo_dir, ckpt_dir, init_from=demo_checkpoint, learning_rate=0.0, max_steps=1)
    source = tf.train.NewCheckpointReader(tf.train.latest_checkpoint(demo_checkpoint))
    started = tf.train.NewCheckpointReader(tf.train.latest_checkpoint(ckpt_dir))
    weights = [n for n in source.get_variable_to_shape_map() if n.startswith(('trunk/', 'head_'))
               and n.endswith(('/weights', '/biases', '/beta', '/gamma'))]
    assert len(weights) > 40
    for name in weights:  # a zero learning rate leaves them as they were copied
        np.testing.assert_array_equal(started.get_tensor(name), source.get_tensor(name), err_msg=name)
    assert _progress(ckpt_dir) == (1, [0, 1])
    assert int(source.get_tensor('global_step')) > 1
    assert model.load_config(ckpt_dir)['init_from'] == demo_checkpoint
    _train(demo_dir, ckpt_dir, init_from=demo_checkpoint, max_steps=2)
    out = capsys.readouterr().out
    assert out.count('Initialized model weights from %s' % tf.train.latest_checkpoint(demo_checkpoint)) == 1
    assert 'Reading model parameters from %s' % os.path.join(ckpt_dir, 'model.ckpt-1') in out
    assert _progress(ckpt_dir) == (2, [0, 2])


def test_diverging_loss_stops_without_saving(demo_dir, tmp_path):
    ckpt_dir = str(tmp_path)
    _train(demo_dir, ckpt_dir, max_steps=2)
    with pytest.raises(model.TrainingDiverged, match=r'loss became (nan|inf) at step \d+.*model\.ckpt-2'):
        _train(demo_dir, ckpt_dir, learning_rate=1e30, max_steps=50)
    assert _progress(ckpt_dir) == (2, [0, 2])


def test_sigterm_saves_a_checkpoint_then_exits(demo_dir, tmp_path):
    ckpt_dir = str(tmp_path / 'ckpt')
    proc = subprocess.Popen([sys.executable, '-u', 'train.py', '--data-dir', demo_dir, '--checkpoint-dir', ckpt_dir,
                             '--batch-size', '16', '--quiet'], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:  # wait until training has started
        lines.append(line)
        if line.startswith('Created model'):
            break
    proc.send_signal(signal.SIGTERM)
    out = ''.join(lines) + proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, out
    step, progress = _progress(ckpt_dir)
    assert 'Stopped at step %d (SIGTERM); saved' % step in out
    assert progress == [0, step]


def test_demo_training_beats_chance_on_every_task(demo_dir, demo_checkpoint):
    """The shared demo run (3 epochs) is clearly above chance (0.5, 0.14, 0.5) on held-out faces."""
    test_set = data_provider.Dataset('public_test', 256, demo_dir, verbose=False)
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as session:
        net, _ = model.load_model(session, demo_checkpoint)
        result = net.evaluate(test_set)
    accuracy = {t: result[t]['correct'] / result[t]['count'] for t in TASKS}
    assert accuracy[config.SMILE] > 0.8 and accuracy[config.GENDER] > 0.8, accuracy
    assert accuracy[config.EMOTION] > 0.4, accuracy
    best = os.path.join(demo_checkpoint, 'best', 'best.json')
    assert os.path.isfile(best) and os.path.isfile(os.path.join(demo_checkpoint, 'logs', os.listdir(
        os.path.join(demo_checkpoint, 'logs'))[0]))
    assert np.isclose(model.load_config(demo_checkpoint)['epochs'], 3)
