"""Evaluate a trained Multitask BKNet on the test splits.

  python evaluate.py                                  the newest checkpoint of pretrained/ (if shipped) or checkpoints/
  python evaluate.py --checkpoint checkpoints/demo    data from the data_dir in its config.json (--data-dir overrides)
  python evaluate.py --tta                            also the test-time-average numbers (--tta-views, default 18)
  python evaluate.py --limit 50                       smoke test: the first 50 faces of each split
  python evaluate.py --checkpoint exported/bknet_int8.tflite --data-dir data/real   a .tflite file (export.py --tflite)
  python evaluate.py --tasks emotion                  only these of the model's heads (default: all it has)
  python evaluate.py --out reports/demo               where evaluation.json and the PNGs go

Evaluates smile test, emotion public_test and private_test and gender test (those of the tasks the
model has heads for: a single-task model is evaluated on its own task) in inference mode
(batch norm with its moving averages, no dropout), prints one table and writes to --out (default:
the checkpoint's folder) evaluation.json and one confusion matrix per task ({task}_confusion.png;
the emotion one shows both test splits), plus the training curves of a training folder. The
shipped model's folder (pretrained/) is never written to: without --out it gets the table alone,
and --out pretrained is refused. The files are drawn in a hidden folder and moved into place when
all are done, listed meanwhile in the folder's .unfinished.json (files.publishing): a run killed
among the renames is named by the next one, which writes the whole set again. Ctrl-C stops with
one line and exit code 130.

Accuracy, balanced accuracy (the mean per-class accuracy) and the confusion matrices are
metrics.py's.

Public functions:
  load_test_sets(data_dir, limit=None, tasks=TASKS)   {(task, split): (images, labels)} for EVAL_SPLITS
  load_validation_sets(data_dir, limit=None, tasks=TASKS)   the same for VALIDATION_SPLITS (Dataset('validation'))
  check_tasks(net, tasks=None, source)  the tasks to evaluate; CheckpointError for a head the model lacks
  tta_label(views)                       '+ flip TTA' or '+ 18-view TTA': how tables and plots name a test-time average
  evaluate(net, data_dir, tta=False, batch_size=256, limit=None, tta_views=TTA_VIEWS, validation=False, tasks=None)
                                         -> the report (what evaluation.json holds); tasks: net.tasks
  format_table(report)                   the printed table
  plot_confusion(path, task, panels)     one PNG of [(title, matrix), ...] side by side
  write_outputs(report, out_dir, curves=None)   evaluation.json and the PNGs
  read_curves(log_dir) -> {tag: {step: value}}   the per-epoch summaries Multitask_BKNet.train writes
  read_run_curves(ckpt_dir)              the same for a checkpoint folder, after those of the run it was --init-from
  plot_curves(curves, path)              train loss, train / validation (or public-test) accuracy, learning rate
"""
import argparse
import glob
import os
import sys
import time

import cli

if __name__ == '__main__':  # oneDNN on: at batch 256 it is ~15% faster here; an importer keeps its own choice
    cli.start(onednn=True)

import numpy as np

import checkpoints
import config
import data_provider
import data_utils
import files
import litert_model
import metrics
from config import CLASS_NAMES, EMOTION, GENDER, NUM_CLASSES, SMILE, TASK_NAMES, TASKS
from tf_setup import tf

# Chosen on validation (FER-2013 PublicTest): see docs/results.md's ablation table.
TTA_VIEWS = 18
VALIDATION_SPLITS = ((SMILE, 'validation'), (EMOTION, 'public_test'), (GENDER, 'validation'))
EVAL_SPLITS = ((SMILE, 'test'), (EMOTION, 'public_test'), (EMOTION, 'private_test'), (GENDER, 'test'))
REPORT_FILE = 'evaluation.json'
PLOT_FILE = '%s_confusion.png'
CURVES_FILE = 'training_curves.png'
TEMP_PREFIX = files.TEMP_PREFIX + 'evaluate-'  # the hidden folder in --out the outputs are drawn in


# ----------------------------------------------------------------------------- evaluation

def load_validation_sets(data_dir, limit=None, fraction=data_provider.VALIDATION_FRACTION, tasks=TASKS):
    """The data that picks epochs and recipes (Dataset('validation')), as load_test_sets returns them."""
    dataset = data_provider.Dataset('validation', data_dir=data_dir, validation_fraction=fraction, verbose=False,
                                    tasks=tasks)
    sets = {}
    for task, split in VALIDATION_SPLITS:
        if task not in tasks:
            continue
        rows = dataset.indexes == task
        sets[(task, split)] = dataset.images[rows][:limit], dataset.labels[rows][:limit]
    return sets


def load_test_sets(data_dir, limit=None, tasks=TASKS):
    """The test splits of the handout's two test data types (of `tasks`), each cut to its first `limit` faces."""
    sets = {}
    for data_type in ('public_test', 'private_test'):
        # mmap: smile and gender appear in both data types but are only read once, below
        data = data_utils.read_data(data_dir, data_type, verbose=False, mmap=True, tasks=tasks)
        for task, (images, labels) in data.items():
            split = data_utils.DATA_TYPES[data_type][task]
            images, labels = np.array(images[:limit]), np.array(labels[:limit])
            data_utils.check_images(images, labels, task, data_utils.split_path(data_dir, task, split))
            sets[(task, split)] = images, labels
    return sets


def tta_label(views):
    return '+ flip TTA' if views == 2 else '+ %d-view TTA' % views


def _metrics(task, labels, probabilities):
    """The numbers of one split; None stands for undefined (a class, or a split, without samples)."""
    predictions = probabilities.argmax(axis=1)
    n = NUM_CLASSES[task]
    recalls = metrics.per_class_accuracy(labels, predictions, n)
    return dict(accuracy=_number(metrics.accuracy(labels, predictions)),
                balanced_accuracy=_number(metrics.balanced_accuracy(labels, predictions, n)),
                per_class_accuracy={name: _number(r) for name, r in zip(CLASS_NAMES[task], recalls)},
                confusion_matrix=metrics.confusion_matrix(labels, predictions, n).tolist())


def _number(value):
    return None if np.isnan(value) else float(value)


def evaluate(net, data_dir, tta=False, batch_size=256, limit=None, tta_views=TTA_VIEWS, validation=False, tasks=None):
    """Evaluate net on EVAL_SPLITS (or VALIDATION_SPLITS); returns the report written to evaluation.json.

    tta: also score the mean probabilities of tta_views test-time views (data_provider.tta_views).
    tasks: the task indexes to evaluate, all of the net's heads by default; CheckpointError names one it has not.
    """
    tasks = check_tasks(net, tasks)
    sets = (load_validation_sets(data_dir, limit, tasks=tasks) if validation else
            load_test_sets(data_dir, limit, tasks=tasks))
    results = []
    start = time.time()
    for task, split in VALIDATION_SPLITS if validation else EVAL_SPLITS:
        if task not in tasks:
            continue
        images, labels = sets[(task, split)]
        result = dict(task=TASK_NAMES[task], split=split, images=len(labels), class_names=list(CLASS_NAMES[task]))
        probs = net.predict(images, batch_size)
        result['plain'] = _metrics(task, labels, probs[task])
        if tta:
            result['tta'] = _metrics(task, labels, net.predict(images, batch_size, views=tta_views)[task])
        results.append(result)
    seconds = time.time() - start
    return dict(data_dir=data_dir, limit=limit, validation=validation, tta=tta, tta_views=tta_views if tta else None,
                seconds=round(seconds, 2), results=results)


def check_tasks(net, tasks=None, source='the model'):
    """The task indexes to evaluate (net.tasks when None); CheckpointError if the net lacks a head asked for."""
    if tasks is None:
        return net.tasks
    missing = [TASK_NAMES[t] for t in tasks if t not in net.tasks]
    if missing:
        raise checkpoints.CheckpointError('%s has no %s head: it was trained for %s only'
                                          % (source, ' or '.join(missing), ', '.join(TASK_NAMES[t] for t in net.tasks)))
    return tuple(t for t in TASKS if t in tasks)


# ----------------------------------------------------------------------------- output

def format_table(report):
    mode_rows = (('plain', ''), ('tta', '  ' + tta_label(report['tta_views']))) if report['tta'] else (('plain', ''),)
    lines = ['%-22s %7s %9s %9s  %s' % ('data set', 'images', 'accuracy', 'balanced', 'per-class accuracy')]
    for r in report['results']:
        for mode, label in mode_rows:
            m = r[mode]
            per_class = '  '.join('%s %s' % (name, _fmt(v, 3)) for name, v in m['per_class_accuracy'].items())
            lines.append('%-22s %7s %9s %9s  %s' % (label or '%s %s' % (r['task'], r['split']),
                                                   '' if label else r['images'],
                                                   _fmt(m['accuracy'], 4), _fmt(m['balanced_accuracy'], 4), per_class))
    return '\n'.join(lines)


def _fmt(value, digits):
    return '-' if value is None else '%.*f' % (digits, value)


def plot_confusion(path, task, panels):
    """Confusion matrices [(title, matrix), ...] of one task side by side: counts in the cells,
    shaded by the row's fraction so rare classes read as clearly as frequent ones."""
    from matplotlib.figure import Figure  # no pyplot: renders with Agg, no display or global state

    names = CLASS_NAMES[task]
    size = 2.0 + 0.55 * len(names)
    fig = Figure(figsize=(size * len(panels) + 0.6, size + 0.6), layout='constrained')
    for i, (title, matrix) in enumerate(panels):
        matrix = np.asarray(matrix)
        fractions = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
        ax = fig.add_subplot(1, len(panels), i + 1)
        ax.imshow(fractions, cmap='Blues', vmin=0, vmax=1)
        ax.set_xticks(range(len(names)), names, rotation=45, ha='right')
        ax.set_yticks(range(len(names)), names)
        ax.set_xlabel('predicted')
        ax.set_ylabel('true')
        ax.set_title(title, fontsize=10)
        for (row, col), count in np.ndenumerate(matrix):
            ax.text(col, row, str(count), ha='center', va='center', fontsize=8,
                    color='white' if fractions[row, col] > 0.5 else 'black')
    fig.savefig(path, dpi=100)


def read_curves(log_dir):
    curves = {}
    for path in sorted(glob.glob(os.path.join(log_dir, 'events.out.tfevents.*'))):
        for event in tf.train.summary_iterator(path):
            for value in event.summary.value:
                curves.setdefault(value.tag, {})[event.step] = value.simple_value  # a resumed run repeats no step
    return curves


def read_run_curves(ckpt_dir):
    """read_curves of a checkpoint folder, preceded by those of the runs it was --init-from (steps run on)."""
    runs, seen = [], set()
    while ckpt_dir and os.path.realpath(ckpt_dir) not in seen:
        seen.add(os.path.realpath(ckpt_dir))
        curves = read_curves(os.path.join(ckpt_dir, 'logs'))
        if not curves:  # not a training folder (e.g. pretrained/), or the earlier run is not on this machine
            break
        runs.append(curves)
        config_path = os.path.join(ckpt_dir, checkpoints.CONFIG_FILE)
        source = files.read_json(config_path).get('init_from') if os.path.isfile(config_path) else None
        ckpt_dir = source if not source or os.path.isdir(source) else os.path.dirname(source)
    merged, offset = {}, 0
    for curves in reversed(runs):
        for tag, points in curves.items():
            merged.setdefault(tag, {}).update({offset + step: value for step, value in points.items()})
        offset = max(step for points in merged.values() for step in points)
    return merged


def plot_curves(curves, path):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15, 4), layout='constrained')
    axes = [fig.add_subplot(1, 3, i + 1) for i in range(3)]
    for colour, task in enumerate((SMILE, EMOTION, GENDER)):
        name = TASK_NAMES[task]
        # Runs log 'validation/' (older ones judged epochs on 'public_test/'); a resumed chain may hold both.
        for tag, ax, label, style in (('train/%s_loss' % name, axes[0], name, '-'),
                                      ('train/%s_accuracy' % name, axes[1], name + ' train', '--'),
                                      ('public_test/%s_accuracy' % name, axes[1], name + ' public test', '-.'),
                                      ('validation/%s_accuracy' % name, axes[1], name + ' validation', '-')):
            if tag not in curves:
                continue
            steps = sorted(curves[tag])
            ax.plot(steps, [curves[tag][s] for s in steps], style, color='C%d' % colour, marker='o', label=label)
    steps = sorted(curves.get('learning_rate', {}))
    axes[2].plot(steps, [curves['learning_rate'][s] for s in steps], marker='o')
    for ax, title in zip(axes, ('train loss', 'accuracy', 'learning rate')):
        ax.set_title(title)
        ax.set_xlabel('step')
        ax.grid(alpha=0.3)
    axes[0].legend()
    axes[1].legend(fontsize=8)
    fig.savefig(path, dpi=100)


def write_outputs(report, out_dir, curves=None):
    """evaluation.json, one confusion-matrix PNG per task (the TTA matrices when evaluated with TTA)
    and, given curves, the training curves; -> the paths written. They are drawn in a hidden folder
    in out_dir and moved into place when all are done (files.publishing): an error or Ctrl-C leaves
    no partial file, and a kill among the renames leaves the set listed as unfinished."""
    with files.staging_folder(out_dir, TEMP_PREFIX) as tmp:
        files.write_json(os.path.join(tmp, REPORT_FILE), report)
        names = [REPORT_FILE]
        mode = 'tta' if report['tta'] else 'plain'
        for task in TASKS:
            name = TASK_NAMES[task]
            tta = ', ' + tta_label(report['tta_views'])[2:] if report['tta'] else ''
            panels = [('%s %s%s\n%d images' % (name, r['split'], tta, r['images']), r[mode]['confusion_matrix'])
                      for r in report['results'] if r['task'] == name]
            if not panels:  # a task the model has no head for, or not asked for
                continue
            names.append(PLOT_FILE % name)
            plot_confusion(os.path.join(tmp, names[-1]), task, panels)
        if curves:
            names.append(CURVES_FILE)
            plot_curves(curves, os.path.join(tmp, CURVES_FILE))
        paths = [os.path.join(out_dir, name) for name in names]
        with files.publishing(out_dir, paths):  # killed half-way, the set stays listed as unfinished
            for name, path in zip(names, paths):
                os.replace(os.path.join(tmp, name), path)
    return paths


# ----------------------------------------------------------------------------- command line

def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError('must be at least 1, got %s' % text)
    return value


def parse_args(argv=None):
    p = cli.docstring_parser(__doc__, 2)
    cli.add_checkpoint_argument(p)
    p.add_argument('--data-dir', help="data folder (default: the data_dir of the checkpoint's config.json)")
    p.add_argument('--out', help="folder for %s and the PNGs (default: the checkpoint's folder; none for the "
                   "shipped model in pretrained/, which is never written to: only the table is printed)" % REPORT_FILE)
    p.add_argument('--tta', action='store_true', help='also report a test-time average (see --tta-views)')
    p.add_argument('--tta-views', type=int, choices=(2, 18), default=TTA_VIEWS,
                   help='views averaged by --tta: 2 = the face and its mirror, 18 = both shifted by -%d, 0, +%d px '
                        'in x and y (default: %d)' % (data_provider.TTA_SHIFT, data_provider.TTA_SHIFT, TTA_VIEWS))
    p.add_argument('--batch-size', type=_positive_int, default=256, help='faces per session call (default: %(default)s)')
    p.add_argument('--limit', type=_positive_int, help='evaluate only the first N faces of each split (default: all)')
    p.add_argument('--tasks', nargs='+', choices=[TASK_NAMES[t] for t in TASKS],
                   help='evaluate only these tasks (default: every task the model has a head for)')
    p.add_argument('--validation', action='store_true',
                   help='evaluate the validation data that picks epochs and recipes (the held-out tenth of smile and '
                        'gender train, FER-2013 PublicTest) instead of the test splits')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        with litert_model.session_for(args.checkpoint) as session:  # none for a .tflite file
            net, path = litert_model.load_model(session, args.checkpoint)
            tasks = check_tasks(net, config.task_indexes(args.tasks) if args.tasks else None, path)
            report = evaluate(net, args.data_dir or net.config['data_dir'], args.tta, args.batch_size, args.limit,
                              args.tta_views, args.validation, tasks)
    except (data_utils.DataError, checkpoints.CheckpointError) as err:
        return cli.error(err)
    report['checkpoint'] = path
    images = sum(r['images'] for r in report['results'])
    passes = images * (1 + args.tta_views if args.tta else 1)  # each test-time view is one more forward pass
    print('checkpoint %s, data %s: %d images%s in %.1f s (%.0f forward passes/s)'
          % (path, report['data_dir'], images, ' (and %d test-time views of each)' % args.tta_views if args.tta else '',
             report['seconds'], passes / max(report['seconds'], 1e-9)))
    print(format_table(report))
    out_dir = args.out or os.path.dirname(path) or '.'
    if os.path.realpath(out_dir) == os.path.realpath(checkpoints.PRETRAINED_DIR):
        if args.out:
            return cli.error('%s holds the shipped model and is never written to; choose another --out' % out_dir)
        print('report not written: %s holds the shipped model; pass --out DIR to save it' % out_dir)
        return 0
    try:
        leftovers = [os.path.join(out_dir, name) for name in files.remove_leftovers(out_dir, TEMP_PREFIX)]
        if leftovers:
            print('removed %d folder(s) left by an interrupted run: %s' % (len(leftovers), ', '.join(leftovers)))
        half = files.unfinished(os.path.join(out_dir, REPORT_FILE))
        if half:
            print(half + '; writing the whole report again')
        # a training folder (not a weights file) also gets its training curves
        written = write_outputs(report, out_dir, read_run_curves(os.path.dirname(path)))
    except OSError as err:
        return cli.error('%s: cannot write the report (%s); choose another folder with --out'
                         % (err.filename or out_dir, err.strerror or err))
    print('wrote %s' % ', '.join(written))
    return 0


if __name__ == '__main__':
    sys.exit(main())
