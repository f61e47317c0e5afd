"""The recipe's options against NumPy: emotion label smoothing, gender class weights, soft (distilled) targets,
the weights' moving average; bfloat16 training against float32."""
import os
import shutil

import numpy as np
import pytest

import checkpoints
import config
import data_provider
import data_utils
import files
import model
import tf_setup
import training
from config import EMOTION, GENDER, NUM_CLASSES, TASKS
from conftest import log_softmax, mixed_batch  # NumPy references shared with the other loss tests

tf = tf_setup.import_tf()


def test_smoothed_emotion_and_weighted_gender_losses_match_numpy():
    rng = np.random.RandomState(3)
    images, labels, indexes = mixed_batch(rng)
    eps, gender_weights = 0.2, np.array([2.5, 0.4], np.float32)
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as session:
        net = model.Multitask_BKNet(session, verbose=False, label_smoothing=eps)
        session.run(tf.global_variables_initializer())
        logits, losses = session.run([net.logits, net.task_loss], {
            net.input_images: images, net.input_labels: labels, net.input_indexes: indexes,
            net.class_weights[GENDER]: gender_weights})
    for task in TASKS:
        rows = indexes == task
        k = NUM_CLASSES[task]
        targets = labels[rows, :k]
        weights = np.ones(int(rows.sum()))
        if task == EMOTION:
            targets = targets * (1 - eps) + eps / k
        if task == GENDER:
            weights = gender_weights[labels[rows, :k].argmax(1)]
        xent = -(targets * log_softmax(logits[task][rows].astype(np.float64))).sum(1)
        np.testing.assert_allclose(losses[task], (weights * xent).sum() / weights.sum(), rtol=1e-5)


def test_gender_balance_weights_classes_by_inverse_frequency(demo_dir, tmp_path):
    data_dir = str(tmp_path / 'data')
    shutil.copytree(demo_dir, data_dir)
    path = data_utils.split_path(data_dir, GENDER, 'train')
    records = np.load(path)
    records = np.concatenate([records[records['label'] == 0][:200], records[records['label'] == 1]])
    np.save(path, records)  # 200 women, 600 men; 180 and 540 stay after the validation tenth
    train_set = data_provider.Dataset('train', data_dir=data_dir, validation_fraction=0.1, verbose=False)
    feeds = {}
    for balance in (1.0, 0.0):
        with tf.Graph().as_default() as graph, tf.Session(graph=graph) as session:
            net = model.Multitask_BKNet(session, gender_balance=balance, verbose=False, training=False)
            feeds[balance] = list(training.class_weights(train_set, net.config, net.tasks, verbose=False).values())
    assert feeds[0.0] == []  # plain loss: nothing fed, every class weighs 1
    np.testing.assert_allclose(feeds[1.0][0], [720 / (2 * 180), 720 / (2 * 540)], rtol=1e-6)


def test_the_gender_logit_bias_moves_the_predicted_probabilities_not_the_loss():
    rng = np.random.RandomState(4)
    images, labels, indexes = mixed_batch(rng)
    bias = training.balanced_gender_bias((1000, 3000), 0.5)
    assert abs(bias - 0.5 * np.log(3.0)) < 1e-12  # the prior left by n ** -0.5 weights: sqrt(3) men to a woman
    assert training.balanced_gender_bias((1000, 3000), 1.0) == 0.0  # a class-balanced loss needs no shift
    runs = {}
    for value in (0.0, bias):
        with tf.Graph().as_default() as graph, tf.Session(graph=graph) as session:
            tf.set_random_seed(0)
            net = model.Multitask_BKNet(session, verbose=False, training=False, gender_logit_bias=value)
            session.run(tf.global_variables_initializer())
            runs[value] = session.run([net.logits[GENDER], net.probabilities[GENDER], net.task_loss[GENDER]], {
                net.input_images: images, net.input_labels: labels, net.input_indexes: indexes})
    logits, probabilities, loss = runs[bias]
    np.testing.assert_allclose(logits, runs[0.0][0], rtol=1e-6)  # the same network
    shifted = logits.astype(np.float64) + [bias, 0.0]
    np.testing.assert_allclose(probabilities, np.exp(log_softmax(shifted)), rtol=1e-5)
    assert loss == pytest.approx(runs[0.0][2], rel=1e-6)  # training's loss reads the raw logits


@pytest.mark.slow
def test_soft_targets_train_the_loss_and_their_argmax_counts_as_the_class():
    rng = np.random.RandomState(5)
    images, labels, indexes = mixed_batch(rng)
    teacher = np.zeros_like(labels)
    for i, task in enumerate(indexes.astype(int)):
        teacher[i, :NUM_CLASSES[task]] = rng.dirichlet(np.ones(NUM_CLASSES[task]))
    soft = 0.5 * labels + 0.5 * teacher  # the largest distill_weight: the label stays the largest target
    eps, gender_weights = 0.1, np.array([2.5, 0.4], np.float32)
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as session:
        net = model.Multitask_BKNet(session, verbose=False, label_smoothing=eps)
        session.run(tf.global_variables_initializer())
        logits, losses, correct = session.run([net.logits, net.task_loss, net.task_correct], {
            net.input_images: images, net.input_labels: soft, net.input_indexes: indexes,
            net.class_weights[GENDER]: gender_weights})
    for task in TASKS:
        rows = indexes == task
        k = NUM_CLASSES[task]
        targets = soft[rows, :k] * (1 - eps) + eps / k if task == EMOTION else soft[rows, :k]
        weights = gender_weights[labels[rows, :k].argmax(1)] if task == GENDER else np.ones(int(rows.sum()))
        xent = -(targets * log_softmax(logits[task][rows].astype(np.float64))).sum(1)
        np.testing.assert_allclose(losses[task], (weights * xent).sum() / weights.sum(), rtol=1e-5)
        assert correct[task] == (logits[task][rows].argmax(1) == labels[rows, :k].argmax(1)).sum()


@pytest.mark.parametrize('overrides, message', [
    (dict(distill_from='pretrained'), 'distill_from and distill_weight go together'),
    (dict(distill_weight=0.3), 'distill_from and distill_weight go together'),
    (dict(distill_from='pretrained', distill_weight=0.6), 'distill_weight must be a number >= 0 and <= 0.5'),
])
def test_distillation_needs_a_teacher_and_a_share_of_at_most_half(overrides, message):
    with pytest.raises(ValueError, match=message):
        config.resolve_config(**overrides)


@pytest.mark.slow
def test_distilled_targets_mix_the_labels_with_the_teachers_flip_average(demo_dir):
    if not os.path.isfile(os.path.join(checkpoints.PRETRAINED_DIR, checkpoints.WEIGHTS_FILE)):
        pytest.skip('this checkout ships no pretrained/weights.npz')
    train_set = data_provider.Dataset('train', data_dir=demo_dir, verbose=False)
    keep = np.arange(0, len(train_set.labels), 40)  # every task, a few seconds of teacher
    train_set.images, train_set.labels, train_set.indexes = (train_set.images[keep], train_set.labels[keep],
                                                             train_set.indexes[keep])
    weight = 0.3
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as session:
        student = model.Multitask_BKNet(session, verbose=False, training=False, distill_from=checkpoints.PRETRAINED_DIR,
                                        distill_weight=weight)
        targets = training.distilled_labels(train_set, student.config, student.tasks, model.load_model, verbose=False)
    # The reference: the shipped network's raw logits (no gender_logit_bias) on the face and its mirror image.
    faces = data_utils.normalize(train_set.images)[..., None]
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as session:
        teacher, _ = model.load_model(session, checkpoints.PRETRAINED_DIR)
        assert teacher.config['gender_logit_bias'] != 0  # the shipped model has one: the targets must leave it out
        logits = [session.run(teacher.logits, {teacher.input_images: view}) for view in (faces, faces[:, :, ::-1])]
    expected = data_provider.one_hot(train_set.labels) * (1 - weight)
    for task in TASKS:
        rows = train_set.indexes == task
        assert rows.any()
        mean = sum(np.exp(log_softmax(view[task][rows].astype(np.float64))) for view in logits) / 2
        expected[rows, :NUM_CLASSES[task]] += weight * mean
    np.testing.assert_allclose(targets, expected, atol=1e-5)
    np.testing.assert_array_equal(targets.argmax(1), train_set.labels)


@pytest.fixture(scope='module')
def ema_run(demo_dir, tmp_path_factory):
    """Three steps with a weights average of decay 0.9, and each step's weights and shadows recorded."""
    ckpt_dir = str(tmp_path_factory.mktemp('ema'))
    rng = np.random.RandomState(0)
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as session:
        net = model.Multitask_BKNet(session, data_dir=demo_dir, checkpoint_dir=ckpt_dir, ema_decay=0.9,
                                    verbose=False)
        session.run(tf.global_variables_initializer())
        shadows = [net.ema.average(v) for v in net.model_variables]
        history = [session.run([net.model_variables, shadows])]
        for _ in range(3):
            images, labels, indexes = mixed_batch(rng, 48)
            session.run(net.train_op, {net.input_images: images, net.input_labels: labels,
                                       net.input_indexes: indexes, net.phase_train: True, net.learning_rate: 0.05})
            history.append(session.run([net.model_variables, shadows]))
        val_set = data_provider.Dataset('validation', 256, demo_dir, verbose=False)
        raw_before = session.run(net.model_variables)
        averaged_result = net.evaluate_inference_weights(val_set)
        raw_after = session.run(net.model_variables)
        checkpoints.save_weights(os.path.join(ckpt_dir, checkpoints.WEIGHTS_FILE), net.inference_weights())
        net._save(ckpt_dir, 0, 3)
        files.write_json(os.path.join(ckpt_dir, checkpoints.CONFIG_FILE), config.saved_config(net.config))
        names = [v.op.name for v in net.model_variables]
    return dict(dir=ckpt_dir, history=history, names=names, raw=(raw_before, raw_after), result=averaged_result,
                val_set=val_set)


@pytest.mark.slow
def test_the_average_follows_the_documented_update(ema_run):
    history = ema_run['history']
    for step in range(1, 4):
        decay = min(0.9, (1.0 + step) / (10.0 + step))  # num_updates is the step count after the update
        for i, name in enumerate(ema_run['names']):
            expected = decay * history[step - 1][1][i] + (1 - decay) * history[step][0][i]
            np.testing.assert_allclose(history[step][1][i], expected, rtol=1e-5, atol=1e-7, err_msg=name)
    moved = [n for i, n in enumerate(ema_run['names']) if not np.allclose(history[3][1][i], history[3][0][i])]
    assert any(n.endswith('/weights') for n in moved) and any(n.endswith('moving_mean') for n in moved)


@pytest.mark.slow
def test_inference_reads_the_average_and_training_keeps_its_weights(ema_run):
    raw_before, raw_after = ema_run['raw']
    for before, after in zip(raw_before, raw_after):  # evaluating the average swapped the weights back
        np.testing.assert_array_equal(before, after)
    shadows = ema_run['history'][-1][1]
    with np.load(os.path.join(ema_run['dir'], checkpoints.WEIGHTS_FILE)) as shipped:
        for name, shadow in zip(ema_run['names'], shadows):
            np.testing.assert_array_equal(shipped[name], shadow.astype(np.float16), err_msg=name)
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as session:
        net, path = model.load_model(session, ema_run['dir'])
        restored = session.run(net.model_variables)
        result = net.evaluate(ema_run['val_set'])
    assert path == os.path.join(ema_run['dir'], 'model.ckpt-3')
    for name, value, shadow in zip(ema_run['names'], restored, shadows):
        np.testing.assert_array_equal(value, shadow, err_msg=name)
    assert result == ema_run['result']


def _cpu_has_bfloat16():
    flags = tf_setup.cpu_flags() or set()
    return 'amx_bf16' in flags or 'avx512_bf16' in flags


@pytest.mark.slow
def test_bfloat16_session_computes_the_float32_network_to_bfloat16_precision():
    rng = np.random.RandomState(4)
    images, labels, indexes = mixed_batch(rng)
    results = {}
    for bfloat16 in (False, True):
        with tf.Graph().as_default() as graph, tf.Session(graph=graph, config=tf_setup.session_config(bfloat16)) as session:
            tf.set_random_seed(11)  # the same initial weights in both graphs
            net = model.Multitask_BKNet(session, verbose=False)
            session.run(tf.global_variables_initializer())
            feed = {net.input_images: images, net.input_labels: labels, net.input_indexes: indexes,
                    net.phase_train: True, net.learning_rate: 0.01}
            loss, logits = session.run([net.total_loss, net.logits], feed)
            session.run(net.train_op, feed)
            after = session.run(net.total_loss, feed)
            results[bfloat16] = loss, logits, after
    (loss32, logits32, after32), (loss16, logits16, after16) = results[False], results[True]
    # bfloat16 keeps 8 bits of mantissa (~0.4% a number); the loss averages that away
    np.testing.assert_allclose(loss16, loss32, rtol=0.01)
    np.testing.assert_allclose(after16, after32, rtol=0.01)
    assert after16 < loss16  # the bfloat16 step trains
    for task in TASKS:  # rounding noise grows over 13 layers: a tenth of the logits' range, not more
        scale = np.abs(logits32[task]).max()
        np.testing.assert_allclose(logits16[task], logits32[task], rtol=0, atol=0.1 * scale)
    if _cpu_has_bfloat16() and os.environ.get('TF_ENABLE_ONEDNN_OPTS', '1') != '0':
        assert any(not np.array_equal(logits16[t], logits32[t]) for t in TASKS), 'the bfloat16 rewrite did not run'
