"""Single-task models (config 'tasks') and the learned task weighting, against NumPy and the files."""
import json
import os

import numpy as np
import pytest

import checkpoints
import config
import data_provider
import data_utils
import evaluate
import export
import files
import model
import tf_setup
import train
from config import EMOTION, GENDER, NUM_CLASSES, SMILE, TASKS
from conftest import log_softmax, mixed_batch  # NumPy references shared with the other loss tests

tf = tf_setup.import_tf()


def _xent(logits, labels, rows, task):
    """The mean cross-entropy of task's rows, in float64."""
    k = NUM_CLASSES[task]
    return -(labels[rows, :k] * log_softmax(logits[rows].astype(np.float64))).sum(1).mean()


def test_learned_weighting_loss_and_its_gradient_match_numpy():
    rng = np.random.RandomState(5)
    images, labels, indexes = mixed_batch(rng)
    log_variance = {SMILE: 0.3, EMOTION: -0.5, GENDER: 1.2}
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as session:
        net = model.Multitask_BKNet(session, verbose=False, task_weighting='uncertainty')
        session.run(tf.global_variables_initializer())
        variables = {v.op.name: v for v in tf.global_variables()}
        variables = {t: variables['task_weighting/log_variance_' + config.TASK_NAMES[t]] for t in TASKS}
        for t, value in log_variance.items():
            variables[t].load(value, session)
        grads = tf.gradients(net.total_loss, [variables[t] for t in TASKS])
        feed = {net.input_images: images, net.input_labels: labels, net.input_indexes: indexes}
        logits, total, decay, weights, grad = session.run(
            [net.logits, net.total_loss, net.weight_decay_loss, net.task_weight, grads], feed)
        trainable = [v.op.name for v in tf.trainable_variables()]
    losses = {t: _xent(logits[t], labels, indexes == t, t) for t in TASKS}
    # Kendall et al.'s classification form: (1 / sigma^2) L + log sigma, s = log sigma^2.
    expected = sum(np.exp(-s) * losses[t] + 0.5 * s for t, s in log_variance.items()) + decay
    np.testing.assert_allclose(total, expected, rtol=1e-5)
    for i, t in enumerate(TASKS):
        np.testing.assert_allclose(weights[t], np.exp(-log_variance[t]), rtol=1e-6)
        np.testing.assert_allclose(grad[i], -np.exp(-log_variance[t]) * losses[t] + 0.5, rtol=1e-4)
    assert {'task_weighting/log_variance_' + config.TASK_NAMES[t] for t in TASKS} <= set(trainable)


def test_fixed_weighting_adds_the_heads_losses():
    images, labels, indexes = mixed_batch(np.random.RandomState(6))
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as session:
        net = model.Multitask_BKNet(session, verbose=False)
        session.run(tf.global_variables_initializer())
        logits, total, decay = session.run([net.logits, net.total_loss, net.weight_decay_loss], {
            net.input_images: images, net.input_labels: labels, net.input_indexes: indexes})
        names = [v.op.name for v in tf.global_variables()]
    expected = sum(_xent(logits[t], labels, indexes == t, t) for t in TASKS) + decay
    np.testing.assert_allclose(total, expected, rtol=1e-5)
    assert not [n for n in names if n.startswith('task_weighting')]


def test_a_single_task_model_has_the_trunk_and_one_head():
    images, labels, indexes = mixed_batch(np.random.RandomState(7))
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as session:
        full = model.Multitask_BKNet(session, verbose=False, training=False)
        full_sizes = {v.op.name: v.shape.num_elements() for v in tf.trainable_variables()}
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as session:
        net = model.Multitask_BKNet(session, verbose=False, training=False, tasks=['emotion'])
        session.run(tf.global_variables_initializer())
        sizes = {v.op.name: v.shape.num_elements() for v in tf.trainable_variables()}
        loss, decay, logits = session.run([net.total_loss, net.weight_decay_loss, net.logits], {
            net.input_images: images, net.input_labels: labels, net.input_indexes: indexes})
        probs = net.predict(images)
    assert net.tasks == (EMOTION,) and set(logits) == {EMOTION} and set(probs) == {EMOTION}
    assert sizes == {n: s for n, s in full_sizes.items() if not n.startswith(('head_smile', 'head_gender'))}
    assert full.tasks == TASKS
    # only the emotion rows count: the other tasks' samples in the batch add nothing
    np.testing.assert_allclose(loss, _xent(logits[EMOTION], labels, indexes == EMOTION, EMOTION) + decay, rtol=1e-5)
    np.testing.assert_allclose(probs[EMOTION], np.exp(log_softmax(logits[EMOTION].astype(np.float64))), atol=1e-5)


@pytest.mark.parametrize('overrides, message', [
    (dict(tasks=[]), 'tasks must be a non-empty list'),
    (dict(tasks=['smile', 'smile']), 'distinct'),
    (dict(tasks=['age']), 'tasks must be'),
    (dict(tasks='smile'), 'tasks must be'),
    (dict(tasks=['gender'], task_weights=[1, 1, 0]), 'task_weights gives the tasks trained (gender) no samples'),
    (dict(task_weighting='learned'), 'task_weighting must be one of fixed, uncertainty'),
])
def test_bad_tasks_settings_are_one_line(overrides, message):
    with pytest.raises(ValueError) as err:
        config.resolve_config(**overrides)
    assert message in str(err.value) and '\n' not in str(err.value)


def test_tasks_are_kept_in_task_order():
    assert config.resolve_config(tasks=['gender', 'smile'])['tasks'] == ['smile', 'gender']
    assert config.task_indexes(['gender', 'emotion']) == (EMOTION, GENDER)


def test_a_dataset_of_some_tasks_reads_only_theirs(demo_dir):
    dataset = data_provider.Dataset('public_test', data_dir=demo_dir, tasks=(EMOTION, GENDER), verbose=False)
    expected = [np.load(data_utils.split_path(demo_dir, t, s)) for t, s in ((EMOTION, 'public_test'),
                                                                         (GENDER, 'test'))]
    np.testing.assert_array_equal(dataset.images, np.concatenate([r['image'] for r in expected]))
    np.testing.assert_array_equal(dataset.labels, np.concatenate([r['label'] for r in expected]))
    np.testing.assert_array_equal(dataset.indexes, [EMOTION] * len(expected[0]) + [GENDER] * len(expected[1]))
    train_set = data_provider.Dataset('train', data_dir=demo_dir, tasks=(GENDER,), task_weights=(3, 1, 0.5),
                                      validation_fraction=0.1, verbose=False)
    everything = data_provider.Dataset('train', data_dir=demo_dir, validation_fraction=0.1, verbose=False)
    gender = everything.indexes == GENDER
    np.testing.assert_array_equal(train_set.images, everything.images[gender])  # the same held-out tenth
    assert train_set.epoch_size() == round(0.5 * gender.sum())
    assert set(np.concatenate([b[2] for b in train_set.gen()])) == {GENDER}


@pytest.mark.slow
def test_single_task_training_restoring_evaluating_and_exporting(demo_dir, tmp_path, capsys):
    ckpt_dir = str(tmp_path / 'smile')
    common = ['--data-dir', demo_dir, '--checkpoint-dir', ckpt_dir, '--quiet']
    assert train.main(common + ['--tasks', 'smile', '--epochs', '1', '--batch-size', '64', '--no-augment']) == 0
    saved = files.read_json(os.path.join(ckpt_dir, checkpoints.CONFIG_FILE))
    assert saved['tasks'] == ['smile'] and saved['task_weighting'] == 'fixed'
    names = [n for n, _ in tf.train.list_variables(checkpoints.find_checkpoints(ckpt_dir)[0])]
    assert any(n.startswith('head_smile/') for n in names)
    assert not any(n.startswith(('head_emotion', 'head_gender')) for n in names)

    # resuming cannot grow heads the checkpoint does not have
    capsys.readouterr()
    assert train.main(common + ['--tasks', 'smile', 'gender', '--epochs', '2']) == 2
    err = capsys.readouterr().err.strip()
    assert err == ('error: %s was trained with tasks smile; resuming it cannot change that to smile gender: use '
                   '--fresh or another --checkpoint-dir' % ckpt_dir)

    out = str(tmp_path / 'report')
    assert evaluate.main(['--checkpoint', ckpt_dir, '--out', out]) == 0
    with open(os.path.join(out, evaluate.REPORT_FILE)) as f:
        report = json.load(f)
    assert [(r['task'], r['split']) for r in report['results']] == [('smile', 'test')]
    assert sorted(os.listdir(out)) == [evaluate.REPORT_FILE, 'smile_confusion.png', evaluate.CURVES_FILE]
    test = np.load(data_utils.split_path(demo_dir, SMILE, 'test'))
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as session:
        net, _ = model.load_model(session, ckpt_dir)
        predicted = net.predict(test['image'])[SMILE].argmax(1)
    assert report['results'][0]['plain']['accuracy'] == pytest.approx(np.mean(predicted == test['label']))

    capsys.readouterr()
    assert evaluate.main(['--checkpoint', ckpt_dir, '--tasks', 'smile', 'gender']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ['error: %s has no gender head: it was trained for smile only' % checkpoints.find_checkpoints(ckpt_dir)[0]]

    exported = str(tmp_path / 'exported')
    assert export.main(['--checkpoint', ckpt_dir, '--out', exported]) == 0
    import tensorflow
    serve = tensorflow.saved_model.load(exported).signatures['serving_default']
    outputs = serve(faces=tensorflow.constant(test['image'][:5]))
    assert set(outputs) == {'smile'}
    np.testing.assert_array_equal(outputs['smile'].numpy().argmax(1), predicted[:5])


@pytest.mark.slow
def test_a_single_task_run_can_start_from_the_three_head_model(demo_dir, tmp_path):
    pretrained = checkpoints.PRETRAINED_DIR
    ckpt_dir = str(tmp_path / 'gender')
    assert train.main(['--data-dir', demo_dir, '--checkpoint-dir', ckpt_dir, '--quiet', '--tasks', 'gender',
                       '--init-from', pretrained, '--max-steps', '1', '--lr', '0', '--no-augment']) == 0
    with np.load(os.path.join(pretrained, checkpoints.WEIGHTS_FILE)) as shipped:
        reader = tf.train.load_checkpoint(checkpoints.find_checkpoints(ckpt_dir)[0])
        stored = set(reader.get_variable_to_shape_map())
        for name in shipped.files:
            if name.startswith(('head_smile', 'head_emotion')):
                assert name not in stored
            elif not name.endswith(('moving_mean', 'moving_variance')):  # one training step moves these
                np.testing.assert_array_equal(reader.get_tensor(name), shipped[name].astype(np.float32), err_msg=name)
