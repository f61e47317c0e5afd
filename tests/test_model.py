"""The network, its masked loss, its optimizer step and batch norm in it, checked against hand computations."""
import os

import numpy as np
import pytest

import checkpoints
import config
import data_provider
import model
import tf_setup
import training
from config import EMOTION, GENDER, NUM_CLASSES, SMILE, TASKS

tf = tf_setup.import_tf()
MOMENTUM = 0.9  # model.py's default optimizer: MomentumOptimizer(learning_rate, 0.9, use_nesterov=True)


@pytest.fixture
def net():
    """A freshly initialised model in its own graph and session."""
    graph = tf.Graph()
    with graph.as_default():
        session = tf.Session(graph=graph)
        m = model.Multitask_BKNet(session, verbose=False)
        session.run(tf.global_variables_initializer())
    yield m
    session.close()


def _batch(rng, n, tasks=TASKS, indexes=None):
    """Random images, and one-hot labels each valid for its sample's task (random unless indexes are given)."""
    if indexes is None:
        indexes = rng.choice(tasks, n)
    indexes = np.asarray(indexes, np.float32)
    labels = np.zeros((n, 7), np.float32)
    for i, t in enumerate(indexes):
        labels[i, rng.randint(NUM_CLASSES[int(t)])] = 1
    return rng.uniform(-0.5, 0.5, (n, 48, 48, 1)).astype(np.float32), labels, indexes


def test_block_shapes_print_like_the_handout(capsys):
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as session:
        model.Multitask_BKNet(session, training=False)
    lines = capsys.readouterr().out.splitlines()
    assert lines == ['(?, 24, 24, 32)', '(?, 12, 12, 64)', '(?, 6, 6, 128)', '(?, 3, 3, 256)']


def test_parameter_count(net):
    channels = [1, 32, 32, 64, 64, 128, 128, 256, 256, 256]
    conv = sum(9 * cin * cout + 2 * cout for cin, cout in zip(channels, channels[1:]))  # weights + BN beta/gamma
    head = 2304 * 256 + 2 * 256 + 256 * 256 + 2 * 256
    heads = sum(head + 256 * n + n for n in (2, 7, 2))
    with net.sess.graph.as_default():
        counted = sum(int(np.prod(v.shape.as_list())) for v in tf.trainable_variables())
    assert counted == conv + heads == 3734955


def test_masked_loss_matches_numpy(net):
    rng = np.random.RandomState(0)
    images, labels, indexes = _batch(rng, 12, indexes=[1, 2, 2, 1, 2, 2, 2, 1, 2, 1, 2, 2])  # no gender: loss 0
    logits = {t: rng.normal(0, 2, (12, NUM_CLASSES[t])).astype(np.float32) for t in TASKS}
    feed = {net.input_images: images, net.input_labels: labels, net.input_indexes: indexes}
    feed.update({net.logits[t]: logits[t] for t in TASKS})
    losses, total, decay = net.sess.run([net.task_loss, net.total_loss, net.weight_decay_loss], feed)
    for task in TASKS:
        mask = indexes == task
        z = logits[task][mask]
        log_softmax = z - z.max(1, keepdims=True) - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True))
        expected = -(labels[mask][:, :NUM_CLASSES[task]] * log_softmax).sum(1).sum() / max(mask.sum(), 1)
        assert losses[task] == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert losses[GENDER] == 0.0
    with net.sess.graph.as_default():
        weights = net.sess.run(tf.get_collection(tf.GraphKeys.WEIGHTS))
    assert len(weights) == 9 + 3 * 3  # convolutions and FC layers; no biases or BN parameters
    assert decay == pytest.approx(5e-4 * sum((w.astype(np.float64) ** 2).sum() / 2 for w in weights), rel=1e-4)
    assert total == pytest.approx(sum(losses.values()) + decay, rel=1e-5)


def test_masked_accuracy_counts_only_own_task(net):
    labels = np.zeros((4, 7), np.float32)
    labels[[0, 1, 2, 3], [1, 0, 6, 1]] = 1
    indexes = np.array([1, 1, 2, 3], np.float32)
    logits = {SMILE: np.array([[0, 1], [0, 1], [5, 0], [5, 0]], np.float32),  # right, wrong, (not smile) x2
              EMOTION: np.tile(np.eye(7, dtype=np.float32)[6], (4, 1)),
              GENDER: np.array([[1, 0]] * 4, np.float32)}
    feed = {net.input_labels: labels, net.input_indexes: indexes}
    feed.update({net.logits[t]: logits[t] for t in TASKS})
    correct, count = net.sess.run([net.task_correct, net.task_count], feed)
    assert (correct[SMILE], count[SMILE]) == (1, 2)
    assert (correct[EMOTION], count[EMOTION]) == (1, 1)
    assert (correct[GENDER], count[GENDER]) == (0, 1)


@pytest.mark.parametrize('task', TASKS, ids=[config.TASK_NAMES[t] for t in TASKS])
@pytest.mark.slow
def test_one_task_train_step_changes_other_heads_only_by_weight_decay(net, task):
    """A real train step on a batch of one task: the other heads move only by their weight decay."""
    with net.sess.graph.as_default():  # the fixture's initializer left the momentum slots at zero
        trainable = tf.trainable_variables()
        decayed = {v.name for v in tf.get_collection(tf.GraphKeys.WEIGHTS)}
    groups = {scope: [v for v in trainable if v.name.startswith(scope + '/')]
              for scope in ['trunk'] + ['head_' + config.TASK_NAMES[t] for t in TASKS]}
    # 9 convolutions x (weights, beta, gamma); per head 2 FC x (weights, beta, gamma) + logits weights and biases
    assert {s: len(vs) for s, vs in groups.items()} == {
        'trunk': 27, 'head_smile': 8, 'head_emotion': 8, 'head_gender': 8}
    assert sum(groups.values(), []) == trainable  # every trainable variable is checked below
    trained = 'head_' + config.TASK_NAMES[task]
    assert net.config['optimizer'] == 'momentum'

    images, labels, indexes = _batch(np.random.RandomState(task), 16, tasks=(task,))
    lr = 0.1
    before = net.sess.run(trainable)
    net.sess.run(net.train_op, {net.input_images: images, net.input_labels: labels, net.input_indexes: indexes,
                                net.phase_train: True, net.keep_prob: 0.5, net.learning_rate: lr})
    after = net.sess.run(trainable)

    for var, old, new in zip(trainable, before, after):
        # Nesterov from a zero slot: accum = g, var -= lr * g + lr * momentum * accum; with no loss
        # gradient, g is the weight decay's wd * w (l2_loss is sum(w ** 2) / 2) or 0.
        grad = net.config['weight_decay'] * old.astype(np.float64) if var.name in decayed else 0.0
        decay_only = old - lr * (1 + MOMENTUM) * grad
        if var.name.startswith(trained + '/') or var.name.startswith('trunk/'):
            assert np.abs(new - decay_only).max() > 1e-6, '%s was not trained' % var.name
        elif var.name in decayed:
            # the decay step (lr * 1.9 * wd = 1e-4 of each weight) is 100 times the tolerance
            np.testing.assert_allclose(new, decay_only, rtol=1e-6, atol=0, err_msg=var.name)
            assert not np.allclose(new, old, rtol=1e-5, atol=0), var.name
        else:
            np.testing.assert_array_equal(new, old, err_msg=var.name)


@pytest.mark.slow
def test_batch_norm_trains_statistics_and_infers_per_sample(net):
    images, labels, indexes = _batch(np.random.RandomState(2), 16)
    moving = [v for v in net.model_variables if v.op.name.endswith('moving_mean')]  # not the averages' shadows
    before = net.sess.run(moving)
    net.sess.run(net.train_op, {net.input_images: images, net.input_labels: labels, net.input_indexes: indexes,
                                net.phase_train: True, net.keep_prob: 0.5, net.learning_rate: 0.01})
    after = net.sess.run(moving)
    assert len(moving) == 9 + 6
    assert all(np.abs(a - b).max() > 0 for a, b in zip(after, before))
    first = net.predict(images)
    again = net.predict(images)
    alone = net.predict(images[:1])
    with_others = net.predict(np.concatenate([images[:1], -images[1:] * 3]))
    for task in TASKS:
        np.testing.assert_array_equal(first[task], again[task])
        np.testing.assert_allclose(alone[task][0], with_others[task][0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(first[task].sum(1), 1, rtol=1e-5)


@pytest.mark.slow
def test_small_subset_is_overfitted(demo_dir):
    data = data_provider.Dataset('train', 48, demo_dir, shuffle=False, verbose=False)
    rng = np.random.RandomState(3)
    pick = np.concatenate([rng.choice(np.where(data.indexes == t)[0], 16, replace=False) for t in TASKS])
    images = data_provider.data_utils.normalize(data.images[pick])[..., None]
    labels, indexes = data_provider.one_hot(data.labels[pick]), data.indexes[pick]
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as session:
        net = model.Multitask_BKNet(session, verbose=False)
        session.run(tf.global_variables_initializer())
        feed = {net.input_images: images, net.input_labels: labels, net.input_indexes: indexes}
        for _ in range(60):
            session.run(net.train_op, {**feed, net.phase_train: True, net.keep_prob: 1.0, net.learning_rate: 0.01})
        correct, count = session.run([net.task_correct, net.task_count], feed)
    assert all(correct[t] == count[t] == 16 for t in TASKS), correct


@pytest.mark.slow
def test_trains_and_restores_in_a_session_whose_graph_is_not_the_default(demo_dir, tmp_path):
    """As a notebook cell does it: tf.Session(graph=tf.Graph()) while TF2's eager mode is on around it."""
    assert tf.executing_eagerly()
    ckpt_dir = str(tmp_path)
    session = tf.Session(graph=tf.Graph())
    try:
        model.Multitask_BKNet(session, data_dir=demo_dir, checkpoint_dir=ckpt_dir, batch_size=16, max_steps=2,
                              augment=False, verbose=False).train()
    finally:
        session.close()
    reader = tf.train.NewCheckpointReader(tf.train.latest_checkpoint(ckpt_dir))
    assert reader.get_tensor('global_step') == 2
    session = tf.Session(graph=tf.Graph())
    try:
        trained = model.Multitask_BKNet(session, training=False, verbose=False)
        assert trained.restore(ckpt_dir) == os.path.join(ckpt_dir, 'model.ckpt-2')
        weights = session.run(trained.model_variables[0])
    finally:
        session.close()
    # the moving average of the weights (config ema_decay, on by default) is what inference restores
    average = reader.get_tensor(trained.model_variables[0].op.name + '/ExponentialMovingAverage')
    np.testing.assert_array_equal(weights, average)


@pytest.mark.slow
def test_save_and_restore_into_a_fresh_graph(net, tmp_path):
    images, labels, indexes = _batch(np.random.RandomState(4), 8)
    net.sess.run(net.train_op, {net.input_images: images, net.input_labels: labels, net.input_indexes: indexes,
                                net.phase_train: True, net.keep_prob: 0.5, net.learning_rate: 0.01})
    net.sess.run(net._ema_swap)  # predict with the inference weights: the weights' moving average
    expected = net.predict(images)
    net.sess.run(net._ema_swap)
    with net.sess.graph.as_default():
        prefix = net.saver.save(net.sess, str(tmp_path / 'model.ckpt'))
    checkpoints.save_weights(str(tmp_path / 'weights.npz'), net.inference_weights())
    for source, tolerance in ((prefix, 0), (str(tmp_path / 'weights.npz'), 2e-3)):  # .npz holds float16
        with tf.Graph().as_default() as graph, tf.Session(graph=graph) as session:
            fresh = model.Multitask_BKNet(session, training=False, verbose=False)
            session.run(tf.global_variables_initializer())
            assert fresh.restore(source) == source
            got = fresh.predict(images)
        for task in TASKS:
            np.testing.assert_allclose(got[task], expected[task], atol=tolerance, rtol=0)


def test_a_file_that_is_no_checkpoint_is_named_as_such(tmp_path):
    photo = tmp_path / 'face.jpg'
    photo.write_text('not a checkpoint')
    with pytest.raises(checkpoints.CheckpointError) as err:
        checkpoints.find_weights(str(photo))
    assert str(err.value) == '%s: not a checkpoint (give a run folder, a checkpoint prefix or a weights .npz)' % photo
    index = tmp_path / 'model.ckpt-100.index'
    index.write_bytes(b'')
    with pytest.raises(checkpoints.CheckpointError) as err:
        checkpoints.find_weights(str(index))
    assert str(err.value) == '%s: not a checkpoint (give its prefix, %s)' % (index, tmp_path / 'model.ckpt-100')


def test_restore_errors_are_one_line(net, tmp_path):
    with pytest.raises(checkpoints.CheckpointError, match='no checkpoint or weights.npz'):
        net.restore(str(tmp_path))
    np.savez(str(tmp_path / 'weights.npz'), other=np.zeros(3))
    with pytest.raises(checkpoints.CheckpointError, match='does not match this model'):
        net.restore(str(tmp_path / 'weights.npz'))


@pytest.mark.parametrize('schedule, step, expected', [
    ('step', 0, 0.01), ('step', 399, 0.01), ('step', 400, 0.005), ('step', 800, 0.0025),
    ('cosine', 0, 0.01), ('cosine', 500, 0.005), ('cosine', 1000, 0.0), ('cosine', 2000, 0.0)])
def test_learning_rate_schedules(schedule, step, expected):
    cfg = config.resolve_config(lr_schedule=schedule, epochs=10, lr_decay_epochs=4)
    assert training.learning_rate(cfg, step, steps_per_epoch=100) == pytest.approx(expected, abs=1e-12)


def test_unknown_config_key_is_refused():
    with pytest.raises(ValueError, match='unknown config key'):
        config.resolve_config(learning_rat=0.1)
