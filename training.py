"""What Multitask_BKNet.train() needs besides the network: data, schedule, class weights, logs, the run folder.

Public names:
  TrainingDiverged                 raised when the loss becomes NaN or infinite
  datasets(cfg, tasks, verbose) -> (train set, validation set): the Datasets a run trains and judges epochs on
  learning_rate(cfg, step, steps_per_epoch)   the schedule's rate at a global step
  balanced_gender_bias(counts, gender_balance)   the gender_logit_bias of a class-balanced decision
  class_weights(train_set, cfg, tasks, verbose) -> {task: per-class loss weights} (gender_balance), or {}
  distilled_labels(train_set, cfg, tasks, load_model, verbose) -> (N, 7) targets mixed with a teacher's
  capped(cfg, step), check_finite(loss, step, epoch, ckpt_dir), progress_bar(steps, epoch, verbose)
  log_epoch(writer, step, tasks, sums, val_name, result, raw, lr, task_weight, verbose)   print + TensorBoard
  RunFolder(ckpt_dir, fresh)       with-block of a run: the folder made, locked and cleaned, Ctrl-C / SIGTERM caught
                                   (.stopped_by), .writer for TensorBoard; an empty folder it made is removed on error
"""
import math
import os
import signal
import sys
import threading

import numpy as np

import checkpoints
import data_provider
import tf_setup
from config import GENDER, LABEL_WIDTH, NUM_CLASSES, TASK_NAMES
from tf_setup import tf

DISTILL_VIEWS = 2  # a distillation teacher's views of each training face: 2 passes (18 would take 9x as long)
DISTILL_CHUNK = 8192  # training faces the teacher reads at a time (75 MB as float32)
VALIDATION_BATCH = 256


class TrainingDiverged(RuntimeError):
    pass


def datasets(cfg, tasks, verbose):
    """The training set (task weights, augmentation) and the set that judges epochs: the held-out tenth of
    smile and gender train with FER-2013 PublicTest, or (validation_fraction 0, the handout's way) the public tests."""
    train_set = data_provider.Dataset('train', cfg['batch_size'], cfg['data_dir'], augment=cfg['augment'],
                                      aug_pad=cfg['aug_pad'], random_erasing=cfg['random_erasing'],
                                      task_weights=cfg['task_weights'], validation_fraction=cfg['validation_fraction'],
                                      verbose=verbose, tasks=tasks)
    if cfg['validation_fraction']:
        val_set = data_provider.Dataset('validation', VALIDATION_BATCH, cfg['data_dir'], verbose=False, tasks=tasks,
                                        validation_fraction=cfg['validation_fraction'])
    else:
        val_set = data_provider.Dataset('public_test', VALIDATION_BATCH, cfg['data_dir'], verbose=False, tasks=tasks)
    return train_set, val_set


def learning_rate(cfg, step, steps_per_epoch):
    if cfg['lr_schedule'] == 'cosine':
        total = max(1, cfg['epochs'] * steps_per_epoch)
        return 0.5 * cfg['learning_rate'] * (1 + math.cos(math.pi * min(step, total) / total))
    return cfg['learning_rate'] * cfg['lr_decay_rate'] ** (step // max(1, cfg['lr_decay_epochs'] * steps_per_epoch))


def balanced_gender_bias(counts, gender_balance):
    """The gender_logit_bias that makes the gender decision class-balanced (logit adjustment, Menon
    et al. 2021): a loss weighting class c by n_c ** -gender_balance leaves the model believing in a
    prior proportional to n_c ** (1 - gender_balance); adding (1 - gender_balance) * log(n_male /
    n_female) to the female logit takes that prior out. counts: (n_female, n_male) of the train set."""
    return (1.0 - gender_balance) * math.log(float(counts[1]) / counts[0])


def class_weights(train_set, cfg, tasks, verbose):
    """{GENDER: classes weighted by n_c ** -gender_balance, scaled so the average sample weighs 1}, or {}."""
    if GENDER not in tasks:
        return {}
    counts = np.bincount(train_set.labels[train_set.indexes == GENDER], minlength=NUM_CLASSES[GENDER])
    power = cfg['gender_balance']
    if not counts.all():
        return {}
    if verbose:
        print('A class-balanced gender decision for this training set: --gender-logit-bias %.3f'
              % balanced_gender_bias(counts, power))
    if not power:
        return {}
    weights = counts.astype(np.float64) ** -power
    weights *= counts.sum() / (weights * counts).sum()
    if verbose:
        print('Gender class weights: %s' % ', '.join('%.3f' % w for w in weights))
    return {GENDER: weights.astype(np.float32)}


def distilled_labels(train_set, cfg, tasks, load_model, verbose):
    """Each training face's target: (1 - distill_weight) one-hot + distill_weight x the distill_from
    model's probabilities for its task, averaged over the face and its mirror image (DISTILL_VIEWS),
    without the teacher's gender_logit_bias (a decision rule, not a belief about the face).
    load_model: model.load_model, which rebuilds the teacher."""
    source, weight = cfg['distill_from'], cfg['distill_weight']
    taught = np.zeros((len(train_set.labels), LABEL_WIDTH), np.float32)
    with tf.Graph().as_default() as graph, tf.Session(graph=graph, config=tf_setup.session_config()) as session:
        teacher, _ = load_model(session, source, gender_logit_bias=0.0)
        missing = [TASK_NAMES[t] for t in tasks if t not in teacher.tasks]
        if missing:
            raise checkpoints.CheckpointError('%s: the teacher has no %s head' % (source, ' or '.join(missing)))
        for start in range(0, len(taught), DISTILL_CHUNK):
            probabilities = teacher.predict(train_set.images[start:start + DISTILL_CHUNK], views=DISTILL_VIEWS)
            indexes = train_set.indexes[start:start + DISTILL_CHUNK]
            for task in tasks:
                rows = np.flatnonzero(indexes == task)
                taught[start + rows, :NUM_CLASSES[task]] = probabilities[task][rows]
    if verbose:
        print("Distilling from %s (weight %g): its label is the training set's for %.1f%% of the faces"
              % (source, weight, 100 * np.mean(np.argmax(taught, 1) == train_set.labels)))
    return (1.0 - weight) * data_provider.one_hot(train_set.labels) + weight * taught


# ----------------------------------------------------------------------------- the loop's small parts

def capped(cfg, step):
    return cfg['max_steps'] and step >= cfg['max_steps']


def check_finite(loss, step, epoch, ckpt_dir):
    if not np.isfinite(loss):
        raise TrainingDiverged('loss became %s at step %d (epoch %d); stopped without saving. The last good '
                               'checkpoint is %s. Try a lower learning rate.'
                               % (loss, step, epoch, (checkpoints.find_checkpoints(ckpt_dir) or ['none'])[0]))


def progress_bar(steps, epoch, verbose):
    from tqdm.auto import tqdm
    interactive = sys.stderr.isatty() or 'ipykernel' in sys.modules
    return tqdm(total=steps, desc='epoch %d' % epoch, leave=False, disable=not verbose,
                mininterval=1.0 if interactive else 60.0)


def log_epoch(writer, step, tasks, sums, val_name, result, raw, lr, task_weight, verbose):
    """Print an epoch's train loss and accuracy and its validation accuracy (and the raw weights' beside a
    moving average's), and write them to TensorBoard. sums: {task: (loss * count, correct, count)}."""
    train = {t: (s[0] / max(s[2], 1), s[1] / max(s[2], 1)) for t, s in sums.items()}
    scores = {val_name: result, val_name + '_raw': raw} if raw else {val_name: result}
    scores = {name: {t: r['correct'] / max(r['count'], 1) for t, r in res.items()} for name, res in scores.items()}
    if verbose:
        print(', '.join('%s_loss: %.2f' % (TASK_NAMES[t], train[t][0]) for t in tasks) + ', ' +
              ', '.join('%s_acc: %.4f' % (TASK_NAMES[t], train[t][1]) for t in tasks))
        for name, acc in scores.items():
            print(name + ' ' + ', '.join('%s_acc: %.4f' % (TASK_NAMES[t], acc[t]) for t in tasks))
        if task_weight:
            print('learned task weights ' + ', '.join('%s: %.3f' % (TASK_NAMES[t], task_weight[t]) for t in tasks))
    values = {'learning_rate': lr}
    for t in tasks:
        name = TASK_NAMES[t]
        if task_weight:
            values['task_weight/%s' % name] = task_weight[t]
        values['train/%s_loss' % name], values['train/%s_accuracy' % name] = train[t]
        values.update({'%s/%s_accuracy' % (split, name): acc[t] for split, acc in scores.items()})
    writer.add_summary(tf.Summary(value=[tf.Summary.Value(tag=tag, simple_value=v) for tag, v in values.items()]), step)
    writer.flush()


class RunFolder(object):
    """with RunFolder(ckpt_dir, fresh) as run: the run folder exists and is locked for this process
    (checkpoints.lock_run), an earlier run's files are removed when fresh and a killed save's leftovers
    always; Ctrl-C / SIGTERM only set run.stopped_by so the loop can save before leaving, and run.writer
    writes TensorBoard logs. A failure before anything was written (bad --init-from weights, say)
    removes the folder again if this run made it."""

    def __init__(self, ckpt_dir, fresh=False):
        self.ckpt_dir, self.fresh = ckpt_dir, fresh
        self.stopped_by = None
        self._writer = None
        self._previous = {}

    def __enter__(self):
        shipped = checkpoints.PRETRAINED_DIR
        if os.path.isdir(self.ckpt_dir) and os.path.isdir(shipped) and os.path.samefile(self.ckpt_dir, shipped):
            raise checkpoints.CheckpointError('%s holds the shipped model and is never trained in: choose another '
                                              '--checkpoint-dir (start from it with --init-from %s)'
                                              % (self.ckpt_dir, self.ckpt_dir))
        self._created = not os.path.isdir(self.ckpt_dir)
        try:
            os.makedirs(self.ckpt_dir, exist_ok=True)  # only now: bad data must not leave a run folder behind
            self._lock = checkpoints.lock_run(self.ckpt_dir)  # before any clean-up: another run's files stay whole
        except OSError as err:  # a file in the way, a read-only disk, no permission
            raise checkpoints.CheckpointError('%s: cannot train in this folder (%s)'
                                              % (self.ckpt_dir, err.strerror or err)) from None
        if self.fresh:
            checkpoints.forget_run(self.ckpt_dir)
        checkpoints.remove_leftovers(self.ckpt_dir)
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._stop)
        return self

    def _stop(self, signum, frame):
        self.stopped_by = signal.Signals(signum).name

    @property
    def writer(self):
        if self._writer is None:
            self._writer = tf.summary.FileWriter(os.path.join(self.ckpt_dir, 'logs'))
        return self._writer

    def __exit__(self, kind, error, traceback):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        if self._writer is not None:
            self._writer.close()
        self._lock.close()
        if error is not None and self._created and os.listdir(self.ckpt_dir) == [checkpoints.LOCK_FILE]:
            os.remove(os.path.join(self.ckpt_dir, checkpoints.LOCK_FILE))
            os.rmdir(self.ckpt_dir)
        return False
