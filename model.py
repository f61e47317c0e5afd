"""Multitask BKNet: one VGG-style trunk, three heads (smile, emotion, gender), a masked loss, its training loop.

Public names:
  Multitask_BKNet(session, config=None, training=True, verbose=True, **overrides)
    .tasks             the task indexes it has heads for (config 'tasks': all three, or a single-task model's one)
    ._define_input()   the five placeholders of the handout
    ._build_model()    trunk + heads -> self.logits {task: logits}; self.probabilities (softmax)
    ._define_loss()    per-task masked cross-entropy (fixed or learned task weights) + weight decay; per-task accuracy
    .train(fresh=False)  the training loop: checkpoints, resume, evaluation every epoch
    .restore(path)     load inference weights: checkpoint prefix, folder, or weights .npz
    .inference_weights() -> {name: array}   the weights inference uses (the moving average, if kept)
    .evaluate(dataset) -> {task: {'correct', 'count', 'loss'}}; .evaluate_inference_weights(dataset): with the EMA
    .predict(images, views=1) -> {task: probabilities} of uint8 (N,48,48) or normalised (N,48,48,1) faces
  load_model(session, path) -> (net, file read)   a saved model rebuilt from its config.json and restored
  TRUNK, HEAD_UNITS  the network's shape: (filters, convolutions) per trunk block; units of each head's layers
"""

import numpy as np

import checkpoints
import data_provider
import data_utils
import layers
import tf_setup
import training
from config import EMOTION, GENDER, IMAGE_SIZE, LABEL_WIDTH, NUM_CLASSES, TASK_NAMES, resolve_config, task_indexes
from tf_setup import tf

TRUNK = ((32, 2), (64, 2), (128, 2), (256, 3))
HEAD_UNITS = 256


class Multitask_BKNet(object):

    def __init__(self, session, config=None, training=True, verbose=True, **overrides):
        self.sess = session
        self.config = resolve_config(config, **overrides)
        self.tasks = task_indexes(self.config['tasks'])  # the heads this network has
        self.verbose = verbose
        with session.graph.as_default():
            self._define_input()
            self._build_model()
            self._define_loss()
            self.global_step = tf.train.get_or_create_global_step()
            # (epochs completed, steps done in the epoch under way): where a resumed run continues
            self.progress = tf.get_variable('progress', [2], tf.int64, tf.zeros_initializer(), trainable=False)
            self._progress_value = tf.placeholder(tf.int64, [2])
            self._set_progress = tf.assign(self.progress, self._progress_value)
            # Weights and batch-norm statistics, without optimizer slots: what inference needs.
            self.model_variables = [v for v in tf.global_variables() if v.name.startswith(('trunk/', 'head_'))]
            self.ema = None  # the weights' moving average, kept while training when config ema_decay > 0
            if training:
                self._define_train_op()
            self.saver = tf.train.Saver(max_to_keep=self.config['keep_checkpoints'], save_relative_paths=True)

    # ------------------------------------------------------------------ graph

    def _define_input(self):
        self.input_images = tf.placeholder(tf.float32, [None, IMAGE_SIZE, IMAGE_SIZE, 1], name='input_images')
        self.input_labels = tf.placeholder(tf.float32, [None, LABEL_WIDTH], name='input_labels')
        self.input_indexes = tf.placeholder(tf.float32, [None], name='input_indexes')
        self.phase_train = tf.placeholder_with_default(False, [], name='phase_train')
        self.keep_prob = tf.placeholder_with_default(1.0, [], name='keep_prob')

    def _build_model(self):
        x = self.input_images
        with tf.variable_scope('trunk'):
            for block, (filters, convs) in enumerate(TRUNK, 1):
                for i in range(1, convs + 1):
                    x = layers.conv_bn_relu(x, filters, self.phase_train, 'conv%d_%d' % (block, i))
                x = layers.max_pool(x)
                if self.verbose:
                    print('(%s)' % ', '.join('?' if d is None else str(d) for d in x.shape.as_list()))
        features = tf.reshape(x, [-1, int(np.prod(x.shape.as_list()[1:]))])
        self.logits, self.probabilities = {}, {}
        for task in self.tasks:
            with tf.variable_scope('head_' + TASK_NAMES[task]):
                h = layers.fc_bn_relu_dropout(features, HEAD_UNITS, self.phase_train, self.keep_prob, 'fc1')
                h = layers.fc_bn_relu_dropout(h, HEAD_UNITS, self.phase_train, self.keep_prob, 'fc2')
                self.logits[task] = layers.fc(h, NUM_CLASSES[task], 'logits')
            logits = self.logits[task]
            if task == GENDER and self.config['gender_logit_bias']:  # moves the decision; the loss keeps the raw logits
                logits += tf.constant([self.config['gender_logit_bias'], 0.0])
            self.probabilities[task] = tf.nn.softmax(logits, name=TASK_NAMES[task] + '_probabilities')

    def _define_loss(self):
        """Each head's cross-entropy counts only its own task's samples, averaged over their count.

        Each sample is weighted by its class's entry in self.class_weights (all 1 unless train() feeds
        gender_balance's), the emotion targets are smoothed by config label_smoothing, and labels may be
        soft (a distillation's mix): the class, for weights and accuracy, is their argmax.
        The heads' losses add up (task_weighting 'fixed'), or, with 'uncertainty', each is weighted by a
        learned exp(-s) and s / 2 added: s is the log-variance of Kendall, Gal & Cipolla (CVPR 2018),
        their (1 / sigma^2) L + log sigma for a classification loss. self.task_weight holds the weights.
        """
        self.task_loss, self.task_correct, self.task_count, self.class_weights = {}, {}, {}, {}
        for task in self.tasks:
            mask = tf.cast(tf.equal(self.input_indexes, float(task)), tf.float32)
            count = tf.reduce_sum(mask)
            targets = self.input_labels[:, :NUM_CLASSES[task]]
            labels = tf.argmax(targets, 1)
            if task == EMOTION and self.config['label_smoothing']:
                eps = self.config['label_smoothing']
                targets = targets * (1.0 - eps) + eps / NUM_CLASSES[task]
            self.class_weights[task] = tf.placeholder_with_default(
                np.ones(NUM_CLASSES[task], np.float32), [NUM_CLASSES[task]], 'class_weights_' + TASK_NAMES[task])
            mask_weights = mask * tf.gather(self.class_weights[task], labels)
            xent = tf.nn.softmax_cross_entropy_with_logits_v2(labels=targets, logits=self.logits[task])
            self.task_loss[task] = tf.reduce_sum(xent * mask_weights) / tf.maximum(tf.reduce_sum(mask_weights), 1e-6)
            hits = tf.cast(tf.equal(tf.argmax(self.logits[task], 1), labels), tf.float32)
            self.task_correct[task] = tf.reduce_sum(hits * mask)
            self.task_count[task] = count
        self.weight_decay_loss = self.config['weight_decay'] * tf.add_n(
            [tf.nn.l2_loss(w) for w in tf.get_collection(tf.GraphKeys.WEIGHTS)])
        if self.config['task_weighting'] == 'uncertainty':
            with tf.variable_scope('task_weighting'):
                log_variance = {t: tf.get_variable('log_variance_' + TASK_NAMES[t], [], tf.float32,
                                                   tf.zeros_initializer()) for t in self.tasks}
            self.task_weight = {t: tf.exp(-log_variance[t]) for t in self.tasks}
            task_losses = [self.task_weight[t] * self.task_loss[t] + 0.5 * log_variance[t] for t in self.tasks]
        else:
            self.task_weight = {t: tf.constant(1.0) for t in self.tasks}
            task_losses = [self.task_loss[t] for t in self.tasks]
        self.total_loss = tf.add_n(task_losses) + self.weight_decay_loss

    def _define_train_op(self):
        self.learning_rate = tf.placeholder(tf.float32, [], name='learning_rate')
        if self.config['optimizer'] == 'momentum':
            optimizer = tf.train.MomentumOptimizer(self.learning_rate, 0.9, use_nesterov=True)
        else:
            optimizer = tf.train.AdamOptimizer(self.learning_rate)
        with tf.control_dependencies(tf.get_collection(tf.GraphKeys.UPDATE_OPS)):
            self.train_op = optimizer.minimize(self.total_loss, global_step=self.global_step)
        if self.config['ema_decay']:
            # As CIFAR-10's cifar10.py: shadow copies updated after each step. The batch-norm
            # statistics are averaged too, so they match the averaged weights they normalise.
            self.ema = tf.train.ExponentialMovingAverage(self.config['ema_decay'], num_updates=self.global_step)
            with tf.control_dependencies([self.train_op]):
                self.train_op = self.ema.apply(self.model_variables)
            self._ema_reset = tf.group(*[tf.assign(self.ema.average(v), v) for v in self.model_variables])
            # Swapping weights and shadows in place lets the same graph evaluate the average.
            weights = [v.read_value() for v in self.model_variables]
            shadows = [self.ema.average(v).read_value() for v in self.model_variables]
            with tf.control_dependencies(weights + shadows):
                self._ema_swap = tf.group(*[op for v, w, a in zip(self.model_variables, weights, shadows)
                                            for op in (tf.assign(v, a), tf.assign(self.ema.average(v), w))])

    # ------------------------------------------------------------------ training

    def train(self, fresh=False):
        """Train for config['epochs'] epochs (resuming the newest checkpoint that restores unless fresh).

        Prints per-task train loss and accuracy each epoch, evaluates on the validation data, keeps the
        last few checkpoints plus the best by mean validation accuracy (best/), and saves a checkpoint
        before leaving on Ctrl-C / SIGTERM (then self.stopped_by names the signal). Returns the last evaluation.
        """
        cfg = self.config
        ckpt_dir = cfg['checkpoint_dir']
        train_set, val_set = training.datasets(cfg, self.tasks, self.verbose)
        if cfg['distill_from']:  # before any folder is made: a bad teacher writes nothing
            train_set.soft_labels = training.distilled_labels(train_set, cfg, self.tasks, load_model, self.verbose)
        steps_per_epoch = train_set.steps_per_epoch()
        with training.RunFolder(ckpt_dir, fresh) as run:  # Ctrl-C / SIGTERM from here on: save, then leave
            print('Training on %s' % tf_setup.device_name())
            class_weights = self._start(ckpt_dir, train_set)
            step, (epoch, steps_done) = self.sess.run([self.global_step, self.progress])
            step, epoch, steps_done, result = int(step), int(epoch), int(steps_done), None
            fetches = [self.train_op, self.total_loss, self.task_loss, self.task_correct, self.task_count]
            while epoch < cfg['epochs'] and not training.capped(cfg, step):
                if self.verbose:
                    print('Epoch: ', epoch)
                sums = {t: np.zeros(3) for t in self.tasks}  # loss * count, correct, count
                # Each epoch's order comes from (seed, epoch): a resumed run continues it, never replays epoch 0's.
                train_set.reseed([cfg['seed'], epoch])
                bar = training.progress_bar(steps_per_epoch - steps_done, epoch, self.verbose)
                for images, labels, indexes in train_set.gen(start_batch=steps_done):
                    if run.stopped_by or training.capped(cfg, step):
                        break
                    feed = {self.input_images: images, self.input_labels: labels, self.input_indexes: indexes,
                            self.phase_train: True, self.keep_prob: cfg['keep_prob'],
                            self.learning_rate: training.learning_rate(cfg, step, steps_per_epoch)}
                    feed.update(class_weights)
                    _, total, losses, correct, count = self.sess.run(fetches, feed)
                    training.check_finite(total, step, epoch, ckpt_dir)
                    for t in self.tasks:
                        sums[t] += (losses[t] * count[t], correct[t], count[t])
                    step, steps_done = step + 1, steps_done + 1
                    bar.update(1)
                bar.close()
                if steps_done < steps_per_epoch:  # interrupted or capped mid-epoch
                    print('Stopped at step %d (%s); saved %s'
                          % (step, run.stopped_by or 'max_steps', self._save(ckpt_dir, epoch, steps_done)))
                    break
                epoch, steps_done = epoch + 1, 0
                lr = training.learning_rate(cfg, step, steps_per_epoch)
                result = self._end_epoch(ckpt_dir, epoch, step, sums, val_set, lr, run.writer)
                if run.stopped_by:  # arrived during the evaluation: the epoch is saved, leave now
                    print('Stopped at step %d (%s)' % (step, run.stopped_by))
                    break
        self.stopped_by = run.stopped_by
        return result

    def _start(self, ckpt_dir, train_set):
        """Resume ckpt_dir's run or start one (from init_from's weights, if set); save its config.json.
        -> the class weights to feed at each step."""
        restored = checkpoints.resume(self.sess, self.saver, ckpt_dir)
        if restored:
            print('Reading model parameters from %s' % restored)
        else:
            with self.sess.graph.as_default():  # a notebook's session need not hold the default graph
                self.sess.run(tf.global_variables_initializer())
            if self.config['init_from']:
                # Weights only: the optimizer, step and schedule start afresh (fine-tuning, a second cycle).
                print('Initialized model weights from %s' % self.restore(self.config['init_from']))
                if self.ema is not None:
                    self.sess.run(self._ema_reset)
            else:
                print('Created model with fresh parameters.')
        checkpoints.write_config(ckpt_dir, self.config)
        return {self.class_weights[t]: w for t, w in training.class_weights(train_set, self.config, self.tasks,
                                                                             self.verbose).items()}

    def _end_epoch(self, ckpt_dir, epoch, step, sums, val_set, lr, writer):
        """Evaluate, log and save a finished epoch, and keep it in best/ if it beats the best so far."""
        result = self.evaluate_inference_weights(val_set)
        raw = self.evaluate(val_set) if self.ema is not None else None  # what the average buys, every epoch
        task_weight = self.sess.run(self.task_weight) if self.config['task_weighting'] == 'uncertainty' else None
        training.log_epoch(writer, step, self.tasks, sums, val_set.data_type, result, raw, lr, task_weight, self.verbose)
        path = self._save(ckpt_dir, epoch, 0)
        accuracy = {TASK_NAMES[t]: r['correct'] / max(r['count'], 1) for t, r in result.items()}
        improved = checkpoints.keep_if_best(self.sess, ckpt_dir, dict(
            mean_accuracy=float(np.mean(list(accuracy.values()))), epoch=epoch, step=step, data=val_set.data_type,
            accuracy=accuracy))
        if self.verbose:
            print('Saved %s%s' % (path, ' (best so far)' if improved else ''))
        return result

    def _save(self, ckpt_dir, epochs_done, steps_in_epoch):
        self.sess.run(self._set_progress, {self._progress_value: [epochs_done, steps_in_epoch]})
        return checkpoints.save(self.sess, self.saver, ckpt_dir)

    def restore(self, path):
        """Load the inference weights (no optimizer state) from a checkpoint prefix, a folder or a weights
        .npz (checkpoints.restore); -> the file read. Raises CheckpointError with a one-line message."""
        return checkpoints.restore(self.sess, self.model_variables, path)

    def inference_weights(self):
        """{variable name: float32 array} of the weights inference uses (the moving average, if kept)."""
        values = self.sess.run([self.ema.average(v) if self.ema else v for v in self.model_variables])
        return {v.op.name: value for v, value in zip(self.model_variables, values)}

    # ------------------------------------------------------------------ weights and inference

    def evaluate(self, dataset):
        """Accuracy inputs over a whole Dataset, in inference mode: {task: correct, count, loss}."""
        totals = {t: dict(correct=0.0, count=0.0, loss=0.0) for t in self.tasks}
        fetches = {t: (self.task_correct[t], self.task_count[t], self.task_loss[t]) for t in self.tasks}
        for images, labels, indexes in dataset.gen():
            feed = {self.input_images: images, self.input_labels: labels, self.input_indexes: indexes}
            for task, (correct, count, loss) in self.sess.run(fetches, feed).items():
                totals[task]['correct'] += float(correct)
                totals[task]['count'] += float(count)
                totals[task]['loss'] += float(loss * count)
        for t in totals.values():
            t['loss'] /= max(t['count'], 1.0)
        return totals

    def evaluate_inference_weights(self, dataset):
        """evaluate() with the weights inference uses: the moving average when the run keeps one."""
        if self.ema is None:
            return self.evaluate(dataset)
        self.sess.run(self._ema_swap)
        try:
            return self.evaluate(dataset)
        finally:
            self.sess.run(self._ema_swap)

    def predict(self, images, batch_size=256, views=1):
        """Softmax probabilities of all the heads for a batch of faces, averaged over `views`
        test-time views (data_provider.tta_views: 1, 2 or 18; each view costs one more pass)."""
        images = np.asarray(images)
        images = (data_utils.normalize(images) if images.dtype == np.uint8 else images).reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
        total = {t: np.zeros((len(images), NUM_CLASSES[t]), np.float64) for t in self.tasks}
        views = data_provider.tta_views(views)
        for flip, dy, dx in views:
            view = data_provider.shift_faces(images[:, :, ::-1] if flip else images, dy, dx)[..., None]
            for start in range(0, len(view), batch_size):
                probs = self.sess.run(self.probabilities, {self.input_images: view[start:start + batch_size]})
                for task in self.tasks:
                    total[task][start:start + batch_size] += probs[task]
        return {t: (p / len(views)).astype(np.float32) for t, p in total.items()}


def load_model(session, path, verbose=False, net_class=Multitask_BKNet, **net_args):
    """Rebuild the model saved at path (with its config.json) in session for inference, restore its
    weights and return (net, the file read). Raises CheckpointError with a one-line message.
    net_class: a subclass with the same variables (export.py's adds a uint8 input), built with net_args."""
    checkpoints.find_weights(path)  # a missing checkpoint is reported as such, not as a missing config
    net = net_class(session, checkpoints.load_config(path), training=False, verbose=verbose, **net_args)
    return net, net.restore(path)
