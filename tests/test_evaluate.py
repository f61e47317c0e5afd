"""evaluate.py: a demo checkpoint's report against numbers computed here, its files, its command line."""
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

import checkpoints
import config
import data_provider
import data_utils
import evaluate
import files
import model
import tf_setup
from config import CLASS_NAMES, EMOTION, GENDER, NUM_CLASSES, SMILE, TASK_NAMES
from conftest import assert_interrupted, run_interrupted, run_killed  # SIGINT / SIGKILL at a chosen moment

tf = tf_setup.import_tf()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
SPLITS = ((SMILE, 'test'), (EMOTION, 'public_test'), (EMOTION, 'private_test'), (GENDER, 'test'))


def _write_run(ckpt_dir, accuracy_by_step, init_from=None):
    """A checkpoint folder as train.py leaves it, as far as the curves go: config.json and logs/."""
    os.makedirs(ckpt_dir, exist_ok=True)
    files.write_json(os.path.join(ckpt_dir, checkpoints.CONFIG_FILE), config.resolve_config(init_from=init_from))
    with tf.Graph().as_default():  # FileWriter refuses eager mode
        writer = tf.summary.FileWriter(os.path.join(ckpt_dir, 'logs'))
        for step, value in accuracy_by_step.items():
            summary = tf.Summary(value=[tf.Summary.Value(tag='train/smile_accuracy', simple_value=value)])
            writer.add_summary(summary, step)
        writer.close()


def test_run_curves_follow_init_from_with_steps_running_on(tmp_path):
    first, second, third = (str(tmp_path / name) for name in ('first', 'second', 'third'))
    _write_run(first, {10: 0.5, 20: 0.625})
    _write_run(second, {5: 0.75, 10: 0.875}, init_from=first)
    _write_run(third, {5: 1.0}, init_from=os.path.join(second, 'model.ckpt-10'))  # a checkpoint prefix
    assert evaluate.read_run_curves(third) == {'train/smile_accuracy': {
        10: 0.5, 20: 0.625, 25: 0.75, 30: 0.875, 35: 1.0}}
    assert evaluate.read_run_curves(first) == {'train/smile_accuracy': {10: 0.5, 20: 0.625}}
    _write_run(first, {}, init_from=third)  # a loop ends where it started
    assert len(evaluate.read_run_curves(third)['train/smile_accuracy']) == 5
    shipped = str(tmp_path / 'shipped')  # a weights folder has no curves, wherever its weights came from
    os.makedirs(shipped)
    files.write_json(os.path.join(shipped, checkpoints.CONFIG_FILE), config.resolve_config(init_from=second))
    assert evaluate.read_run_curves(shipped) == {}


# ----------------------------------------------------------------------------- a demo checkpoint

def run_main(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = evaluate.main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope='module')
def reference(demo_checkpoint, demo_dir):
    """{(task, split): (labels, plain probabilities, flip-averaged probabilities)}, computed here:
    the files read with numpy, the model restored directly, mirror images made with np.fliplr."""
    out = {}
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as session:
        net = model.Multitask_BKNet(session, training=False, verbose=False)
        net.restore(demo_checkpoint)
        for task, split in SPLITS:
            records = np.load(data_utils.split_path(demo_dir, task, split))
            images, labels = records['image'], records['label']
            plain = net.predict(images)[task]
            mirrored = net.predict(np.stack([np.fliplr(img) for img in images]))[task]
            out[(task, split)] = labels, plain, (plain + mirrored) / 2
    return out


@pytest.fixture(scope='module')
def evaluated(demo_checkpoint, demo_dir, tmp_path_factory):
    out_dir = str(tmp_path_factory.mktemp('evaluation'))
    code, stdout, stderr = run_main(['--checkpoint', demo_checkpoint, '--data-dir', demo_dir, '--out', out_dir,
                                     '--tta', '--tta-views', '2'])
    assert code == 0, stderr
    with open(os.path.join(out_dir, evaluate.REPORT_FILE)) as f:
        return out_dir, stdout, json.load(f)


def expected_metrics(task, labels, probabilities):
    predictions = probabilities.argmax(axis=1)
    per_class = [np.mean(predictions[labels == c] == c) for c in range(NUM_CLASSES[task])]
    matrix = [[int(np.sum((labels == t) & (predictions == p))) for p in range(NUM_CLASSES[task])]
              for t in range(NUM_CLASSES[task])]
    return np.mean(predictions == labels), np.mean(per_class), per_class, matrix


def test_report_matches_accuracies_computed_independently(evaluated, reference):
    _, _, report = evaluated
    assert [(r['task'], r['split']) for r in report['results']] == [(TASK_NAMES[t], s) for t, s in SPLITS]
    for result, (task, split) in zip(report['results'], SPLITS):
        labels, plain, tta = reference[(task, split)]
        assert result['images'] == len(labels)
        assert result['class_names'] == list(CLASS_NAMES[task])
        for mode, probabilities in (('plain', plain), ('tta', tta)):
            acc, balanced, per_class, matrix = expected_metrics(task, labels, probabilities)
            got = result[mode]
            assert got['accuracy'] == pytest.approx(acc), (task, split, mode)
            assert got['balanced_accuracy'] == pytest.approx(balanced), (task, split, mode)
            assert [got['per_class_accuracy'][name] for name in CLASS_NAMES[task]] == pytest.approx(per_class)
            assert got['confusion_matrix'] == matrix
    # the demo model is far better than chance: the numbers come from a trained network
    assert report['results'][0]['plain']['accuracy'] > 0.8


def test_flip_tta_averages_each_face_with_its_mirror(demo_checkpoint, demo_dir, reference):
    records = np.load(data_utils.split_path(demo_dir, EMOTION, 'private_test'))
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as session:
        net, _ = model.load_model(session, demo_checkpoint)
        plain = net.predict(records['image'])
        tta = net.predict(records['image'], views=2)
    _, expected_plain, expected_tta = reference[(EMOTION, 'private_test')]
    np.testing.assert_allclose(plain[EMOTION], expected_plain, atol=1e-6)
    np.testing.assert_allclose(tta[EMOTION], expected_tta, atol=1e-6)
    assert np.abs(tta[EMOTION] - plain[EMOTION]).max() > 1e-3  # the mirror images did change something


def test_eighteen_views_average_mirrors_and_edge_padded_shifts(demo_checkpoint, demo_dir):
    images = np.load(data_utils.split_path(demo_dir, SMILE, 'test'))['image'][:20]
    views = []
    for face in (images, images[:, :, ::-1]):
        padded = np.pad(face, ((0, 0), (2, 2), (2, 2)), mode='edge')  # NumPy's own edge padding as the reference
        views += [padded[:, 2 - dy:50 - dy, 2 - dx:50 - dx] for dy in (-2, 0, 2) for dx in (-2, 0, 2)]
    assert len(views) == 18 and len({v.tobytes() for v in views}) == 18
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as session:
        net, _ = model.load_model(session, demo_checkpoint)
        expected = np.mean([net.predict(v)[SMILE] for v in views], axis=0)
        got = net.predict(images, views=18)[SMILE]
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_array_equal(data_provider.shift_faces(images, 2, -2)[:, 2:, :-2], images[:, :-2, 2:])


def test_table_lists_every_data_set_with_plain_and_tta_rows(evaluated):
    _, stdout, report = evaluated
    for r in report['results']:
        row = next(line for line in stdout.splitlines() if line.startswith('%s %s' % (r['task'], r['split'])))
        assert '%.4f' % r['plain']['accuracy'] in row and '%.4f' % r['plain']['balanced_accuracy'] in row
        assert all(name in row for name in r['class_names'])
    assert stdout.count('+ flip TTA') == len(SPLITS)


def test_json_and_confusion_pngs_are_well_formed(evaluated):
    out_dir, _, report = evaluated
    assert report['tta'] is True and report['limit'] is None
    assert os.path.basename(report['checkpoint']).startswith('model.ckpt-')
    for task in (SMILE, EMOTION, GENDER):
        path = os.path.join(out_dir, evaluate.PLOT_FILE % TASK_NAMES[task])
        with open(path, 'rb') as f:
            assert f.read(8) == PNG_MAGIC
        image = cv2.imread(path)
        assert image is not None and image.ndim == 3 and min(image.shape[:2]) > 200


def test_cli_limit_end_to_end(demo_checkpoint, demo_dir, tmp_path):
    result = subprocess.run([sys.executable, 'evaluate.py', '--checkpoint', demo_checkpoint, '--data-dir', demo_dir,
                             '--limit', '50', '--out', str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    with open(tmp_path / evaluate.REPORT_FILE) as f:
        report = json.load(f)
    assert report['limit'] == 50 and [r['images'] for r in report['results']] == [50] * 4
    assert all('tta' not in r for r in report['results'])
    assert 'smile test' in result.stdout and 'wrote' in result.stdout


# ----------------------------------------------------------------------------- one-line errors

def test_missing_checkpoint(tmp_path):
    code, _, err = run_main(['--checkpoint', str(tmp_path / 'nowhere')])
    assert code == 2 and err == 'error: %s: checkpoint not found\n' % (tmp_path / 'nowhere')


def test_checkpoint_not_matching_the_model(demo_checkpoint, tmp_path):
    with open(os.path.join(demo_checkpoint, checkpoints.CONFIG_FILE)) as f:
        (tmp_path / checkpoints.CONFIG_FILE).write_text(f.read())
    np.savez(tmp_path / checkpoints.WEIGHTS_FILE, **{'trunk/conv1_1/weights': np.zeros((3, 3, 1, 8), np.float32)})
    code, _, err = run_main(['--checkpoint', str(tmp_path)])
    assert code == 2 and err.count('\n') == 1
    assert err.startswith('error: %s does not match this model' % (tmp_path / checkpoints.WEIGHTS_FILE))


def test_missing_data_names_the_prepare_command(demo_checkpoint, tmp_path):
    code, _, err = run_main(['--checkpoint', demo_checkpoint, '--data-dir', str(tmp_path)])
    assert code == 2 and err.count('\n') == 1
    assert str(tmp_path) in err and 'python prepare_data.py' in err


def test_unwritable_out_is_one_line(demo_checkpoint, demo_dir, tmp_path):
    blocker = tmp_path / 'file'
    blocker.write_text('not a folder')
    code, _, err = run_main(['--checkpoint', demo_checkpoint, '--data-dir', demo_dir, '--limit', '5',
                             '--out', str(blocker / 'report')])
    assert code == 2 and err.count('\n') == 1 and err.startswith('error: ') and '--out' in err


# ----------------------------------------------------------------------------- the shipped model, interruptions

def _snapshot(folder):
    return {name: open(os.path.join(folder, name), 'rb').read() for name in os.listdir(folder)}


@pytest.mark.slow
@pytest.mark.parametrize('named', [False, True], ids=['default', 'named'])
def test_shipped_model_folder_is_never_written(demo_dir, tmp_path, monkeypatch, named):
    shipped = str(tmp_path / 'pretrained')  # a copy stands in for it, so a failure cannot litter the real one
    shutil.copytree(checkpoints.PRETRAINED_DIR, shipped)
    monkeypatch.setattr(checkpoints, 'PRETRAINED_DIR', shipped)
    before = _snapshot(shipped)
    code, stdout, err = run_main((['--checkpoint', shipped] if named else []) + ['--data-dir', demo_dir, '--limit', '20'])
    assert code == 0, err
    assert 'checkpoint %s' % os.path.join(shipped, checkpoints.WEIGHTS_FILE) in stdout and 'smile test' in stdout
    assert stdout.splitlines()[-1] == 'report not written: %s holds the shipped model; pass --out DIR to save it' % shipped
    assert _snapshot(shipped) == before


def test_out_naming_the_shipped_model_folder_is_refused(tmp_path, monkeypatch):
    shipped = str(tmp_path / 'pretrained')
    shutil.copytree(checkpoints.PRETRAINED_DIR, shipped)
    monkeypatch.setattr(checkpoints, 'PRETRAINED_DIR', shipped)
    before = _snapshot(shipped)
    code, _, err = run_main(['--checkpoint', shipped, '--out', os.path.join(shipped, '.'), '--limit', '2',
                             '--data-dir', str(tmp_path / 'none')])
    assert code == 2 and err.count('\n') == 1 and _snapshot(shipped) == before


def test_a_report_killed_among_its_renames_is_named_and_written_again(demo_checkpoint, demo_dir, tmp_path):
    argv = ['--checkpoint', demo_checkpoint, '--data-dir', demo_dir, '--limit', '5', '--out', tmp_path]
    assert run_main([str(a) for a in argv])[0] == 0
    before = _snapshot(tmp_path)
    run_killed('evaluate.py', 'replace', 2, 'final', *(argv + ['--tta']))  # the new report and one PNG are in place
    after = {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path) if (tmp_path / name).is_file()}
    assert sum(after[name] != before[name] for name in before) == 2 and files.UNFINISHED in after
    code, stdout, err = run_main([str(a) for a in argv])
    assert code == 0, err
    assert ('%s: the run that was replacing it and the files written with it stopped half-way (listed in %s), so it '
            'may not match them; writing the whole report again' % (tmp_path / evaluate.REPORT_FILE,
                                                                    tmp_path / files.UNFINISHED)) in stdout.splitlines()
    assert sorted(os.listdir(tmp_path)) == sorted(before) and files.read_json(str(tmp_path / evaluate.REPORT_FILE))['tta'] is False


def test_ctrl_c_at_start_up_is_one_line(demo_checkpoint, tmp_path):
    result = run_interrupted('evaluate.py', 'import tensorflow', '--checkpoint', demo_checkpoint, '--out', tmp_path / 'out')
    assert_interrupted(result)
    assert os.listdir(tmp_path) == []


def test_ctrl_c_while_writing_the_report_leaves_the_earlier_one(demo_checkpoint, demo_dir, tmp_path):
    (tmp_path / evaluate.REPORT_FILE).write_text('the earlier report')
    # SIGINT once the new evaluation.json is written, before the PNGs are drawn
    result = run_interrupted('evaluate.py', 'files:write_json', '--checkpoint', demo_checkpoint, '--data-dir', demo_dir,
                             '--limit', '5', '--out', tmp_path)
    assert_interrupted(result)
    assert 'smile test' in result.stdout  # it was interrupted after the evaluation
    assert os.listdir(tmp_path) == [evaluate.REPORT_FILE]
    assert (tmp_path / evaluate.REPORT_FILE).read_text() == 'the earlier report'


def test_folders_of_a_killed_run_are_removed_by_the_next(demo_checkpoint, demo_dir, tmp_path):
    leftover = tmp_path / (evaluate.TEMP_PREFIX + 'a1b2')
    leftover.mkdir()
    (leftover / evaluate.REPORT_FILE).write_text('{"half": ')
    code, stdout, err = run_main(['--checkpoint', demo_checkpoint, '--data-dir', demo_dir, '--limit', '5',
                                  '--out', str(tmp_path)])
    assert code == 0, err
    assert 'removed 1 folder(s) left by an interrupted run: %s' % leftover in stdout.splitlines()
    assert sorted(os.listdir(tmp_path)) == sorted([evaluate.REPORT_FILE, evaluate.CURVES_FILE] +
                                                  [evaluate.PLOT_FILE % TASK_NAMES[t] for t in (SMILE, EMOTION, GENDER)])


def test_validation_scores_the_held_out_tenth_and_public_test(demo_checkpoint, demo_dir, tmp_path):
    code, stdout, stderr = run_main(['--checkpoint', demo_checkpoint, '--data-dir', demo_dir, '--validation',
                                     '--out', str(tmp_path)])
    assert code == 0, stderr
    with open(os.path.join(str(tmp_path), evaluate.REPORT_FILE)) as f:
        report = json.load(f)
    assert report['validation'] is True
    counts = {}
    for task, split in ((SMILE, 'train'), (GENDER, 'train'), (EMOTION, 'public_test')):
        labels = np.load(data_utils.split_path(demo_dir, task, split))['label']
        held = sum(round(0.1 * n) for n in np.bincount(labels)) if split == 'train' else len(labels)
        counts[(TASK_NAMES[task], 'public_test' if task == EMOTION else 'validation')] = held
    assert {(r['task'], r['split']): r['images'] for r in report['results']} == counts
    for (task, split), n in counts.items():
        assert any(line.startswith('%s %s' % (task, split)) and ' %d ' % n in line for line in stdout.splitlines())
