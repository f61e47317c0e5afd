"""export.py: a SavedModel of the demo checkpoint, written by the CLI and loaded with plain TF2 eager code."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import checkpoints
import data_utils
import export
import files
import model
import tf_setup
from config import CLASS_NAMES, EMOTION, GENDER, SMILE, TASK_NAMES, TASKS
from conftest import assert_interrupted, run_interrupted, run_killed  # SIGINT / SIGKILL at a chosen moment

tf1 = tf_setup.import_tf()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def exported(demo_checkpoint, tmp_path_factory):
    out = str(tmp_path_factory.mktemp('export') / 'bknet')
    result = subprocess.run([sys.executable, 'export.py', '--checkpoint', demo_checkpoint, '--out', out],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope='module')
def faces(demo_dir):
    """Real demo faces of every task plus two extremes (black, white)."""
    parts = [data_utils.load_split(data_utils.split_path(demo_dir, t, s))[0][:20]
             for t, s in ((SMILE, 'test'), (EMOTION, 'private_test'), (GENDER, 'test'))]
    return np.concatenate(parts + [np.zeros((1, 48, 48), np.uint8), np.full((1, 48, 48), 255, np.uint8)])


def test_savedmodel_matches_the_session_within_1e_5(exported, demo_checkpoint, faces):
    import tensorflow as tf
    assert tf.executing_eagerly()
    serve = tf.saved_model.load(exported).signatures['serving_default']
    got = serve(faces=tf.constant(faces))
    with tf1.Graph().as_default() as graph, tf1.Session(graph=graph) as session:
        net, _ = model.load_model(session, demo_checkpoint)
        expected = net.predict(faces)
    assert sorted(got) == sorted(TASK_NAMES.values())
    for task in TASKS:
        p = got[TASK_NAMES[task]].numpy()
        assert p.shape == (len(faces), len(CLASS_NAMES[task]))
        np.testing.assert_allclose(p, expected[task], atol=1e-5, rtol=0)
        assert np.ptp(p[:, 0]) > 0.1  # the faces get different answers: real weights, not a constant


def test_an_18_view_export_averages_inside_the_graph_as_predict_does(demo_checkpoint, faces, tmp_path):
    import tensorflow as tf
    out = str(tmp_path / 'tta')
    export.export(demo_checkpoint, out, views=18)
    got = tf.saved_model.load(out).signatures['serving_default'](faces=tf.constant(faces))
    with tf1.Graph().as_default() as graph, tf1.Session(graph=graph) as session:
        net, _ = model.load_model(session, demo_checkpoint)
        expected, plain = net.predict(faces, views=18), net.predict(faces)
    for task in TASKS:
        np.testing.assert_allclose(got[TASK_NAMES[task]].numpy(), expected[task], atol=1e-5, rtol=0)
    assert np.abs(expected[EMOTION] - plain[EMOTION]).max() > 1e-3  # the views did change the answer


def test_signature_and_class_names(exported):
    import tensorflow as tf
    serve = tf.saved_model.load(exported).signatures['serving_default']
    spec = serve.structured_input_signature[1]['faces']
    assert spec.dtype == tf.uint8 and spec.shape.as_list() == [None, 48, 48]
    with open(os.path.join(exported, 'assets.extra', 'class_names.json')) as f:
        assert json.load(f) == {TASK_NAMES[t]: list(CLASS_NAMES[t]) for t in TASKS}


def test_refuses_to_overwrite_without_force(demo_checkpoint, tmp_path, capsys):
    out = tmp_path / 'bknet'
    out.mkdir()
    (out / 'keep.txt').write_text('mine')
    assert export.main(['--checkpoint', demo_checkpoint, '--out', str(out)]) == 2
    assert capsys.readouterr().err == 'error: %s already exists; pass --force to replace it\n' % out
    assert (out / 'keep.txt').read_text() == 'mine'

    assert export.main(['--checkpoint', demo_checkpoint, '--out', str(out), '--force']) == 0
    assert sorted(os.listdir(out)) == ['assets.extra', 'saved_model.pb', 'variables']
    assert os.listdir(tmp_path) == ['bknet']  # the temporary build folder is gone


def test_missing_checkpoint_is_one_line(tmp_path, capsys):
    assert export.main(['--checkpoint', str(tmp_path / 'nowhere'), '--out', str(tmp_path / 'out')]) == 2
    assert capsys.readouterr().err == 'error: %s: checkpoint not found\n' % (tmp_path / 'nowhere')
    assert not os.path.exists(tmp_path / 'out')


def test_weights_export_is_small_float16_and_predicts_like_the_checkpoint(demo_checkpoint, faces, tmp_path):
    out = str(tmp_path / 'pretrained')
    assert export.main(['--checkpoint', demo_checkpoint, '--weights', '--out', out]) == 0
    assert sorted(os.listdir(out)) == ['config.json', 'weights.npz']
    assert os.path.getsize(os.path.join(out, 'weights.npz')) < 16 * 2 ** 20
    with np.load(os.path.join(out, 'weights.npz')) as arrays:
        assert {arrays[k].dtype for k in arrays.files} == {np.dtype(np.float16)}
        assert not any('Momentum' in k or 'global_step' in k for k in arrays.files)  # no optimizer state
    saved = checkpoints.load_config(out)
    assert saved['data_dir'] == 'data' and saved['epochs'] == checkpoints.load_config(demo_checkpoint)['epochs']
    predictions = []
    for source in (demo_checkpoint, out):
        with tf1.Graph().as_default() as graph, tf1.Session(graph=graph) as session:
            net, _ = model.load_model(session, source)
            predictions.append(net.predict(faces))
    for task in TASKS:
        np.testing.assert_allclose(predictions[1][task], predictions[0][task], atol=5e-3, rtol=0)
    assert export.main(['--checkpoint', demo_checkpoint, '--weights', '--out', out]) == 2  # no silent overwrite


def test_weights_averaged_with_another_model_are_the_mean_of_both(demo_checkpoint, tmp_path, capsys):
    own, soup = str(tmp_path / 'own'), str(tmp_path / 'soup')
    assert export.main(['--checkpoint', demo_checkpoint, '--weights', '--out', own]) == 0
    assert export.main(['--checkpoint', demo_checkpoint, '--average-with', checkpoints.PRETRAINED_DIR, '--weights',
                        '--out', soup]) == 0
    with np.load(os.path.join(own, checkpoints.WEIGHTS_FILE)) as a, \
            np.load(os.path.join(checkpoints.PRETRAINED_DIR, checkpoints.WEIGHTS_FILE)) as b, \
            np.load(os.path.join(soup, checkpoints.WEIGHTS_FILE)) as mean:
        assert sorted(mean.files) == sorted(a.files) == sorted(b.files)
        for name in a.files:  # float16 files: each value within the rounding of the larger of its two terms
            x, y = a[name].astype(np.float64), b[name].astype(np.float64)
            error = np.abs(mean[name] - (x + y) / 2)
            assert (error <= 2e-3 * np.maximum(np.abs(x), np.abs(y)) + 1e-7).all(), (name, error.max())
    assert checkpoints.load_config(soup)['epochs'] == checkpoints.load_config(demo_checkpoint)['epochs']  # --checkpoint's config

    # A network with other heads cannot be averaged in: one line, nothing written.
    emotion_only = tmp_path / 'emotion_only'
    emotion_only.mkdir()
    with np.load(os.path.join(checkpoints.PRETRAINED_DIR, checkpoints.WEIGHTS_FILE)) as b:
        np.savez(str(emotion_only / checkpoints.WEIGHTS_FILE), **{k: b[k] for k in b.files if 'head_' not in k or 'emotion' in k})
    files.write_json(str(emotion_only / checkpoints.CONFIG_FILE), dict(tasks=['emotion']))
    capsys.readouterr()
    out = str(tmp_path / 'mixed')
    assert export.main(['--checkpoint', demo_checkpoint, '--average-with', str(emotion_only), '--weights',
                        '--out', out]) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: %s' % emotion_only) and 'networks differ' in err and err.count('\n') == 1, err
    assert not os.path.exists(out)
    assert export.main(['--checkpoint', demo_checkpoint, '--average-with', own, '--out', out]) == 2
    assert capsys.readouterr().err == 'error: --average-with needs --weights\n'


@pytest.mark.parametrize('existing', [checkpoints.CONFIG_FILE, checkpoints.WEIGHTS_FILE])
def test_weights_export_refuses_an_out_holding_either_file(demo_checkpoint, tmp_path, capsys, existing):
    out = tmp_path / 'shipped'
    out.mkdir()
    (out / existing).write_text('mine')
    assert export.main(['--checkpoint', demo_checkpoint, '--weights', '--out', str(out)]) == 2
    assert capsys.readouterr().err == 'error: %s already exists; pass --force to replace it\n' % (out / existing)
    assert os.listdir(out) == [existing] and (out / existing).read_text() == 'mine'

    assert export.main(['--checkpoint', demo_checkpoint, '--weights', '--out', str(out), '--force']) == 0
    assert sorted(os.listdir(out)) == [checkpoints.CONFIG_FILE, checkpoints.WEIGHTS_FILE]
    assert checkpoints.load_config(str(out))['checkpoint_dir'] == str(out)  # the file was replaced, not kept
    assert sorted(os.listdir(tmp_path)) == ['shipped']  # no build folder left beside it


def test_ctrl_c_at_start_up_is_one_line(demo_checkpoint, tmp_path):
    result = run_interrupted('export.py', 'import tensorflow', '--checkpoint', demo_checkpoint, '--out', tmp_path / 'out')
    assert_interrupted(result)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize('weights', [False, True], ids=['savedmodel', 'weights'])
def test_ctrl_c_during_an_export_leaves_the_old_export_and_no_build_folder(demo_checkpoint, tmp_path, weights):
    out = tmp_path / 'bknet'
    out.mkdir()
    (out / 'keep.txt').write_text('the earlier export')
    # SIGINT once the new export is complete in its build folder, just before it would be moved into place
    when = 'files:write_json' if weights else 'json:dump'
    result = run_interrupted('export.py', when, '--checkpoint', demo_checkpoint, '--out', out, '--force',
                             *(['--weights'] if weights else []))
    assert_interrupted(result)
    assert os.listdir(tmp_path) == ['bknet'] and os.listdir(out) == ['keep.txt']


def test_build_folders_of_a_killed_export_are_removed_by_the_next(demo_checkpoint, tmp_path, capsys):
    leftover = tmp_path / (export.TEMP_PREFIX + 'x1y2')
    (leftover / 'saved_model' / 'variables').mkdir(parents=True)
    out = tmp_path / 'pretrained'
    assert export.main(['--checkpoint', demo_checkpoint, '--weights', '--out', str(out)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == 'removed 1 folder(s) left by an interrupted export: %s' % leftover
    assert os.listdir(tmp_path) == ['pretrained']


@pytest.mark.slow
def test_a_replaced_export_killed_between_its_renames_is_put_back_not_deleted(tmp_path, capsys):
    out = tmp_path / 'bknet'
    assert export.main(['--checkpoint', checkpoints.PRETRAINED_DIR, '--out', str(out)]) == 0
    before = (out / 'saved_model.pb').read_bytes()
    # SIGKILL once the old export has moved aside, before the new one moves in: no export at --out
    run_killed('export.py', 'rename', 1, 'any', '--checkpoint', checkpoints.PRETRAINED_DIR, '--out', out, '--force')
    assert not out.exists() and (tmp_path / '.tmp-old-bknet' / 'saved_model.pb').read_bytes() == before
    capsys.readouterr()
    # The next export beside it, even one that fails at once, puts the old export back first.
    assert export.main(['--checkpoint', str(tmp_path / 'missing'), '--out', str(tmp_path / 'other')]) == 2
    assert 'put back %s from %s' % (out, tmp_path / '.tmp-old-bknet') in capsys.readouterr().out
    assert (out / 'saved_model.pb').read_bytes() == before and sorted(os.listdir(tmp_path)) == ['bknet']


@pytest.mark.slow
def test_a_weights_export_killed_between_its_two_files_is_refused_until_exported_again(tmp_path, capsys):
    import predict
    out = tmp_path / 'shipped'
    assert export.main(['--checkpoint', checkpoints.PRETRAINED_DIR, '--weights', '--out', str(out)]) == 0
    cfg = files.read_json(str(out / checkpoints.CONFIG_FILE))
    files.write_json(str(out / checkpoints.CONFIG_FILE), dict(cfg, gender_logit_bias=1.0))  # an earlier export's
    run_killed('export.py', 'replace', 1, 'final', '--checkpoint', checkpoints.PRETRAINED_DIR, '--weights',
               '--out', out, '--force')  # the new weights.npz is in place, config.json is the earlier one
    assert files.read_json(str(out / checkpoints.CONFIG_FILE))['gender_logit_bias'] == 1.0
    expected = ('%s: the run that was replacing it and the files written with it stopped half-way (listed in %s), so '
                'it may not match them; export the model again' % (out / checkpoints.WEIGHTS_FILE, out / files.UNFINISHED))
    with tf1.Graph().as_default() as graph, tf1.Session(graph=graph) as session:
        with pytest.raises(checkpoints.CheckpointError) as info:
            model.load_model(session, str(out))
    assert str(info.value) == expected
    capsys.readouterr()
    assert predict.main([_a_face(tmp_path), '--checkpoint', str(out)]) == 2
    assert capsys.readouterr().err == 'error: %s\n' % expected
    assert export.main(['--checkpoint', checkpoints.PRETRAINED_DIR, '--weights', '--out', str(out), '--force']) == 0
    assert sorted(os.listdir(out)) == [checkpoints.CONFIG_FILE, checkpoints.WEIGHTS_FILE]
    assert files.read_json(str(out / checkpoints.CONFIG_FILE)) == cfg


def _a_face(folder):
    import cv2
    import skimage.data
    path = str(folder / 'astronaut.png')
    cv2.imwrite(path, skimage.data.astronaut()[..., ::-1])
    return path


@pytest.mark.slow
def test_a_full_disk_during_a_savedmodel_export_is_one_line(tmp_path, capsys, monkeypatch):
    def disk_full(self, *args, **kwargs):
        raise tf1.errors.ResourceExhaustedError(None, None, 'saved_model.pb; No space left on device')
    monkeypatch.setattr(tf1.saved_model.Builder, 'save', disk_full)
    out = tmp_path / 'bknet'
    assert export.main(['--checkpoint', checkpoints.PRETRAINED_DIR, '--out', str(out)]) == 2
    assert capsys.readouterr().err == 'error: %s: cannot write the export (saved_model.pb; No space left on device)\n' % out
    assert os.listdir(tmp_path) == []
