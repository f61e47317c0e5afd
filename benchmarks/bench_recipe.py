"""What each trick of the recipe buys: runs that differ in one option, compared on validation data.

  python benchmarks/bench_recipe.py                 the runs in checkpoints/ablation, writes results/ablation.json
  python benchmarks/bench_recipe.py --runs-dir DIR --baseline base --data-dir data/real
  python benchmarks/bench_recipe.py --quick         200 resamples: checks that it runs
  python benchmarks/bench_recipe.py --runs-dir checkpoints/candidates --baseline shipped --tta-views 18
                                                    models that may replace the shipped one, by the README's
                                                    18-view test-time average

Each subfolder of --runs-dir is one run (trained by the README's commands at the same budget, from
the same weights); the baseline is the run the others differ from. For each run it reports, on
the validation data (FER-2013 PublicTest and the held-out tenths of the GENKI-4K and WIKI training
sets, `Dataset('validation')`), with the weights inference uses (the moving average when kept) and
the mean of --tta-views test-time views of each face (data_provider.tta_views):
  accuracy        per task, plus the balanced (mean per-class) gender accuracy
  difference      run - baseline per task, with a 95% interval from a paired bootstrap over the
                  validation images (resampled together for both models)
  options         the config entries in which the run differs from the baseline
  train minutes   the median time between two epochs' TensorBoard events times the epochs (the
                  training and per-epoch evaluation; start-up and pauses not counted)
Never a test split: these numbers choose the recipe.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project's modules

import numpy as np

import checkpoints
import cli
import data_utils
import metrics
import tf_setup
from bench_multitask import write_report
from config import GENDER, NUM_CLASSES, TASK_NAMES, TASKS

IGNORED_KEYS = ('checkpoint_dir', 'data_dir')  # differ between any two runs, change nothing learned


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--runs-dir', default=os.path.join('checkpoints', 'ablation'),
                   help='folder holding one folder per run (default: checkpoints/ablation)')
    p.add_argument('--baseline', default='base', help='the run the others are compared with (default: base)')
    p.add_argument('--data-dir', help="data folder (default: the baseline's config.json data_dir)")
    p.add_argument('--out', default=os.path.join('results', 'ablation.json'),
                   help='where the numbers go (default: results/ablation.json)')
    p.add_argument('--resamples', type=int, default=2000, help='bootstrap resamples (default: 2000)')
    p.add_argument('--tta-views', type=int, choices=(1, 2, 18), default=1,
                   help='test-time views averaged per face: 1 = the face alone, 2 = and its mirror, 18 = both '
                        'shifted by -2, 0, +2 px (default: 1)')
    p.add_argument('--quick', action='store_true', help='200 resamples')
    args = p.parse_args(argv)
    if args.quick:
        args.resamples = 200
    return args


def train_minutes(tf, ckpt_dir, epochs):
    """Training minutes estimated from the run's TensorBoard logs: the median time between two epochs'
    events times `epochs` (None with fewer than two epochs logged). Start-up, and the pause of a run
    stopped and resumed, are not counted."""
    logs = os.path.join(ckpt_dir, 'logs')
    step_times = {}
    for name in sorted(os.listdir(logs)) if os.path.isdir(logs) else ():
        for event in tf.train.summary_iterator(os.path.join(logs, name)):
            if event.step:
                step_times[event.step] = max(step_times.get(event.step, 0.0), event.wall_time)
    if len(step_times) < 2:
        return None
    times = [step_times[step] for step in sorted(step_times)]
    return float(np.percentile(np.diff(times), 50, method='lower')) * epochs / 60.0  # lower: one pause of two gaps


def main(argv=None):
    args = parse_args(argv)
    tf = tf_setup.import_tf()
    import evaluate
    import model

    if not os.path.isdir(args.runs_dir):
        return cli.error('%s: folder not found (it holds one folder per run)' % args.runs_dir)
    names = sorted(n for n in os.listdir(args.runs_dir) if os.path.isfile(os.path.join(args.runs_dir, n, checkpoints.CONFIG_FILE)))
    if args.baseline not in names:
        return cli.error('%s holds no run %r (runs: %s)' % (args.runs_dir, args.baseline, ', '.join(names) or 'none'))
    names.remove(args.baseline)
    names.insert(0, args.baseline)
    try:
        configs = {n: checkpoints.load_config(os.path.join(args.runs_dir, n)) for n in names}
        data_dir = args.data_dir or configs[args.baseline]['data_dir']
        validation = {task: data for (task, _), data in evaluate.load_validation_sets(
            data_dir, fraction=configs[args.baseline]['validation_fraction']).items()}
        correct = {}
        report = dict(runs_dir=args.runs_dir, baseline=args.baseline, data_dir=data_dir, resamples=args.resamples,
                      tta_views=args.tta_views, images={TASK_NAMES[t]: len(validation[t][1]) for t in TASKS}, runs={})
        for name in names:
            folder = os.path.join(args.runs_dir, name)
            with tf.Graph().as_default() as graph, tf.Session(graph=graph) as session:
                net, path = model.load_model(session, folder)
                predictions = {task: net.predict(images, views=args.tta_views)[task].argmax(1)
                               for task, (images, _) in validation.items()}
            for task, (_, labels) in validation.items():
                correct[(name, task)] = predictions[task] == labels
            options = {k: v for k, v in configs[name].items()
                       if k not in IGNORED_KEYS and v != configs[args.baseline].get(k)}
            report['runs'][name] = dict(
                checkpoint=path, options=options, train_minutes=train_minutes(tf, folder, configs[name]['epochs']),
                accuracy={TASK_NAMES[t]: metrics.accuracy(validation[t][1], predictions[t]) for t in TASKS},
                gender_balanced_accuracy=metrics.balanced_accuracy(validation[GENDER][1], predictions[GENDER],
                                                                    NUM_CLASSES[GENDER]))
    except (data_utils.DataError, checkpoints.CheckpointError) as err:
        return cli.error(err)
    for name in names[1:]:
        report['runs'][name]['difference'] = {}
        for task in TASKS:
            diff, (low, high) = metrics.paired_bootstrap(correct[(name, task)], correct[(args.baseline, task)], args.resamples)
            report['runs'][name]['difference'][TASK_NAMES[task]] = dict(points=100 * diff, ci95=[100 * low, 100 * high])
    write_report(args.out, report, format_table(report))
    return 0


def format_table(report):
    """The README's table (markdown): each run's options, validation accuracy and difference with the baseline."""
    lines = ['| run | differs from %s in | smile | emotion | gender | gender balanced | emotion - %s (95%% CI) | '
             'train min |' % (report['baseline'], report['baseline']), '|---|---|---:|---:|---:|---:|---:|---:|']
    for name, run in report['runs'].items():
        options = ', '.join('%s %s' % (k, v) for k, v in sorted(run['options'].items())) or '(baseline)'
        diff = run.get('difference', {}).get('emotion')
        lines.append('| %s | %s | %s | %.1f | %s | %s |' % (
            name, options, ' | '.join('%.1f' % (100 * run['accuracy'][TASK_NAMES[t]]) for t in TASKS),
            100 * run['gender_balanced_accuracy'],
            '%+.1f [%+.1f, %+.1f]' % ((diff['points'],) + tuple(diff['ci95'])) if diff else '',
            '%.0f' % run['train_minutes'] if run['train_minutes'] is not None else '?'))
    return '\n'.join(lines)


if __name__ == '__main__':
    sys.exit(main())
