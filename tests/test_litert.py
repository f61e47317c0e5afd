"""export.py --tflite and litert_model.py: the shipped model's three .tflite exports against its session on
real faces, the .tflite files run through predict.py and evaluate.py, and every refusal in one line.

The real-data tests share one module fixture: the shared archives imported once, the three files
converted once (~40 s together); the refusals need no model and no data.
"""
import contextlib
import io
import json
import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest

import checkpoints
import data_utils
import evaluate
import export
import files
import litert_model
import predict
import tf_setup
from config import CLASS_NAMES, EMOTION, GENDER, SMILE, TASK_NAMES, TASKS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = 300  # faces of each test split compared with the session


def run(main, argv):
    """A command's main in-process -> (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as stop:  # argparse's refusals
            code = stop.code
    return code, out.getvalue(), err.getvalue()


def assert_one_line(code, err, *fragments):
    lines = err.strip().splitlines()
    assert code == 2 and lines and re.match(r'(\S+: )?error: ', lines[-1]), err  # argparse's name the program
    assert 'Traceback' not in err
    for fragment in fragments:
        assert fragment in lines[-1], (fragment, lines[-1])


@pytest.fixture(scope='module')
def real_dir(real_data_dir):
    return real_data_dir


@pytest.fixture(scope='module')
def exported(real_dir, tmp_path_factory):
    """{precision: (the .tflite file, what export.py printed)} of the shipped model, through the CLI."""
    out = str(tmp_path_factory.mktemp('tflite') / 'exported')
    code, printed, err = run(export.main, ['--checkpoint', checkpoints.PRETRAINED_DIR, '--tflite', 'float32',
                                           'float16', 'int8', '--data-dir', real_dir, '--out', out])
    assert code == 0, err
    lines = printed.splitlines()
    assert len(lines) == 3
    return {precision: (os.path.join(out, 'bknet_%s.tflite' % precision), line)
            for precision, line in zip(('float32', 'float16', 'int8'), lines)}


@pytest.fixture(scope='module')
def sample(real_dir):
    """The first SAMPLE faces of each test split, their labels and the session's probabilities."""
    sets = evaluate.load_test_sets(real_dir, limit=SAMPLE)
    faces = np.concatenate([images for images, _ in sets.values()])
    tf = tf_setup.import_tf()
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as session:
        net, _ = litert_model.load_model(session, checkpoints.PRETRAINED_DIR)
        expected = net.predict(faces)
    return sets, faces, expected


@pytest.mark.slow
def test_each_export_prints_its_size_within_the_issue_s_limits(exported):
    limits = {'float32': 16e6, 'float16': 7.6e6, 'int8': 4e6}
    for precision, (path, printed) in exported.items():
        size = os.path.getsize(path)
        assert size <= limits[precision], (precision, size)
        assert re.search(r'to %s: %s, %.2f MB' % (re.escape(path), precision, size / 1e6), printed), printed
    assert os.path.getsize(exported['float16'][0]) < 0.51 * os.path.getsize(exported['float32'][0])


@pytest.mark.slow
def test_int8_is_calibrated_on_training_faces_alone(exported, real_dir):
    """The calibration faces it printed, each found in its task's train split (never a test split)."""
    counts = {t: int(n) for t, n in re.findall(r'(\w+) (\d+)[,)]', exported['int8'][1].split('calibrated on')[1])}
    total = int(re.search(r'calibrated on (\d+) faces', exported['int8'][1]).group(1))
    assert set(counts) == set(TASK_NAMES.values()) and sum(counts.values()) == total
    faces = export.calibration_faces(real_dir, TASKS)
    for task in TASKS:
        assert len(faces[task]) == counts[TASK_NAMES[task]] > 200
        train = np.load(data_utils.split_path(real_dir, task, 'train'))['image']
        seen = {face.tobytes() for face in train}
        assert all(face.tobytes() in seen for face in faces[task])


@pytest.mark.slow
@pytest.mark.parametrize('precision, atol', [('float32', 1e-4), ('float16', 1e-2)])
def test_float_exports_match_the_session_on_real_faces(exported, sample, precision, atol):
    _, faces, expected = sample
    got = litert_model.LiteRTModel(exported[precision][0]).predict(faces)
    assert sorted(got) == sorted(expected)
    for task in TASKS:
        assert got[task].shape == (len(faces), len(CLASS_NAMES[task]))
        np.testing.assert_allclose(got[task], expected[task], atol=atol, rtol=0)
        assert np.ptp(got[task][:, 0]) > 0.5  # real answers, not a constant


@pytest.mark.slow
def test_int8_labels_agree_with_the_session_on_97_percent_of_real_faces(exported, sample):
    sets, faces, expected = sample
    got = litert_model.LiteRTModel(exported['int8'][0]).predict(faces)
    start = 0
    for (task, split), (images, _) in sets.items():  # each test split on its own head
        rows = slice(start, start + len(images))
        start += len(images)
        agreement = np.mean(got[task][rows].argmax(1) == expected[task][rows].argmax(1))
        assert agreement >= 0.97, (TASK_NAMES[task], split, agreement)


@pytest.mark.slow
def test_views_average_the_mirrored_faces_as_the_session_does(exported, sample):
    _, faces, _ = sample
    net = litert_model.LiteRTModel(exported['float32'][0])
    both = net.predict(faces[:50], views=2)
    plain, mirrored = net.predict(faces[:50]), net.predict(np.ascontiguousarray(faces[:50, :, ::-1]))
    for task in TASKS:
        np.testing.assert_allclose(both[task], (plain[task] + mirrored[task]) / 2, atol=1e-6)


@pytest.mark.slow
def test_evaluate_scores_a_tflite_file(exported, real_dir, tmp_path):
    path = exported['int8'][0]
    code, printed, err = run(evaluate.main, ['--checkpoint', path, '--data-dir', real_dir, '--limit', 100,
                                             '--out', tmp_path])
    assert code == 0, err
    report = files.read_json(str(tmp_path / evaluate.REPORT_FILE))
    sets = evaluate.load_test_sets(real_dir, limit=100)
    probs = litert_model.LiteRTModel(path).predict(np.concatenate([images for images, _ in sets.values()]))
    rows, start = {}, 0
    for key, (_, labels) in sets.items():
        rows[key] = slice(start, start + len(labels))
        start += len(labels)
    assert len(report['results']) == len(sets) == 4
    for result in report['results']:
        task = {name: t for t, name in TASK_NAMES.items()}[result['task']]
        labels = sets[(task, result['split'])][1]
        accuracy = np.mean(probs[task][rows[(task, result['split'])]].argmax(1) == labels)
        assert result['plain']['accuracy'] == pytest.approx(accuracy)
    assert report['checkpoint'] == path


@pytest.mark.slow
def test_predict_with_litert_gives_the_session_s_answer(exported, tmp_path):
    from test_predict import compose_faces  # here: it loads TensorFlow and its own fixtures' module
    picture = str(tmp_path / 'faces.png')
    cv2.imwrite(picture, compose_faces()[0])
    answers = {}
    for engine, checkpoint in (('tf', checkpoints.PRETRAINED_DIR), ('litert', exported['float32'][0])):
        code, printed, err = run(predict.main, [picture, '--json', '--engine', engine, '--checkpoint', checkpoint])
        assert code == 0, err
        answers[engine] = json.loads(printed)[0]['faces']
    assert len(answers['tf']) >= 2
    for session_face, lite_face in zip(answers['tf'], answers['litert']):
        assert session_face['box'] == lite_face['box']
        for task in (SMILE, EMOTION, GENDER):
            name = TASK_NAMES[task]
            assert session_face[name]['label'] == lite_face[name]['label']
            for c in CLASS_NAMES[task]:  # printed to 4 decimals
                assert abs(session_face[name]['probabilities'][c] - lite_face[name]['probabilities'][c]) <= 2e-4


@pytest.mark.slow
def test_serve_answers_with_litert_what_predict_does(exported, tmp_path):
    from fastapi.testclient import TestClient

    import serve
    from test_predict import compose_faces
    picture = str(tmp_path / 'faces.png')
    cv2.imwrite(picture, compose_faces()[0])
    code, printed, err = run(predict.main, [picture, '--json', '--checkpoint', exported['int8'][0]])
    assert code == 0, err
    analyzer = serve.Analyzer(predict.Predictor(None, exported['int8'][0]))
    try:
        with TestClient(serve.create_app(analyzer)) as client, open(picture, 'rb') as f:
            answer = client.post('/analyze', content=f.read(), headers={'Content-Type': 'image/png'})
            info = client.get('/info').json()
    finally:
        analyzer.close()
    assert answer.status_code == 200, answer.text
    assert answer.json()['faces'] == json.loads(printed)[0]['faces'] != []
    assert info['checkpoint'] == exported['int8'][0]


@pytest.mark.slow
def test_the_readme_example_runs_with_litert_alone(exported):
    """README's example, run as it is written (the file's path swapped in) in a Python of its own: no project
    module, no TensorFlow, and the probabilities of litert_model."""
    with open(os.path.join(ROOT, 'README.md')) as f:
        example = re.search(r'```python\n(.*?ai_edge_litert.*?)```', f.read(), re.S).group(1)
    assert len(example.strip().splitlines()) <= 6
    assert re.findall(r'^(?:import|from) (\S+)', example, re.M) == ['numpy', 'ai_edge_litert.interpreter']
    check = ('\nimport json, sys\nprint(json.dumps({"tensorflow": "tensorflow" in sys.modules, "faces": faces.tolist(), '
             '"probs": {k: v.tolist() for k, v in probs.items()}}))')
    result = subprocess.run([sys.executable, '-c', example.replace('exported/bknet_int8.tflite', exported['int8'][0])
                             + check], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert got['tensorflow'] is False
    expected = litert_model.LiteRTModel(exported['int8'][0]).predict(np.array(got['faces'], np.uint8))
    assert sorted(got['probs']) == sorted(TASK_NAMES[t] for t in TASKS)
    for task in TASKS:
        np.testing.assert_allclose(got['probs'][TASK_NAMES[task]], expected[task], atol=1e-6)


# ----------------------------------------------------------------------------- refusals (no model, no data)

def test_a_bad_tflite_value_is_refused_and_nothing_written(tmp_path):
    code, _, err = run(export.main, ['--tflite', 'int4', '--out', tmp_path / 'out'])
    assert_one_line(code, err, "argument --tflite: invalid choice: 'int4'", 'float32', 'float16', 'int8')
    assert os.listdir(str(tmp_path)) == []


def test_int8_without_calibration_data_is_one_line_naming_the_missing_file(tmp_path):
    empty = tmp_path / 'no_data'
    empty.mkdir()
    code, _, err = run(export.main, ['--checkpoint', checkpoints.PRETRAINED_DIR, '--tflite', 'int8',
                                     '--data-dir', empty, '--out', tmp_path / 'out'])
    assert_one_line(code, err, 'int8 needs validation faces', str(empty / 'smile_data' / 'train.npy'), 'file not found')
    assert sorted(os.listdir(str(tmp_path))) == ['no_data']  # no export folder, no hidden build folder left


def test_an_existing_tflite_file_is_kept_without_force_and_no_other_written(tmp_path):
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'bknet_float16.tflite').write_bytes(b'an earlier export')
    code, _, err = run(export.main, ['--checkpoint', checkpoints.PRETRAINED_DIR, '--tflite', 'float32', 'float16',
                                     '--out', out])
    assert_one_line(code, err, str(out / 'bknet_float16.tflite'), 'already exists; pass --force')
    assert (out / 'bknet_float16.tflite').read_bytes() == b'an earlier export'
    assert sorted(os.listdir(str(tmp_path))) == ['out'] and os.listdir(str(out)) == ['bknet_float16.tflite']


@pytest.fixture
def truncated(tmp_path):
    """The first 64 bytes of a .tflite file: its FlatBuffer header ('TFL3'), the rest cut off."""
    path = tmp_path / 'cut.tflite'
    path.write_bytes(b'\x1c\x00\x00\x00TFL3' + bytes(56))
    return str(path)


def test_a_truncated_tflite_file_is_one_line_in_evaluate_and_predict(truncated, tmp_path):
    picture = tmp_path / 'blank.png'
    cv2.imwrite(str(picture), np.full((60, 60, 3), 128, np.uint8))
    for main, argv in ((evaluate.main, ['--checkpoint', truncated, '--data-dir', tmp_path / 'none', '--out', tmp_path]),
                       (predict.main, [picture, '--checkpoint', truncated]),
                       (predict.main, [picture, '--engine', 'litert', '--checkpoint', truncated])):
        code, _, err = run(main, argv)
        assert_one_line(code, err, truncated, 'not a readable .tflite model')
    assert sorted(os.listdir(str(tmp_path))) == ['blank.png', 'cut.tflite']


def test_serve_refuses_an_engine_that_does_not_fit_the_file_in_one_line(truncated):
    import serve
    code, _, err = run(serve.main, ['--engine', 'litert', '--checkpoint', checkpoints.PRETRAINED_DIR])
    assert_one_line(code, err, '--engine litert runs a .tflite file')
    code, _, err = run(serve.main, ['--checkpoint', truncated])
    assert_one_line(code, err, truncated, 'not a readable .tflite model')


def test_an_engine_that_does_not_fit_the_file_is_one_line(truncated, tmp_path):
    picture = tmp_path / 'blank.png'
    cv2.imwrite(str(picture), np.full((60, 60, 3), 128, np.uint8))
    code, _, err = run(predict.main, [picture, '--engine', 'litert', '--checkpoint', checkpoints.PRETRAINED_DIR])
    assert_one_line(code, err, '--engine litert runs a .tflite file', 'export.py --tflite')
    code, _, err = run(predict.main, [picture, '--engine', 'tf', '--checkpoint', truncated])
    assert_one_line(code, err, truncated, '--engine tf runs a checkpoint')
