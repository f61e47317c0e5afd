"""The shipped model in pretrained/: offline, small, reproduces its published accuracy, reads a real photo."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from matplotlib import cbook

import checkpoints
import config
import conftest
import evaluate
import model
import tf_setup

tf = tf_setup.import_tf()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PUBLISHED = os.path.join(ROOT, 'results', 'evaluation.json')  # the README's results table


@pytest.mark.slow
def test_weights_are_small_float16_and_load(tmp_path):
    weights = os.path.join(checkpoints.PRETRAINED_DIR, checkpoints.WEIGHTS_FILE)
    assert os.path.getsize(weights) <= 16 * 2 ** 20
    with np.load(weights) as arrays:
        assert {arrays[k].dtype for k in arrays.files} == {np.dtype(np.float16)}
    assert checkpoints.default_checkpoint() == checkpoints.PRETRAINED_DIR
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as session:
        _, path = model.load_model(session, checkpoints.default_checkpoint())
    assert path == weights


@pytest.mark.slow
def test_reproduces_the_published_accuracy(real_data_dir):
    """Every split's single-view accuracy, and the headline test-time average (FER-2013 PrivateTest);
    the other splits' averages cost 3 more minutes of 18 network passes a face and run the same code."""
    data_dir = real_data_dir
    with open(PUBLISHED) as f:
        published = json.load(f)
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as session:
        net, _ = model.load_model(session, checkpoints.PRETRAINED_DIR)
        report = evaluate.evaluate(net, data_dir)
        images, labels = evaluate.load_test_sets(data_dir, tasks=(config.EMOTION,))[(config.EMOTION, 'private_test')]
        averaged = net.predict(images, views=published.get('tta_views') or 2)[config.EMOTION]
    got = {(r['task'], r['split']): r for r in report['results']}
    assert len(got) == len(published['results']) == 4
    expected = {(r['task'], r['split']): r for r in published['results']}
    for key, result in got.items():
        assert result['images'] == expected[key]['images']
        # one face in a thousand may flip where two classes are nearly tied on another CPU
        assert result['plain']['accuracy'] == pytest.approx(expected[key]['plain']['accuracy'], abs=1e-3)
    tta = np.mean(averaged.argmax(1) == labels)  # plain NumPy, not evaluate's own scoring
    assert tta == pytest.approx(expected[('emotion', 'private_test')]['tta']['accuracy'], abs=1e-3)
    assert got[('emotion', 'private_test')]['plain']['accuracy'] > 0.5  # far above the 0.25 majority class


@pytest.mark.parametrize('archive, task, split, per_class, at_least', [
    ('genki4k.npz', config.SMILE, 'test', 10, 17), ('fer2013.npz', config.EMOTION, 'PrivateTest', 3, 10),
    ('gender.npz', config.GENDER, 'test', 10, 16)])
@pytest.mark.slow
def test_predicts_the_right_labels_on_a_few_real_faces(shared_data_dir, archive, task, split, per_class, at_least):
    """predict.py's path for cropped faces (uint8 crops -> one batch -> described labels) on real test faces.

    The first faces of each class in archive order (no choosing): 20 faces for smile and gender, 21 for
    emotion, where a constant guess gets 10, 10 and 3 right; the shipped model gets 20, 19 and 11.
    """
    import predict
    with np.load(os.path.join(shared_data_dir, archive), allow_pickle=False) as arrays:
        in_split = arrays['split'] == list(arrays['split_names']).index(split)
        chosen = np.concatenate([np.flatnonzero(in_split & (arrays['labels'] == c))[:per_class]
                                 for c in range(config.NUM_CLASSES[task])])
        faces, labels = arrays['images'][chosen], arrays['labels'][chosen]
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as session:
        probabilities = predict.Predictor(session, checkpoints.PRETRAINED_DIR).net.predict(faces)
    described = [predict.describe((0, 0, 48, 48), {t: p[i] for t, p in probabilities.items()})
                 for i in range(len(faces))]
    names = config.CLASS_NAMES[task]
    right = sum(face[config.TASK_NAMES[task]]['label'] == names[label] for face, label in zip(described, labels))
    assert len(faces) == per_class * len(names) and right >= at_least, (right, len(faces))


@pytest.mark.slow
def test_predict_reads_a_real_photo_with_no_flags(tmp_path):
    """predict.py on a fresh clone: the pretrained model and a real portrait (Grace Hopper), no flags."""
    photo = str(tmp_path / 'portrait.jpg')
    import cv2
    cv2.imwrite(photo, cv2.imread(cbook.get_sample_data('grace_hopper.jpg', asfileobj=False)))
    result = subprocess.run([sys.executable, 'predict.py', photo, '--json'], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    (picture,) = json.loads(result.stdout)
    (face,) = picture['faces']
    assert face['box'][2] > 100  # the portrait's face, not a small false detection
    for task in config.TASKS:
        name = config.TASK_NAMES[task]
        probabilities = face[name]['probabilities']
        assert list(probabilities) == list(config.CLASS_NAMES[task])
        assert sum(probabilities.values()) == pytest.approx(1.0, abs=2e-3)
        assert face[name]['label'] == max(probabilities, key=probabilities.get)


# ----------------------------------------------------------------------------- the real data's fixture

@pytest.mark.parametrize('ci', [None, 'true'])
def test_shared_data_dir_is_the_folder_holding_every_archive(tmp_path, monkeypatch, ci):
    for name in conftest.SHARED_ARCHIVES:
        (tmp_path / name).write_bytes(b'PK')
    if ci is None:
        monkeypatch.delenv('CI', raising=False)
    else:
        monkeypatch.setenv('CI', ci)
    assert conftest.require_shared_data(str(tmp_path), os.environ) == str(tmp_path)


@pytest.mark.parametrize('ci', ['true', 'True', '1', 'yes'])
def test_a_missing_archive_fails_under_ci(tmp_path, monkeypatch, ci):
    (tmp_path / 'genki4k.npz').write_bytes(b'PK')
    (tmp_path / 'gender.npz').mkdir()  # a folder of that name is no archive
    monkeypatch.setenv('CI', ci)
    with pytest.raises(pytest.fail.Exception) as failed:
        conftest.require_shared_data(str(tmp_path), os.environ)
    assert str(failed.value) == ('CI is set, so the real-data tests must run: real data archives not found: '
                                 'fer2013.npz, gender.npz missing from %s (they are never in the repo; see '
                                 'PROVENANCE.md of the shared data folder)' % tmp_path)


@pytest.mark.parametrize('ci', [None, '', 'false', '0'])
def test_a_missing_archive_skips_outside_ci(tmp_path, monkeypatch, ci):
    if ci is None:
        monkeypatch.delenv('CI', raising=False)
    else:
        monkeypatch.setenv('CI', ci)
    with pytest.raises(pytest.skip.Exception) as skipped:
        conftest.require_shared_data(str(tmp_path / 'absent'), os.environ)
    assert str(skipped.value).startswith('real data archives not found: genki4k.npz, fer2013.npz, gender.npz '
                                         'missing from %s ' % (tmp_path / 'absent'))
