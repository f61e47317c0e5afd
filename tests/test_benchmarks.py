"""The README's benchmark commands run: each in its cheapest form, on the demo data."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import checkpoints
import config
import tf_setup

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args):
    result = subprocess.run([sys.executable] + list(args), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_bench_data_reports_throughput_and_memory(demo_dir):
    out = _run('benchmarks/bench_data.py', '--data-dir', demo_dir, '--epochs', '1', '--aug-epochs', '1')
    assert 'train set: 4500 samples (smile 1200, emotion 2100, gender 1200), batch 128' in out
    rows = re.findall(r'^gen\(\), (?:no augmentation|augment \(pad 10\)) +(\d+) +[\d.]+ +(\d+)', out, re.M)
    assert [int(n) for n, _ in rows] == [36, 36] and all(int(rate) > 0 for _, rate in rows)
    assert re.search(r'^data arrays \(nbytes\) +9\.9 MB', out, re.M)  # 4500 x (2304 + 8 + 4) bytes


@pytest.mark.slow
def test_bench_train_quick_run_prints_the_table():
    out = _run('benchmarks/bench_train.py', '--quick')
    assert re.search(r'^\| *128 *\| *on *\|( *[\d.]+x? *\|){5} *\d+% *\|$', out, re.M), out


def _tiny_runs(demo_dir, tmp_path, named_flags):
    """2-step training runs on the demo data, one folder each under tmp_path/runs, started together
    (each is mostly TensorFlow's start-up, on one core): -> that folder."""
    runs = tmp_path / 'runs'
    started = [subprocess.Popen([sys.executable, 'train.py', '--data-dir', demo_dir, '--checkpoint-dir', str(runs / name),
                                 '--max-steps', '2', '--batch-size', '32', '--quiet', *flags],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
               for name, flags in named_flags]
    try:
        for process in started:
            _, err = process.communicate(timeout=600)
            assert process.returncode == 0, err
    finally:
        for process in started:
            process.kill()
            process.wait(timeout=30)
    return runs


@pytest.mark.slow
def test_bench_multitask_quick_run_on_tiny_runs(demo_dir, tmp_path):
    """Five 2-step runs as the README's commands make them (fewer steps), then the benchmark's table."""
    runs = _tiny_runs(demo_dir, tmp_path, (('smile', ['--tasks', 'smile']), ('emotion', ['--tasks', 'emotion']),
                                           ('gender', ['--tasks', 'gender']), ('all_fixed', []),
                                           ('all_uncertainty', ['--task-weighting', 'uncertainty'])))
    out_file = str(tmp_path / 'multitask.json')
    out = _run('benchmarks/bench_multitask.py', '--runs-dir', str(runs), '--out', out_file, '--quick')
    with open(out_file) as f:
        report = json.load(f)
    params = {name: r['parameters'] for name, r in report['runs'].items()}
    assert params['single'] == params['smile'] + params['emotion'] + params['gender']
    assert params['all_fixed'] + 3 == params['all_uncertainty']  # one log-variance per task
    # three trunks against one: the difference is two trunks (the heads are the same)
    with np.load(os.path.join(checkpoints.PRETRAINED_DIR, checkpoints.WEIGHTS_FILE)) as shipped:
        trunk = sum(shipped[n].size for n in shipped.files
                    if n.startswith('trunk/') and not n.endswith(('moving_mean', 'moving_variance')))
    assert params['single'] - params['all_fixed'] == 2 * trunk
    sizes = {name: len(np.load(os.path.join(demo_dir, folder, split + '.npy')))
             for name, folder, split in (('smile', 'smile_data', 'test'), ('emotion', 'emotion_data2', 'private_test'),
                                         ('gender', 'gender_data', 'test'))}
    for r in report['runs'].values():  # a share of right answers of the test split's images
        for task, accuracy in r['accuracy'].items():
            right = accuracy * sizes[task]
            assert 0 <= accuracy <= 1 and right == pytest.approx(round(right))
    assert report['runs']['single']['accuracy'] == {
        t: report['runs'][t]['accuracy'][t] for t in ('smile', 'emotion', 'gender')}
    assert len(report['comparisons']) == 9
    assert '| multitask, learned weights - multitask, fixed weights |' in out


@pytest.mark.slow
def test_bench_recipe_compares_runs_on_validation(demo_dir, tmp_path):
    """Two 2-step runs that differ in one option, then the ablation report on the validation data."""
    runs = _tiny_runs(demo_dir, tmp_path, (('base', []), ('smoothed', ['--label-smoothing', '0.1'])))
    out_file = str(tmp_path / 'ablation.json')
    out = _run('benchmarks/bench_recipe.py', '--runs-dir', str(runs), '--out', out_file, '--quick')
    with open(out_file) as f:
        report = json.load(f)
    assert list(report['runs']) == ['base', 'smoothed'] and report['baseline'] == 'base'
    assert report['runs']['base']['options'] == {} and report['runs']['smoothed']['options'] == {'label_smoothing': 0.1}
    # validation: FER-2013's public test whole, a tenth of each class of the smile and gender train sets
    public = len(np.load(os.path.join(demo_dir, 'emotion_data2', 'public_test.npy')))
    assert report['images']['emotion'] == public
    for task, folder in (('smile', 'smile_data'), ('gender', 'gender_data')):
        labels = np.load(os.path.join(demo_dir, folder, 'train.npy'))['label']
        assert report['images'][task] == sum(int(round(0.1 * n)) for n in np.bincount(labels))
    for run in report['runs'].values():
        for task, accuracy in run['accuracy'].items():
            right = accuracy * report['images'][task]
            assert right == pytest.approx(round(right))
        assert run['train_minutes'] is None  # 2 steps: no epoch ended, so no time between epochs
    diff = report['runs']['smoothed']['difference']
    for task in ('smile', 'emotion', 'gender'):
        expected = 100 * (report['runs']['smoothed']['accuracy'][task] - report['runs']['base']['accuracy'][task])
        assert diff[task]['points'] == pytest.approx(expected)
        assert diff[task]['ci95'][0] <= diff[task]['points'] + 1e-9 and diff[task]['points'] <= diff[task]['ci95'][1] + 1e-9
    assert '| smoothed | label_smoothing 0.1 |' in out

    # --tta-views 2: each run scored by the mean of each face and its mirror, as model.predict(views=2) scores it
    out_file = str(tmp_path / 'ablation_flip.json')
    _run('benchmarks/bench_recipe.py', '--runs-dir', str(runs), '--out', out_file, '--quick', '--tta-views', '2')
    with open(out_file) as f:
        flipped = json.load(f)
    assert flipped['tta_views'] == 2 and report['tta_views'] == 1
    tf = tf_setup.import_tf()
    import evaluate
    import model
    validation = evaluate.load_validation_sets(demo_dir, fraction=0.1)
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as session:
        net, _ = model.load_model(session, str(runs / 'base'))
        right = {views: {task: int((net.predict(images, views=views)[task].argmax(1) == labels).sum())
                         for (task, _), (images, labels) in validation.items()} for views in (1, 2)}
    assert right[1] != right[2]  # the mirror changes some answers, so the two reports can tell the views apart
    for views, scored in ((1, report), (2, flipped)):
        got = {config.TASK_NAMES[t]: n for t, n in right[views].items()}
        accuracy = scored['runs']['base']['accuracy']
        assert {task: round(a * scored['images'][task]) for task, a in accuracy.items()} == got


def test_bench_recipe_training_minutes_from_the_epochs_events(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))
    import bench_recipe
    tf = tf_setup.import_tf()
    logs = tmp_path / 'logs'
    with tf.Graph().as_default():
        writer = tf.summary.FileWriter(str(logs))
        # an epoch every 90 s, then a pause of an hour (stopped, resumed)
        for step, wall_time in ((384, 1000.0), (768, 1090.0), (1152, 1180.0), (1536, 4870.0), (1920, 4960.0)):
            value = tf.Summary(value=[tf.Summary.Value(tag='loss', simple_value=1.0)])
            writer.add_event(tf.Event(wall_time=wall_time, step=step, summary=value))
        writer.close()
    assert bench_recipe.train_minutes(tf, str(tmp_path), 5) == pytest.approx(5 * 90 / 60.0)
    assert bench_recipe.train_minutes(tf, str(tmp_path / 'elsewhere'), 3) is None


@pytest.mark.slow
def test_bench_recipe_refuses_a_missing_baseline(tmp_path):
    result = subprocess.run([sys.executable, 'benchmarks/bench_recipe.py', '--runs-dir', str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "error: %s holds no run 'base' (runs: none)" % tmp_path


@pytest.mark.slow
def test_bench_recipe_names_missing_validation_data_in_one_line(tmp_path):
    (tmp_path / 'base').mkdir()
    (tmp_path / 'base' / 'config.json').write_text(json.dumps({'data_dir': str(tmp_path / 'nodata')}))
    result = subprocess.run([sys.executable, 'benchmarks/bench_recipe.py', '--runs-dir', str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and 'Traceback' not in result.stderr
    missing = os.path.join(str(tmp_path / 'nodata'), 'smile_data', 'train.npy')
    assert result.stderr.strip().splitlines()[-1].startswith('error: %s: file not found' % missing)


def test_bench_data_names_a_missing_data_file_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, 'benchmarks/bench_data.py', '--data-dir', str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and 'Traceback' not in result.stderr
    missing = os.path.join(str(tmp_path), 'smile_data', 'train.npy')
    assert result.stderr.strip().splitlines()[-1].startswith('error: %s: file not found' % missing)


@pytest.mark.slow
def test_bench_serve_quick_run_loads_a_server_and_reports_each_setting():
    out = _run('benchmarks/bench_serve.py', '--quick')
    rows = re.findall(r'^\| (\d+) \| (\d+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| (\d+) \|$', out, re.M)
    assert [int(r[0]) for r in rows] == [1, 2], out
    for _, count, rate, p50, p99, ratio, errors in rows:
        assert int(count) > 0 and int(errors) == 0 and float(p50) <= float(p99)
        assert 0 < float(rate) <= int(count) / 2.0 + 0.05  # answered over the 2 s of a quick setting, or longer
        assert float(ratio) == pytest.approx(float(p99) / float(p50), abs=0.01)
    assert re.search(r'^server resident memory: \d+ MB after the warm-up, \d+ MB after the run', out, re.M)
    local = float(re.search(r'^predict.py in-process, p50 end to end: ([\d.]+) ms', out, re.M).group(1))
    ratio = float(re.search(r'^/analyze p50 at 1 client / in-process: ([\d.]+)x', out, re.M).group(1))
    assert ratio == pytest.approx(float(rows[0][3]) / local, abs=0.01)
