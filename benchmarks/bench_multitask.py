"""Does multitask learning help? The README's equal-budget runs: test accuracy, size and speed.

  python benchmarks/bench_multitask.py                  the runs in checkpoints/mtl, writes results/multitask.json
  python benchmarks/bench_multitask.py --runs-dir DIR --data-dir data/real --out results/multitask.json
  python benchmarks/bench_multitask.py --quick          200 resamples, short timings: checks that it runs

The run folders (RUNS, trained by the README's commands at the same budget: each task's images
seen as often, the same recipe and schedule): one single-task network per task (smile, emotion,
gender) and the three-head network with fixed (all_fixed) and learned (all_uncertainty) task weights.
For each it reports, on the official test splits (GENKI-4K test, FER-2013 PrivateTest, WIKI test;
plain, no test-time average):
  accuracy      per task, and for each comparison the difference with a 95% confidence interval
                from a paired bootstrap over the test images (resampled together for both models)
  parameters    trainable weights (single-task x3: the three networks together)
  train img/s   images per second of training steps on random batches of --batch-size (median of
                --windows windows; the single-task networks train at about the same rate, so the
                three together cost what one multitask run costs per image)
  infer ms      per face in batches of 256, and the latency of one face alone (p50); single-task
                x3 runs three networks per face, the multitask model one
Timings come from one process, models interleaved window by window; run it on a quiet machine.
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project's modules

import numpy as np

import checkpoints
import cli
import config
import files
import metrics
import tf_setup
from config import EMOTION, GENDER, IMAGE_SIZE, LABEL_WIDTH, NUM_CLASSES, SMILE, TASK_NAMES, TASKS

SINGLE_RUNS = {SMILE: 'smile', EMOTION: 'emotion', GENDER: 'gender'}
MULTI_RUNS = ('all_fixed', 'all_uncertainty')
RUNS = tuple(SINGLE_RUNS.values()) + MULTI_RUNS
TEST_SPLITS = {SMILE: 'test', EMOTION: 'private_test', GENDER: 'test'}
COMPARISONS = (('all_fixed', 'single'), ('all_uncertainty', 'single'), ('all_uncertainty', 'all_fixed'))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--runs-dir', default=os.path.join('checkpoints', 'mtl'),
                   help='folder holding the run folders %s (default: checkpoints/mtl)' % ', '.join(RUNS))
    p.add_argument('--data-dir', help="data folder (default: the data_dir of the runs' config.json)")
    p.add_argument('--out', default=os.path.join('results', 'multitask.json'),
                   help='where the numbers go (default: results/multitask.json)')
    p.add_argument('--resamples', type=int, default=2000, help='bootstrap resamples (default: 2000)')
    p.add_argument('--windows', type=int, default=5, help='timed windows per model (default: 5)')
    p.add_argument('--steps', type=int, default=10, help='training steps per window (default: 10)')
    p.add_argument('--batch-size', type=int, default=config.DEFAULTS['batch_size'],
                   help='training batch (default: %d)' % config.DEFAULTS['batch_size'])
    p.add_argument('--latency-runs', type=int, default=50, help='one-face calls per window (default: 50)')
    p.add_argument('--quick', action='store_true', help='200 resamples, 1 window of 2 steps and 5 one-face calls')
    args = p.parse_args(argv)
    if args.quick:
        args.resamples, args.windows, args.steps, args.latency_runs = 200, 1, 2, 5
    return args


class _Run(object):
    """One run's model in its own graph and session: inference net, and a training net for timing."""

    def __init__(self, tf, model, folder, batch_size):
        self.graph = tf.Graph()
        self.session = tf.Session(graph=self.graph)
        with self.graph.as_default():
            self.net, self.path = model.load_model(self.session, folder)
            self.parameters = int(sum(v.shape.num_elements() for v in tf.trainable_variables()))
        # The training graph of the same config, on random data (its weights do not matter for speed).
        self.train_graph = tf.Graph()
        self.train_session = tf.Session(graph=self.train_graph)
        with self.train_graph.as_default():
            self.train_net = model.Multitask_BKNet(self.train_session, self.net.config, verbose=False)
            self.train_session.run(tf.global_variables_initializer())
        rng = np.random.RandomState(0)
        tasks = np.array(self.net.tasks, np.float32)
        indexes = tasks[rng.randint(len(tasks), size=batch_size)]
        labels = np.zeros((batch_size, LABEL_WIDTH), np.float32)
        labels[np.arange(batch_size), [rng.randint(NUM_CLASSES[int(t)]) for t in indexes]] = 1.0
        self.train_feed = {self.train_net.input_images: rng.uniform(-0.5, 0.5, (batch_size, IMAGE_SIZE, IMAGE_SIZE, 1)),
                           self.train_net.input_labels: labels, self.train_net.input_indexes: indexes,
                           self.train_net.phase_train: True, self.train_net.keep_prob: 0.5,
                           self.train_net.learning_rate: 1e-4}

    def train_seconds(self, steps):
        start = time.perf_counter()
        for _ in range(steps):
            self.train_session.run(self.train_net.train_op, self.train_feed)
        return (time.perf_counter() - start) / steps

    def infer_seconds(self, faces):
        start = time.perf_counter()
        self.net.predict(faces, batch_size=256)
        return (time.perf_counter() - start) / len(faces)

    def latency_seconds(self, face, runs):
        feed = {self.net.input_images: face}
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            self.session.run(self.net.probabilities, feed)
            times.append(time.perf_counter() - start)
        return statistics.median(times)


def main(argv=None):
    args = parse_args(argv)
    tf = tf_setup.import_tf(onednn=True)  # as train.py and evaluate.py run
    import evaluate
    import model

    missing = [name for name in RUNS if not checkpoints.find_checkpoints(os.path.join(args.runs_dir, name))]
    if missing:
        return cli.error('%s: no checkpoint of run(s) %s; train them with docs/multitask.md\'s commands'
                         % (args.runs_dir, ', '.join(missing)))
    runs = {name: _Run(tf, model, os.path.join(args.runs_dir, name), args.batch_size) for name in RUNS}
    data_dir = args.data_dir or runs['all_fixed'].net.config['data_dir']
    sets = evaluate.load_test_sets(data_dir)

    # accuracy: each test image right or wrong, per run and task
    correct = {}
    for name, run in runs.items():
        for task in run.net.tasks:
            images, labels = sets[(task, TEST_SPLITS[task])]
            correct[(name, task)] = run.net.predict(images)[task].argmax(1) == labels
    for task, name in SINGLE_RUNS.items():
        correct[('single', task)] = correct[(name, task)]

    # timing, interleaved window by window so a change of load hits every model alike
    faces = sets[(EMOTION, TEST_SPLITS[EMOTION])][0][:1024]
    face = (faces[:1, ..., None].astype(np.float32) - 128.0) / 255.0
    for run in runs.values():  # warm-up
        run.train_seconds(2)
        run.infer_seconds(faces[:256])
        run.latency_seconds(face, 3)
    timings = {name: dict(train=[], infer=[], latency=[]) for name in runs}
    for _ in range(args.windows):
        for name, run in runs.items():
            timings[name]['train'].append(run.train_seconds(args.steps))
            timings[name]['infer'].append(run.infer_seconds(faces))
            timings[name]['latency'].append(run.latency_seconds(face, args.latency_runs))

    report = dict(runs_dir=args.runs_dir, data_dir=data_dir, batch_size=args.batch_size, resamples=args.resamples,
                  test_splits={TASK_NAMES[t]: s for t, s in TEST_SPLITS.items()}, runs={}, comparisons=[])
    for name, run in runs.items():
        t = {k: statistics.median(v) for k, v in timings[name].items()}
        report['runs'][name] = dict(
            checkpoint=run.path, tasks=list(run.net.config['tasks']), task_weighting=run.net.config['task_weighting'],
            epochs=run.net.config['epochs'], parameters=run.parameters,
            accuracy={TASK_NAMES[task]: float(correct[(name, task)].mean()) for task in run.net.tasks},
            train_images_per_s=args.batch_size / t['train'], infer_ms_per_face=1000 * t['infer'],
            latency_ms=1000 * t['latency'])
    singles = [report['runs'][n] for n in SINGLE_RUNS.values()]
    report['runs']['single'] = dict(
        tasks=[TASK_NAMES[t] for t in TASKS], parameters=sum(r['parameters'] for r in singles),
        accuracy={k: v for r in singles for k, v in r['accuracy'].items()},
        # three networks: images/s of one training step each, in turn (the harmonic mean); inference adds up
        train_images_per_s=len(singles) / sum(1 / r['train_images_per_s'] for r in singles),
        infer_ms_per_face=sum(r['infer_ms_per_face'] for r in singles), latency_ms=sum(r['latency_ms'] for r in singles))
    for a, b in COMPARISONS:
        for task in TASKS:
            diff, (low, high) = metrics.paired_bootstrap(correct[(a, task)], correct[(b, task)], args.resamples)
            report['comparisons'].append(dict(a=a, b=b, task=TASK_NAMES[task], difference=diff, ci95=[low, high],
                                              images=int(len(correct[(a, task)]))))
    write_report(args.out, report, format_table(report))
    return 0


def write_report(path, report, table):
    """The report as JSON at path (its folder made if missing), then its table and where it went."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    files.write_json(path, report)
    print(table)
    print('wrote %s' % path)


def format_table(report):
    """The README's two tables (markdown): the models, then the differences with their intervals."""
    rows = (('single-task x3', 'single'), ('multitask, fixed weights', 'all_fixed'),
            ('multitask, learned weights', 'all_uncertainty'))
    split = report['test_splits']
    lines = ['| model | smile (GENKI-4K %s) | emotion (FER-2013 %s) | gender (WIKI %s) | parameters | '
             'train img/s | infer ms/face | 1-face latency ms |' % (split['smile'], split['emotion'], split['gender']),
             '|---|---:|---:|---:|---:|---:|---:|---:|']
    for label, name in rows:
        r = report['runs'][name]
        lines.append('| %s | %s | %.2fM | %.0f | %.2f | %.1f |' % (
            label, ' | '.join('%.1f' % (100 * r['accuracy'][TASK_NAMES[t]]) for t in TASKS),
            r['parameters'] / 1e6, r['train_images_per_s'], r['infer_ms_per_face'], r['latency_ms']))
    names = dict((n, label) for label, n in rows)
    lines += ['', '| difference (points, 95%% CI, paired bootstrap of %d) | smile | emotion | gender |'
              % report['resamples'], '|---|---:|---:|---:|']
    for a, b in COMPARISONS:
        cells = []
        for task in TASKS:
            c = next(c for c in report['comparisons'] if (c['a'], c['b'], c['task']) == (a, b, TASK_NAMES[task]))
            cells.append('%+.1f [%+.1f, %+.1f]' % tuple(100 * v for v in [c['difference']] + c['ci95']))
        lines.append('| %s - %s | %s |' % (names[a], names[b], ' | '.join(cells)))
    return '\n'.join(lines)


if __name__ == '__main__':
    sys.exit(main())
