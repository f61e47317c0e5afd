"""Multitask BKNet: one VGG-style trunk, three heads (smile, emotion, gender), a masked loss.

Public names:
  Multitask_BKNet(session, config=None, training=True, verbose=True, **overrides)
    .tasks             the task indexes it has heads for (config 'tasks': all three, or a single-task model's one)
    ._define_input()   the five placeholders of the handout
    ._build_model()    trunk + heads -> self.logits {task: logits}; self.probabilities (softmax)
    ._define_loss()    per-task masked cross-entropy (fixed or learned task weights) + weight decay; per-task accuracy
    .train()           the training loop: checkpoints, resume, evaluation every epoch
    .restore(path)     load inference weights: checkpoint prefix, folder, or weights .npz
    .inference_weights() -> {name: array}   the weights inference uses (the moving average, if kept)
    .save_weights(path)  the inference weights alone, float16 .npz (what the repo ships)
    .evaluate(dataset) -> {task: {'correct', 'count', 'loss'}}
    .predict(images, views=1) -> {task: probabilities}, images uint8 (N,48,48) or normalised (N,48,48,1),
                       averaged over 1, 2 or 18 test-time views
    .evaluate_inference_weights(dataset)   evaluate() with the moving average of the weights, if kept
  resolve_config(config=None, **overrides) -> dict of config.DEFAULTS with the overrides applied
  learning_rate(cfg, step, steps_per_epoch) -> the schedule's rate at a global step
  balanced_gender_bias(counts, gender_balance) -> the gender_logit_bias of a class-balanced decision
  tta_views(views), shift_faces(images, dy, dx), shift_index(size, shift)   the test-time views:
                       (mirrored, dy, dx), the shift, and its gather indices (also for export's graph)
  find_checkpoints(folder)   checkpoint prefixes newest first, from the files (not the state file)
  saved_config(cfg)    what config.json keeps (not max_steps)
  ARCHITECTURE_KEYS    the config keys a resumed run cannot change (its checkpoint's variables depend on them)
  find_weights(path), load_config(path)   what a checkpoint folder / prefix / .npz holds
  default_checkpoint()   pretrained/ when the repo ships a model, else config.DEFAULTS['checkpoint_dir']
  add_checkpoint_argument(parser)   the --checkpoint flag of the inference scripts, defaulting to that
  load_model(session, path) -> (net, file read)   a saved model rebuilt for inference and restored
  read_json(path), write_json(path, obj)   JSON files; writes go through a temp file and a rename
  TrainingDiverged   raised when the loss becomes NaN or infinite
  CheckpointError    a checkpoint or weights file missing or not matching the model
"""
import json
import math
import os
import re
import shutil
import signal
import sys
import threading

import numpy as np

import config
import data_utils
from config import EMOTION, GENDER, IMAGE_SIZE, LABEL_WIDTH, NUM_CLASSES, TASK_NAMES, TASKS, task_indexes

tf = config.import_tf()  # oneDNN is left to the entry points (train.py, evaluate.py, predict.py): importing decides nothing
import layers  # noqa: E402  (after the quiet TF import above)

TRUNK = ((32, 2), (64, 2), (128, 2), (256, 3))  # (filters, convolutions) per block
HEAD_UNITS = 256
TTA_SHIFT = 2  # pixels a multi-view test-time average shifts the face by (tta_views)
DISTILL_VIEWS = 2  # a distillation teacher's views of each training face: 2 passes (18 would take 9x as long)
DISTILL_CHUNK = 8192  # training faces the teacher reads at a time (75 MB as float32)
CONFIG_FILE = 'config.json'
CHECKPOINT_NAME = 'model.ckpt'
INVOCATION_KEYS = ('max_steps',)  # belong to one command, not to the run: never saved in config.json
ARCHITECTURE_KEYS = ('tasks', 'task_weighting')  # fix the variables a checkpoint holds: a resumed run keeps them
# What a config.json written before these keys existed meant by leaving them out.
BEFORE_THE_KEY = dict(validation_fraction=0.0, ema_decay=0.0)
WEIGHTS_FILE = 'weights.npz'
BEST_DIR = 'best'
# The shipped model (weights.npz + config.json), found beside this file whatever the working folder.
PRETRAINED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'pretrained')


_EMA_NAMING = tf.train.ExponentialMovingAverage(0.5)  # only for average_name(): the shadows' checkpoint names


class TrainingDiverged(RuntimeError):
    pass


class CheckpointError(Exception):
    """A checkpoint or weights file that is missing or does not fit the model (one-line message)."""


def resolve_config(cfg=None, **overrides):
    resolved = dict(config.DEFAULTS)
    for source in (cfg or {}), overrides:
        unknown = set(source) - set(resolved)
        if unknown:
            raise ValueError('unknown config key(s): %s' % ', '.join(sorted(unknown)))
        resolved.update(source)
    _check_config(resolved)
    resolved['task_weights'] = [float(w) for w in resolved['task_weights']]
    resolved['tasks'] = [TASK_NAMES[t] for t in task_indexes(resolved['tasks'])]  # TASKS order
    return resolved


_CHOICES = dict(optimizer=('momentum', 'adam'), lr_schedule=('step', 'cosine'),
                task_weighting=('fixed', 'uncertainty'))
# key: (smallest, largest, smallest excluded?); None: no bound on that side
_RANGES = dict(epochs=(1, None, False), batch_size=(1, None, False), keep_checkpoints=(1, None, False),
               max_steps=(0, None, False), aug_pad=(0, IMAGE_SIZE // 2, False), learning_rate=(0, None, False),
               lr_decay_rate=(0, None, True), lr_decay_epochs=(0, None, True), weight_decay=(0, None, False),
               keep_prob=(0, 1, True), validation_fraction=(0, 0.5, False), ema_decay=(0, 1, False),
               label_smoothing=(0, 1, False), gender_balance=(0, None, False),
               random_erasing=(0, 1, False), distill_weight=(0, 0.5, False))


def _check_config(cfg):
    """Raise ValueError (one line) unless every value has its default's type and a sensible range."""
    def number(value, integer):
        if isinstance(value, bool) or not isinstance(value, (int, float) if not integer else int):
            return False
        return math.isfinite(value)

    for key, default in config.DEFAULTS.items():
        value = cfg[key]
        if key in _CHOICES:
            ok, want = value in _CHOICES[key], 'one of %s' % ', '.join(_CHOICES[key])
        elif key == 'task_weights':
            ok = (isinstance(value, (list, tuple)) and len(value) == len(TASKS) and
                  all(number(w, False) and w >= 0 for w in value) and any(value))
            want = '%d non-negative numbers, not all 0' % len(TASKS)
        elif key == 'tasks':
            names = [TASK_NAMES[t] for t in TASKS]
            ok = (isinstance(value, (list, tuple)) and all(isinstance(n, str) and n in names for n in value) and
                  0 < len(value) == len(set(value)))
            want = 'a non-empty list of distinct names from %s' % ', '.join(names)
        elif key in ('data_dir', 'checkpoint_dir'):
            ok, want = isinstance(value, str) and value != '', 'a path'
        elif key in ('init_from', 'distill_from'):
            ok, want = value is None or (isinstance(value, str) and value != ''), 'a path or null'
        elif isinstance(default, bool):
            ok, want = isinstance(value, bool), 'true or false'
        else:
            integer = isinstance(default, int)
            ok, want = number(value, integer), 'an integer' if integer else 'a number'
            if ok and key in _RANGES:
                low, high, open_low = _RANGES[key]
                ok = (value > low if open_low else value >= low) and (high is None or value <= high)
                want += ' %s %s%s' % ('>' if open_low else '>=', low, '' if high is None else ' and <= %s' % high)
        if not ok:
            raise ValueError('%s must be %s, got %r' % (key, want, value))
    if bool(cfg['distill_from']) != bool(cfg['distill_weight']):
        raise ValueError('distill_from and distill_weight go together (a teacher and its share above 0), got %r and %r'
                         % (cfg['distill_from'], cfg['distill_weight']))
    weights = dict(zip((TASK_NAMES[t] for t in TASKS), cfg['task_weights']))
    if not any(weights[name] for name in cfg['tasks']):
        raise ValueError('task_weights gives the tasks trained (%s) no samples: %r'
                         % (', '.join(cfg['tasks']), list(cfg['task_weights'])))


def balanced_gender_bias(counts, gender_balance):
    """The gender_logit_bias that makes the gender decision class-balanced (logit adjustment, Menon
    et al. 2021): a loss weighting class c by n_c ** -gender_balance leaves the model believing in a
    prior proportional to n_c ** (1 - gender_balance); adding (1 - gender_balance) * log(n_male /
    n_female) to the female logit takes that prior out. counts: (n_female, n_male) of the train set."""
    return (1.0 - gender_balance) * math.log(float(counts[1]) / counts[0])


def learning_rate(cfg, step, steps_per_epoch):
    if cfg['lr_schedule'] == 'cosine':
        total = max(1, cfg['epochs'] * steps_per_epoch)
        return 0.5 * cfg['learning_rate'] * (1 + math.cos(math.pi * min(step, total) / total))
    if cfg['lr_schedule'] == 'step':
        return cfg['learning_rate'] * cfg['lr_decay_rate'] ** (step // max(1, cfg['lr_decay_epochs'] * steps_per_epoch))
    raise ValueError('lr_schedule must be step or cosine, got %r' % cfg['lr_schedule'])


def tta_views(views):
    """The test-time views as (mirrored, dy, dx): 1 is the face alone, 2 adds its mirror image, 18
    shifts both by -TTA_SHIFT, 0 and +TTA_SHIFT pixels in y and x (what random crops train for)."""
    if views == 1:
        return [(False, 0, 0)]
    if views == 2:
        return [(False, 0, 0), (True, 0, 0)]
    if views == 18:
        shifts = (-TTA_SHIFT, 0, TTA_SHIFT)
        return [(flip, dy, dx) for flip in (False, True) for dy in shifts for dx in shifts]
    raise ValueError('views must be 1, 2 or 18, got %r' % (views,))


def shift_index(size, shift):
    """The source index of each of `size` positions moved by `shift`, the border repeated."""
    return np.clip(np.arange(size) - shift, 0, size - 1)


def shift_faces(images, dy, dx):
    """Faces (N, H, W) moved dy pixels down and dx right, the border rows and columns repeated."""
    if not dy and not dx:
        return images
    return images[:, shift_index(images.shape[1], dy)][:, :, shift_index(images.shape[2], dx)]


def _shape_str(tensor):
    return '(%s)' % ', '.join('?' if d is None else str(d) for d in tensor.shape.as_list())


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
                    print(_shape_str(x))
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

        Each sample is weighted by its class's entry in self.class_weights (all 1 unless fed:
        train() feeds gender_balance's weights), and the emotion targets are smoothed by config label_smoothing.
        Labels may be soft (a distillation's mix, see train()): the class, for weights and accuracy, is their argmax.
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
        elif self.config['optimizer'] == 'adam':
            optimizer = tf.train.AdamOptimizer(self.learning_rate)
        else:
            raise ValueError('optimizer must be momentum or adam, got %r' % self.config['optimizer'])
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

    # ------------------------------------------------------------------ checkpoints

    def restore(self, path):
        """Load the model's inference weights (no optimizer state) and return the file read.

        path: a checkpoint prefix, a folder (its newest checkpoint, or its WEIGHTS_FILE), or a
        weights .npz written by save_weights. A checkpoint that holds a moving average of the
        weights (config ema_decay) gives the average. Raises CheckpointError with a one-line message.
        """
        path = find_weights(path)
        if path.endswith('.npz'):
            self._load_npz(path)
            return path
        try:
            stored = set(tf.train.load_checkpoint(path).get_variable_to_shape_map())
            names = {}
            for var in self.model_variables:
                average = _EMA_NAMING.average_name(var)
                names[average if average in stored else var.op.name] = var
            with self.sess.graph.as_default():
                tf.train.Saver(names).restore(self.sess, path)
        except (tf.errors.OpError, ValueError) as err:
            raise CheckpointError('%s: cannot restore this model from it (%s)' % (path, _first_line(err)))
        return path

    def inference_weights(self):
        """{variable name: float32 array} of the weights inference uses (the moving average, if kept)."""
        values = self.sess.run([self.ema.average(v) if self.ema else v for v in self.model_variables])
        return {v.op.name: value for v, value in zip(self.model_variables, values)}

    def save_weights(self, path, dtype=np.float16, weights=None):
        """Write the inference weights alone (or `weights`, as inference_weights returns them) to an
        .npz, float16 by default: half the size."""
        arrays = {name: value.astype(dtype) for name, value in (weights or self.inference_weights()).items()}
        tmp = path + '.tmp.npz'
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)

    def _load_npz(self, path):
        try:
            data_utils.check_npz(path)
        except data_utils.DataError as err:
            raise CheckpointError(str(err))
        try:
            with np.load(path, allow_pickle=False) as arrays:
                for var in self.model_variables:
                    name = var.op.name
                    if name not in arrays.files:
                        raise CheckpointError('%s does not match this model (no %s)' % (path, name))
                    value = arrays[name]
                    if value.shape != tuple(var.shape.as_list()):
                        raise CheckpointError('%s does not match this model (%s has shape %s, expected %s)'
                                              % (path, name, value.shape, tuple(var.shape.as_list())))
                    # Integer or non-finite weights load fine and then predict at chance, silently.
                    if not np.issubdtype(value.dtype, np.floating):
                        raise CheckpointError('%s: %s holds %s values, expected floats' % (path, name, value.dtype))
                    if not np.isfinite(value).all():
                        raise CheckpointError('%s: %s holds %d NaN or infinite value(s)'
                                              % (path, name, int((~np.isfinite(value)).sum())))
                    var.load(value.astype(np.float32), self.sess)
        except CheckpointError:
            raise
        except Exception as err:  # zipfile, zlib and format errors of a truncated or damaged file
            raise CheckpointError('%s: not a readable weights file (%s: %s)'
                                  % (path, type(err).__name__, _first_line(err)))

    def _restore_or_initialize(self, ckpt_dir):
        """Resume the newest checkpoint in ckpt_dir that restores, found from the files themselves.

        A damaged newer checkpoint is skipped (said in one line) and left out of the rotation; a
        folder whose checkpoint files all fail to restore is an error, never a fresh start.
        """
        candidates = find_checkpoints(ckpt_dir)
        for i, prefix in enumerate(candidates):
            try:
                with self.sess.graph.as_default():
                    self.saver.restore(self.sess, prefix)
            except (tf.errors.OpError, ValueError) as err:
                print('Skipping %s: it does not restore (%s)' % (prefix, _first_line(err)))
                continue
            print('Reading model parameters from %s' % prefix)
            # Rotate the earlier run's intact checkpoints too (oldest first), and point the state file
            # at the one restored, so evaluate.py finds it even if the file was lost or damaged.
            kept = candidates[i:][::-1]
            self.saver.recover_last_checkpoints(kept)
            tf.train.update_checkpoint_state(ckpt_dir, os.path.basename(prefix), [os.path.basename(p) for p in kept])
            return
        if candidates or _checkpoint_files(ckpt_dir):
            raise CheckpointError('%s holds checkpoint files but none restores (newest: %s); use --fresh to start '
                                  'over or another --checkpoint-dir' % (ckpt_dir, (candidates or ['no .index'])[0]))
        with self.sess.graph.as_default():  # a notebook's session need not hold the default graph
            self.sess.run(tf.global_variables_initializer())
        if self.config['init_from']:
            # Weights only: the optimizer, step and schedule start afresh (fine-tuning, a second cycle).
            print('Initialized model weights from %s' % self.restore(self.config['init_from']))
            if self.ema is not None:
                self.sess.run(self._ema_reset)
        else:
            print('Created model with fresh parameters.')

    def _save(self, ckpt_dir, epochs_done, steps_in_epoch, saver=None, name=CHECKPOINT_NAME):
        self.sess.run(self._set_progress, {self._progress_value: [epochs_done, steps_in_epoch]})
        # In the session's graph: with eager execution on (TF2, a notebook), Saver.save reads the
        # global step eagerly unless the graph is the default one, and that fails for a graph tensor.
        with self.sess.graph.as_default():
            return (saver or self.saver).save(self.sess, os.path.join(ckpt_dir, name), global_step=self.global_step)

    # ------------------------------------------------------------------ inference

    def _feed_batches(self, dataset):
        for images, labels, indexes in dataset.gen():
            yield {self.input_images: images, self.input_labels: labels, self.input_indexes: indexes}

    def evaluate(self, dataset):
        """Accuracy inputs over a whole Dataset, in inference mode: {task: correct, count, loss}."""
        totals = {t: dict(correct=0.0, count=0.0, loss=0.0) for t in self.tasks}
        fetches = {t: (self.task_correct[t], self.task_count[t], self.task_loss[t]) for t in self.tasks}
        for feed in self._feed_batches(dataset):
            for task, (correct, count, loss) in self.sess.run(fetches, feed).items():
                totals[task]['correct'] += float(correct)
                totals[task]['count'] += float(count)
                totals[task]['loss'] += float(loss * count)
        for t in totals.values():
            t['loss'] /= max(t['count'], 1.0)
        return totals

    def predict(self, images, batch_size=256, views=1):
        """Softmax probabilities of all three heads for a batch of faces, averaged over `views`
        test-time views (see tta_views: 1, 2 or 18; each view costs one more pass)."""
        images = np.asarray(images)
        if images.dtype == np.uint8:
            images = data_utils.normalize(images)
        images = images.reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
        total = {t: np.zeros((len(images), NUM_CLASSES[t]), np.float64) for t in self.tasks}
        views = tta_views(views)
        for flip, dy, dx in views:
            view = shift_faces(images[:, :, ::-1] if flip else images, dy, dx)[..., None]
            for start in range(0, len(view), batch_size):
                probs = self.sess.run(self.probabilities, {self.input_images: view[start:start + batch_size]})
                for task in self.tasks:
                    total[task][start:start + batch_size] += probs[task]
        return {t: (p / len(views)).astype(np.float32) for t, p in total.items()}

    # ------------------------------------------------------------------ training

    def train(self, fresh=False):
        """Train for config['epochs'] epochs (resuming the newest checkpoint that restores unless fresh).

        Prints per-task train loss and accuracy each epoch, evaluates on the validation data,
        keeps the last few checkpoints plus the best by mean validation accuracy, and saves a
        checkpoint before leaving on Ctrl-C / SIGTERM (then self.stopped_by names the signal).
        With config distill_from, the targets mix each face's label with a teacher's predictions.
        Returns the last evaluation.
        """
        import data_provider  # here, so building the graph does not need the data
        from tqdm.auto import tqdm

        cfg = self.config
        ckpt_dir = cfg['checkpoint_dir']
        train_set = data_provider.Dataset('train', cfg['batch_size'], cfg['data_dir'], augment=cfg['augment'],
                                          aug_pad=cfg['aug_pad'], random_erasing=cfg['random_erasing'],
                                          task_weights=cfg['task_weights'],
                                          validation_fraction=cfg['validation_fraction'], verbose=self.verbose,
                                          tasks=self.tasks)
        if cfg['validation_fraction']:
            val_name, val_set = 'validation', data_provider.Dataset(
                'validation', 256, cfg['data_dir'], validation_fraction=cfg['validation_fraction'], verbose=False,
                tasks=self.tasks)
        else:  # the handout's way: judge epochs on the public test split
            val_name, val_set = 'public_test', data_provider.Dataset('public_test', 256, cfg['data_dir'], verbose=False,
                                                                     tasks=self.tasks)
        if cfg['distill_from']:  # before any folder is made: a bad teacher writes nothing
            train_set.soft_labels = self._distilled_labels(train_set)
        steps_per_epoch = train_set.steps_per_epoch()
        created = not os.path.isdir(ckpt_dir)
        os.makedirs(ckpt_dir, exist_ok=True)  # only now: bad data must not leave a run folder behind
        if fresh:
            _remove_checkpoints(ckpt_dir)
        _remove_leftovers(ckpt_dir)
        print('Training on %s' % _device_name())
        stop = _StopFlag()  # from here on, Ctrl-C / SIGTERM leave through a saved checkpoint
        self.stopped_by = None
        writer = None
        result = None
        try:
            self._restore_or_initialize(ckpt_dir)
            class_weights = self._class_weights_feed(train_set)
            write_json(os.path.join(ckpt_dir, CONFIG_FILE), saved_config(cfg))
            step, (epoch, steps_done) = self.sess.run([self.global_step, self.progress])
            step, epoch, steps_done = int(step), int(epoch), int(steps_done)
            best_path = os.path.join(ckpt_dir, BEST_DIR, 'best.json')
            best = read_json(best_path).get('mean_accuracy', -1.0) if os.path.exists(best_path) else -1.0
            with self.sess.graph.as_default():
                best_saver = tf.train.Saver(max_to_keep=1, save_relative_paths=True)  # folders stay movable
                writer = tf.summary.FileWriter(os.path.join(ckpt_dir, 'logs'))
            while epoch < cfg['epochs'] and not _capped(cfg, step):
                if self.verbose:
                    print('Epoch: ', epoch)
                sums = {t: np.zeros(3) for t in self.tasks}  # loss * count, correct, count
                # Each epoch's order comes from (seed, epoch): a resumed run continues it, never replays epoch 0's.
                train_set.reseed([cfg['seed'], epoch])
                batches = train_set.gen(start_batch=steps_done)
                bar = tqdm(total=steps_per_epoch - steps_done, desc='epoch %d' % epoch, leave=False,
                           disable=not self.verbose, mininterval=1.0 if _interactive() else 60.0)
                fetches = [self.train_op, self.total_loss, self.task_loss, self.task_correct, self.task_count]
                for images, labels, indexes in batches:
                    if stop.signal or _capped(cfg, step):
                        break
                    lr = learning_rate(cfg, step, steps_per_epoch)
                    feed = {self.input_images: images, self.input_labels: labels, self.input_indexes: indexes,
                            self.phase_train: True, self.keep_prob: cfg['keep_prob'], self.learning_rate: lr}
                    feed.update(class_weights)
                    _, total, losses, correct, count = self.sess.run(fetches, feed)
                    if not np.isfinite(total):
                        raise TrainingDiverged(
                            'loss became %s at step %d (epoch %d); stopped without saving. The last good '
                            'checkpoint is %s. Try a lower learning rate.'
                            % (total, step, epoch, (find_checkpoints(ckpt_dir) or ['none'])[0]))
                    for t in self.tasks:
                        sums[t] += (losses[t] * count[t], correct[t], count[t])
                    step += 1
                    steps_done += 1
                    bar.update(1)
                bar.close()
                if steps_done < steps_per_epoch:  # interrupted or capped mid-epoch
                    path = self._save(ckpt_dir, epoch, steps_done)
                    self.stopped_by = stop.signal
                    print('Stopped at step %d (%s); saved %s' % (step, stop.signal or 'max_steps', path))
                    break
                epoch, steps_done = epoch + 1, 0
                result = self.evaluate_inference_weights(val_set)
                mean_acc = float(np.mean([r['correct'] / max(r['count'], 1) for r in result.values()]))
                # Without the average, the raw weights' score too: what the average buys, every epoch.
                raw = self.evaluate(val_set) if self.ema is not None else None
                self._log_epoch(writer, step, sums, val_name, result, raw, learning_rate(cfg, step, steps_per_epoch))
                path = self._save(ckpt_dir, epoch, 0)
                improved = mean_acc > best
                if improved:
                    best = mean_acc
                    os.makedirs(os.path.dirname(best_path), exist_ok=True)
                    best_prefix = self._save(os.path.dirname(best_path), epoch, 0, saver=best_saver)
                    _remove_other_checkpoints(os.path.dirname(best_path), best_prefix)  # a restart's stale best
                    write_json(best_path, dict(mean_accuracy=mean_acc, epoch=epoch, step=int(step), data=val_name,
                                               accuracy={TASK_NAMES[t]: r['correct'] / max(r['count'], 1)
                                                         for t, r in result.items()}))
                if self.verbose:
                    print('Saved %s%s' % (path, ' (best so far)' if improved else ''))
                if stop.signal:  # arrived during the evaluation: the epoch is saved, leave now
                    self.stopped_by = stop.signal
                    print('Stopped at step %d (%s)' % (step, stop.signal))
                    break
        except Exception:
            if created and not os.listdir(ckpt_dir):  # bad --init-from weights fail after the folder was made
                os.rmdir(ckpt_dir)
            raise
        finally:
            stop.restore()
            if writer is not None:
                writer.close()
        return result

    def _distilled_labels(self, train_set):
        """Each training face's target: (1 - distill_weight) one-hot + distill_weight x the distill_from
        model's probabilities for its task, averaged over the face and its mirror image (DISTILL_VIEWS),
        without the teacher's gender_logit_bias (a decision rule, not a belief about the face)."""
        import data_provider
        path, weight = self.config['distill_from'], self.config['distill_weight']
        taught = np.zeros((len(train_set.labels), LABEL_WIDTH), np.float32)
        with tf.Graph().as_default() as graph, tf.Session(graph=graph, config=config.session_config()) as session:
            teacher, _ = load_model(session, path, gender_logit_bias=0.0)
            missing = [TASK_NAMES[t] for t in self.tasks if t not in teacher.tasks]
            if missing:
                raise CheckpointError('%s: the teacher has no %s head' % (path, ' or '.join(missing)))
            for start in range(0, len(taught), DISTILL_CHUNK):
                probabilities = teacher.predict(train_set.images[start:start + DISTILL_CHUNK], views=DISTILL_VIEWS)
                tasks = train_set.indexes[start:start + DISTILL_CHUNK]
                for task in self.tasks:
                    rows = np.flatnonzero(tasks == task)
                    taught[start + rows, :NUM_CLASSES[task]] = probabilities[task][rows]
        if self.verbose:
            print("Distilling from %s (weight %g): its label is the training set's for %.1f%% of the faces"
                  % (path, weight, 100 * np.mean(np.argmax(taught, 1) == train_set.labels)))
        return (1.0 - weight) * data_provider.one_hot(train_set.labels) + weight * taught

    def evaluate_inference_weights(self, dataset):
        """evaluate() with the weights inference uses: the moving average when the run keeps one."""
        if self.ema is None:
            return self.evaluate(dataset)
        self.sess.run(self._ema_swap)
        try:
            return self.evaluate(dataset)
        finally:
            self.sess.run(self._ema_swap)

    def _class_weights_feed(self, train_set):
        """Gender classes weighted by n_c ** -gender_balance, scaled so the average sample weighs 1."""
        if GENDER not in self.tasks:
            return {}
        counts = np.bincount(train_set.labels[train_set.indexes == GENDER], minlength=NUM_CLASSES[GENDER])
        power = self.config['gender_balance']
        if not counts.all():
            return {}
        if self.verbose:
            print('A class-balanced gender decision for this training set: --gender-logit-bias %.3f'
                  % balanced_gender_bias(counts, power))
        if not power:
            return {}
        weights = counts.astype(np.float64) ** -power
        weights *= counts.sum() / (weights * counts).sum()
        if self.verbose:
            print('Gender class weights: %s' % ', '.join('%.3f' % w for w in weights))
        return {self.class_weights[GENDER]: weights.astype(np.float32)}

    def _log_epoch(self, writer, step, sums, val_name, result, raw, lr):
        train = {t: (s[0] / max(s[2], 1), s[1] / max(s[2], 1)) for t, s in sums.items()}
        scores = {val_name: result, val_name + '_raw': raw} if raw else {val_name: result}
        scores = {name: {t: r['correct'] / max(r['count'], 1) for t, r in res.items()} for name, res in scores.items()}
        learned = self.config['task_weighting'] == 'uncertainty'
        task_weight = self.sess.run(self.task_weight) if learned else None
        if self.verbose:
            print(', '.join('%s_loss: %.2f' % (TASK_NAMES[t], train[t][0]) for t in self.tasks) + ', ' +
                  ', '.join('%s_acc: %.4f' % (TASK_NAMES[t], train[t][1]) for t in self.tasks))
            for name, acc in scores.items():
                print(name + ' ' + ', '.join('%s_acc: %.4f' % (TASK_NAMES[t], acc[t]) for t in self.tasks))
            if learned:
                print('learned task weights ' + ', '.join('%s: %.3f' % (TASK_NAMES[t], task_weight[t])
                                                          for t in self.tasks))
        values = [tf.Summary.Value(tag='learning_rate', simple_value=lr)]
        for t in self.tasks:
            name = TASK_NAMES[t]
            if learned:
                values.append(tf.Summary.Value(tag='task_weight/%s' % name, simple_value=task_weight[t]))
            values += [tf.Summary.Value(tag='train/%s_loss' % name, simple_value=train[t][0]),
                       tf.Summary.Value(tag='train/%s_accuracy' % name, simple_value=train[t][1])]
            values += [tf.Summary.Value(tag='%s/%s_accuracy' % (split, name), simple_value=acc[t])
                       for split, acc in scores.items()]
        writer.add_summary(tf.Summary(value=values), step)
        writer.flush()


class _StopFlag(object):
    """Turns Ctrl-C / SIGTERM into a flag the loop checks after each step, so it can save first."""

    def __init__(self):
        self.signal = None
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.signal = signal.Signals(signum).name

    def restore(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _capped(cfg, step):
    return cfg['max_steps'] and step >= cfg['max_steps']


def _interactive():
    return sys.stderr.isatty() or 'ipykernel' in sys.modules


def _device_name():
    gpus = tf.config.list_physical_devices('GPU')
    if gpus:
        return 'GPU (%s)' % ', '.join(g.name for g in gpus)
    from tensorflow.python.util import _pywrap_util_port  # what TensorFlow chose: unset means on, on Linux x86
    return 'CPU (%d cores, oneDNN %s)' % (os.cpu_count(), 'on' if _pywrap_util_port.IsMklEnabled() else 'off')


def _remove_checkpoints(ckpt_dir):
    """Forget a previous run in ckpt_dir: its checkpoints, best copy, logs and config."""
    for name in os.listdir(ckpt_dir):
        path = os.path.join(ckpt_dir, name)
        if name in ('checkpoint', CONFIG_FILE) or name.startswith(CHECKPOINT_NAME):
            if os.path.isdir(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
        elif name in (BEST_DIR, 'logs') and os.path.isdir(path):
            shutil.rmtree(path)


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


def _remove_other_checkpoints(folder, keep_prefix):
    for name in _checkpoint_files(folder):
        if not name.startswith(os.path.basename(keep_prefix) + '.'):
            path = os.path.join(folder, name)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


def _remove_leftovers(ckpt_dir):
    """Delete what a run killed inside a save leaves: TensorFlow's temp state files and shard folders,
    and write_json's / save_weights' temp files."""
    removed = []
    for folder in (ckpt_dir, os.path.join(ckpt_dir, BEST_DIR)):
        for name in os.listdir(folder) if os.path.isdir(folder) else ():
            if ('.tempstate' in name or name.endswith(('.json.tmp', '.tmp.npz')) or
                    re.match(r'%s-\d+_temp' % re.escape(CHECKPOINT_NAME), name)):
                path = os.path.join(folder, name)
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
                removed.append(name)
    if removed:
        print('Removed %d leftover(s) of an interrupted save: %s' % (len(removed), ', '.join(removed)))


def saved_config(cfg):
    """What config.json keeps of a resolved config: all but the one-command keys such as max_steps."""
    return {k: v for k, v in cfg.items() if k not in INVOCATION_KEYS}


def _first_line(err):
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def read_json(path):
    with open(path) as f:
        return json.load(f)


def write_json(path, obj):
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(obj, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


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
        saved = read_json(config_path)
        if not isinstance(saved, dict):
            raise ValueError('expected a JSON object')
        # Older runs saved max_steps; a smoke run's cap must not stop every later run of the folder.
        saved = {k: v for k, v in saved.items() if k not in INVOCATION_KEYS}
        # A run saved before a key existed trained without it: resume it as it was.
        return resolve_config(dict(BEFORE_THE_KEY, **saved))
    except (ValueError, TypeError) as err:
        raise CheckpointError('%s: not a valid config (%s)' % (config_path, err))


def default_checkpoint():
    """What evaluate.py, predict.py and export.py read when no --checkpoint is given."""
    return PRETRAINED_DIR if os.path.isdir(PRETRAINED_DIR) else config.DEFAULTS['checkpoint_dir']


def add_checkpoint_argument(parser):
    """The --checkpoint flag that evaluate.py, predict.py and export.py share."""
    parser.add_argument('--checkpoint', default=default_checkpoint(),
                        help='checkpoint prefix, folder (its newest checkpoint or %s) or weights .npz (default: '
                        'pretrained/ if the repo has it, else %s)' % (WEIGHTS_FILE, config.DEFAULTS['checkpoint_dir']))


def load_model(session, path, verbose=False, net_class=Multitask_BKNet, **net_args):
    """Rebuild the model saved at path (with its config.json) in session for inference, restore its
    weights and return (net, the file read). Raises CheckpointError with a one-line message.
    net_class: a subclass with the same variables (export.py's adds a uint8 input), built with net_args."""
    find_weights(path)  # a missing checkpoint is reported as such, not as a missing config
    net = net_class(session, load_config(path), training=False, verbose=verbose, **net_args)
    return net, net.restore(path)
