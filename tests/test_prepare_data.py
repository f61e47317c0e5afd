"""prepare_data on single files and its command line: the FER-2013 csv and .npz archives, the CLI's
refusals, --force, Ctrl-C and the temp files of a killed run, the demo set, and the real archives.

GENKI-4K, IMDB-WIKI and the course's folder are test_import_folders.py's.
"""
import collections
import gzip
import os
import shutil
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

import data_provider
import data_utils
import prepare_data
from config import EMOTION, GENDER, SMILE, TASKS
from conftest import (
    ROOT,
    assert_interrupted,
    assert_refused,
    handout_all_data_cell,
    npy_files,
    read_split,
    run_interrupted,
    run_killed,
    run_prepare_data,
    smile_npz,
)

# ----------------------------------------------------------------------------- FER-2013 csv

FER_HEADER = 'emotion,pixels,Usage'


@pytest.fixture(scope='module')
def fer_rows():
    """(label, 48x48 uint8 pixels, Usage) rows: 8 Training, 4 PublicTest, 3 PrivateTest."""
    rng = np.random.RandomState(0)
    spec = [(0, 'Training'), (1, 'Training'), (2, 'Training'), (3, 'Training'), (4, 'Training'),
            (5, 'PublicTest'), (6, 'Training'), (3, 'Training'), (3, 'PublicTest'),
            (1, 'PrivateTest'), (6, 'PublicTest'), (2, 'PrivateTest'), (0, 'PublicTest'),
            (5, 'Training'), (4, 'PrivateTest')]
    return [(label, rng.randint(0, 256, (48, 48)).astype(np.uint8), usage) for label, usage in spec]


def fer_lines(rows, header=FER_HEADER):
    return [header] + ['%d,%s,%s' % (label, ' '.join(map(str, px.ravel())), usage) for label, px, usage in rows]


def write_lines(path, lines, gz=False):
    data = ('\n'.join(lines) + '\n').encode('utf-8')
    with (gzip.open(path, 'wb') if gz else open(path, 'wb')) as f:
        f.write(data)
    return str(path)


@pytest.mark.parametrize('gz', [False, True], ids=['csv', 'csv.gz'])
def test_fer2013_import(tmp_path, fer_rows, capsys, gz):
    csv = write_lines(tmp_path / ('fer2013.csv.gz' if gz else 'fer2013.csv'), fer_lines(fer_rows), gz=gz)
    out = tmp_path / 'data'
    code, stdout, _ = run_prepare_data(['--fer2013', csv, '--data-dir', out], capsys)
    assert code == 0
    assert npy_files(str(out)) == ['emotion_data2/private_test.npy', 'emotion_data2/public_test.npy',
                                   'emotion_data2/train.npy']
    for usage, split in prepare_data.FER_USAGE.items():
        rows = [r for r in fer_rows if r[2] == usage]
        images, labels = read_split(out, EMOTION, split)
        assert labels.tolist() == [r[0] for r in rows]  # file order kept
        np.testing.assert_array_equal(images, np.stack([r[1] for r in rows]))
    assert [len(read_split(out, EMOTION, s)[1]) for s in ('train', 'public_test', 'private_test')] == [8, 4, 3]
    assert 'train.npy: 8 images (angry 1, disgust 1, fear 1, happy 2, sad 1, surprise 1, neutral 1)' in stdout


def test_fer2013_gz_and_plain_give_identical_files(tmp_path, fer_rows):
    lines = fer_lines(fer_rows)
    prepare_data.import_fer2013(write_lines(tmp_path / 'a.csv', lines), str(tmp_path / 'plain'))
    prepare_data.import_fer2013(write_lines(tmp_path / 'a.csv.gz', lines, gz=True), str(tmp_path / 'gz'))
    for split in ('train', 'public_test', 'private_test'):
        a = data_utils.split_path(str(tmp_path / 'plain'), EMOTION, split)
        b = data_utils.split_path(str(tmp_path / 'gz'), EMOTION, split)
        assert open(a, 'rb').read() == open(b, 'rb').read()


def _replace_pixel(line, i, value):
    label, pixels, usage = line.split(',')
    values = pixels.split()
    values[i] = value
    return ','.join([label, ' '.join(values), usage])


FER_FAULTS = {  # name -> (edit of the 5th data row = line 6, expected message fragment)
    'short pixel string': (lambda line: line.rsplit(' ', 1)[0] + ',' + line.rsplit(',', 1)[1], 'line 6: 2303 pixel values, expected 2304'),
    'non-int pixel': (lambda line: _replace_pixel(line, 9, 'x'), "line 6: pixel 10 is 'x', not an integer 0..255"),
    'float pixel': (lambda line: _replace_pixel(line, 0, '12.5'), "line 6: pixel 1 is '12.5', not an integer"),
    'pixel above 255': (lambda line: _replace_pixel(line, 99, '256'), 'line 6: pixel 100 is 256, outside 0..255'),
    'label out of range': (lambda line: '7' + line[1:], "line 6: emotion '7' is not a label 0..6"),
    'label not a number': (lambda line: 'sad' + line[1:], "line 6: emotion 'sad' is not a label 0..6"),
    'unknown Usage': (lambda line: line.rsplit(',', 1)[0] + ',Validation', "line 6: Usage 'Validation' is not Training, PublicTest or PrivateTest"),
    'missing field': (lambda line: line.rsplit(',', 1)[0], 'line 6: 2 comma-separated fields, expected 3'),
}


@pytest.mark.parametrize('fault', sorted(FER_FAULTS))
@pytest.mark.parametrize('gz', [False, True], ids=['csv', 'csv.gz'])
def test_fer2013_bad_row_is_reported_with_its_line(tmp_path, fer_rows, capsys, fault, gz):
    edit, message = FER_FAULTS[fault]
    lines = fer_lines(fer_rows)
    lines[5] = edit(lines[5])
    csv = write_lines(tmp_path / ('fer2013.csv.gz' if gz else 'fer2013.csv'), lines, gz=gz)
    assert_refused(['--fer2013', csv], tmp_path / 'data', capsys, csv, message)


@pytest.mark.parametrize('content, message', [
    (b'emotion,pixel,Usage\n0,1 2,Training\n', "line 1: header is 'emotion,pixel,Usage', expected emotion,pixels,Usage"),
    (b'', "line 1: header is '', expected emotion,pixels,Usage"),
    (b'emotion,pixels,Usage\n\n', 'no data rows after the header'),
    (b'\x89PNG\r\n\x1a\n\xff\xfe\x00binary', 'line 1: not text'),
], ids=['wrong header', 'empty file', 'header only', 'binary file'])
def test_fer2013_bad_file_is_refused(tmp_path, capsys, content, message):
    path = tmp_path / 'fer2013.csv'
    path.write_bytes(content)
    assert_refused(['--fer2013', path], tmp_path / 'data', capsys, str(path), message)


def test_fer2013_missing_and_truncated_files(tmp_path, fer_rows, capsys):
    missing = str(tmp_path / 'nope.csv')
    assert_refused(['--fer2013', missing], tmp_path / 'data', capsys, missing + ': file not found')
    gz = write_lines(tmp_path / 'fer2013.csv.gz', fer_lines(fer_rows), gz=True)
    data = open(gz, 'rb').read()
    with open(gz, 'wb') as f:
        f.write(data[:len(data) // 2])
    assert_refused(['--fer2013', gz], tmp_path / 'data', capsys, gz + ': cannot read the file')


def test_fer2013_refuses_to_overwrite_without_force(tmp_path, fer_rows, capsys):
    out = str(tmp_path / 'data')
    csv = write_lines(tmp_path / 'fer2013.csv', fer_lines(fer_rows))
    assert run_prepare_data(['--fer2013', csv, '--data-dir', out], capsys)[0] == 0
    before = {f: open(os.path.join(out, f), 'rb').read() for f in npy_files(out)}

    changed = [(6 - label, px, usage) for label, px, usage in fer_rows]
    csv2 = write_lines(tmp_path / 'fer2013b.csv', fer_lines(changed))
    code, _, err = run_prepare_data(['--fer2013', csv2, '--data-dir', out], capsys)
    assert code == 2 and 'already exists; pass --force to overwrite it' in err
    assert {f: open(os.path.join(out, f), 'rb').read() for f in npy_files(out)} == before

    assert run_prepare_data(['--fer2013', csv2, '--data-dir', out, '--force'], capsys)[0] == 0
    assert read_split(out, EMOTION, 'train')[1].tolist() == [6 - r[0] for r in fer_rows if r[2] == 'Training']


def test_one_existing_output_stops_all_writes(tmp_path, fer_rows, capsys):
    out = str(tmp_path / 'data')
    existing = data_utils.split_path(out, EMOTION, 'public_test')
    data_utils.save_split(existing, np.zeros((1, 48, 48), np.uint8), np.array([3]), EMOTION)
    csv = write_lines(tmp_path / 'fer2013.csv', fer_lines(fer_rows))
    code, _, err = run_prepare_data(['--fer2013', csv, '--data-dir', out], capsys)
    assert code == 2 and existing in err
    assert npy_files(out) == ['emotion_data2/public_test.npy']
    assert read_split(out, EMOTION, 'public_test')[1].tolist() == [3]


# ----------------------------------------------------------------------------- npz archives and the CLI

def test_npz_import_resizes_and_maps_split_names(tmp_path, capsys):
    rng = np.random.RandomState(5)
    colour = rng.randint(0, 256, (6, 64, 64, 3)).astype(np.uint8)
    path = str(tmp_path / 'emo.npz')
    np.savez(path, images=colour, labels=np.array([0, 1, 2, 3, 4, 5]), split=np.array([0, 0, 1, 2, 0, 1]),
             split_names=np.array(['Training', 'PublicTest', 'PrivateTest']))
    code, _, _ = run_prepare_data(['--task', 'emotion', '--npz', path, '--data-dir', tmp_path / 'data'], capsys)
    assert code == 0
    images, labels = read_split(tmp_path / 'data', EMOTION, 'train')
    assert labels.tolist() == [0, 1, 4]
    gray = cv2.cvtColor(colour[0], cv2.COLOR_BGR2GRAY)
    np.testing.assert_array_equal(images[0], cv2.resize(gray, (48, 48), interpolation=cv2.INTER_AREA))
    assert read_split(tmp_path / 'data', EMOTION, 'public_test')[1].tolist() == [2, 5]

    channel = rng.randint(0, 256, (3, 48, 48, 1)).astype(np.uint8)  # a trailing channel axis
    path = str(tmp_path / 'smile.npz')
    np.savez(path, images=channel, labels=np.array([0, 1, 1]), split=np.array([0, 1, 0]),
             split_names=np.array(['train', 'test']))
    assert prepare_data.import_npz(path, SMILE, str(tmp_path / 'data')) == {'train': 2, 'test': 1}
    np.testing.assert_array_equal(read_split(tmp_path / 'data', SMILE, 'train')[0], channel[[0, 2], ..., 0])


def test_npz_faults(tmp_path, capsys):
    path = str(tmp_path / 'a.npz')
    np.savez(path, images=np.zeros((2, 48, 48), np.uint8), labels=np.array([0, 1]))
    assert_refused(['--task', 'smile', '--npz', path], tmp_path / 'data', capsys, path + ': missing array(s) split, split_names')
    single = str(tmp_path / 'b.npy')
    np.save(single, np.zeros(3))
    assert_refused(['--task', 'smile', '--npz', single], tmp_path / 'data', capsys, single + ': a single .npy array')
    np.savez(path, images=np.zeros((2, 48, 48), np.uint8), labels=np.array([0, 1]), split=np.array([0, 0]),
             split_names=np.array(['test']))
    assert_refused(['--task', 'emotion', '--npz', path], tmp_path / 'data', capsys, "split 'test' is ambiguous for emotion")
    with pytest.raises(SystemExit) as exit_:
        prepare_data.main(['--npz', path])
    assert exit_.value.code == 2 and '--npz needs --task' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        prepare_data.main(['--fer2013', 'x.csv', '--genki', 'y'])  # one source at a time
    with pytest.raises(SystemExit):
        prepare_data.main(['--fer2013', 'x.csv', '--task', 'smile'])
    with pytest.raises(SystemExit):
        prepare_data.main([])


def _truncated(path):
    data = open(smile_npz(path), 'rb').read()
    open(path, 'wb').write(data[:len(data) // 2])


def _crc_damaged(path):
    data = bytearray(open(smile_npz(path), 'rb').read())
    data[data.index(b'PK\x03\x04', 4) - 1] ^= 0xFF  # the last byte of images.npy, the first member (stored)
    open(path, 'wb').write(bytes(data))


NPZ_DAMAGE = {  # name -> (how the archive is made, the message)
    'truncated': (_truncated, 'not a readable .npz archive'),
    '0 bytes': (lambda path: open(path, 'wb').close(), 'empty file (0 bytes)'),
    'text': (lambda path: open(path, 'w').write('images,labels\n'), 'not an .npz archive (not a zip file'),
    'CRC-damaged': (_crc_damaged, "cannot read an array of the archive (damaged or truncated: Bad CRC-32 for file 'images.npy')"),
    'scalar labels': (lambda path: smile_npz(path, labels=np.array(1)), 'labels must be a 1-D array, got shape ()'),
    '2-D split': (lambda path: smile_npz(path, split=np.zeros((4, 1), int)), 'split must be a 1-D array, got shape (4, 1)'),
    '48x0 images': (lambda path: smile_npz(path, images=np.zeros((4, 48, 0), np.uint8)),
                    'the archive holds no pixels (images of shape (4, 48, 0))'),
}


@pytest.mark.parametrize('damage', sorted(NPZ_DAMAGE))
def test_damaged_npz_is_one_line_and_leaves_the_earlier_import(tmp_path, capsys, damage):
    out = str(tmp_path / 'data')
    good = smile_npz(tmp_path / 'good.npz')
    assert run_prepare_data(['--task', 'smile', '--npz', good, '--data-dir', out], capsys)[0] == 0
    before = {f: open(os.path.join(out, f), 'rb').read() for f in npy_files(out)}
    make, message = NPZ_DAMAGE[damage]
    path = str(tmp_path / 'faces.npz')
    make(path)
    code, _, err = run_prepare_data(['--task', 'smile', '--npz', path, '--data-dir', out, '--force'], capsys)
    assert code == 2 and err.startswith('error: %s: %s' % (path, message)) and err.count('\n') == 1, err
    assert {f: open(os.path.join(out, f), 'rb').read() for f in npy_files(out)} == before


def test_data_dir_that_is_a_file_is_one_line(tmp_path, capsys):
    blocker = tmp_path / 'data'
    blocker.write_text('my notes')
    npz = smile_npz(tmp_path / 'faces.npz')
    for data_dir in (blocker, blocker / 'inside'):
        code, _, err = run_prepare_data(['--task', 'smile', '--npz', npz, '--data-dir', data_dir], capsys)
        assert code == 2 and err == 'error: %s: is a file, not a folder (give --data-dir a folder)\n' % blocker
    assert blocker.read_text() == 'my notes'


def test_forced_import_without_test_rows_removes_the_earlier_test_splits(tmp_path, fer_rows, capsys):
    out = str(tmp_path / 'data')
    assert run_prepare_data(['--fer2013', write_lines(tmp_path / 'all.csv', fer_lines(fer_rows)), '--data-dir', out], capsys)[0] == 0
    training = [r for r in fer_rows if r[2] == 'Training'][:5]
    csv = write_lines(tmp_path / 'train_only.csv', fer_lines(training))
    code, _, err = run_prepare_data(['--fer2013', csv, '--data-dir', out], capsys)
    assert code == 2 and 'already exists; pass --force' in err and len(npy_files(out)) == 3

    code, stdout, _ = run_prepare_data(['--fer2013', csv, '--data-dir', out, '--force'], capsys)
    assert code == 0
    assert npy_files(out) == ['emotion_data2/train.npy']  # no test split of the earlier import is left beside it
    assert read_split(out, EMOTION, 'train')[1].tolist() == [r[0] for r in training]
    for split in ('public_test', 'private_test'):
        path = data_utils.split_path(out, EMOTION, split)
        assert "%s: %s has no such split, so it is not written (removed the earlier import's file)" % (path, csv) in stdout


def test_ctrl_c_at_start_up_is_one_line(tmp_path):
    out = tmp_path / 'data'
    result = run_interrupted('prepare_data.py', 'import cv2', '--demo', '--data-dir', out)
    assert_interrupted(result)
    assert not out.exists()


def test_ctrl_c_during_an_import_keeps_the_earlier_files_and_no_temp_file(tmp_path, fer_rows):
    out = str(tmp_path / 'data')
    prepare_data.import_fer2013(write_lines(tmp_path / 'a.csv', fer_lines(fer_rows)), out)
    before = {f: open(os.path.join(out, f), 'rb').read() for f in npy_files(out)}
    assert len(before) == 3
    changed = write_lines(tmp_path / 'b.csv', fer_lines([(6 - label, px, usage) for label, px, usage in fer_rows]))
    # SIGINT once the first of the three files is written in full
    result = run_interrupted('prepare_data.py', 'data_utils:save_split', '--fer2013', changed, '--data-dir', out, '--force')
    assert_interrupted(result)
    assert {f: open(os.path.join(out, f), 'rb').read() for f in npy_files(out)} == before  # nothing else, no .tmp-*


def test_temp_files_of_a_killed_run_are_removed_by_the_next(tmp_path, fer_rows, capsys):
    out = tmp_path / 'data'
    leftovers = [out / 'emotion_data2' / '.tmp-4242-train.npy', out / 'smile_data' / '.tmp-k2j3h4.npy']
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b'half a file')
    code, stdout, _ = run_prepare_data(['--fer2013', write_lines(tmp_path / 'a.csv', fer_lines(fer_rows)), '--data-dir', out], capsys)
    assert code == 0
    assert stdout.splitlines()[0] == 'removed 2 temp file(s) left by an interrupted run: %s, %s' % tuple(sorted(map(str, leftovers)))
    assert npy_files(str(out)) == ['emotion_data2/private_test.npy', 'emotion_data2/public_test.npy',
                                   'emotion_data2/train.npy']


def test_demo_refuses_to_overwrite_then_force_rewrites(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(prepare_data, 'DEMO_SIZES', {SMILE: (4, 2), EMOTION: (7, 7), GENDER: (4, 2)})
    out = str(tmp_path / 'data')
    assert run_prepare_data(['--demo', '--data-dir', out], capsys)[0] == 0
    first = {f: open(os.path.join(out, f), 'rb').read() for f in npy_files(out)}
    assert len(first) == 7
    code, _, err = run_prepare_data(['--demo', '--data-dir', out, '--seed', '1'], capsys)
    assert code == 2 and err.count('\n') == 1 and 'already exists; pass --force' in err
    assert {f: open(os.path.join(out, f), 'rb').read() for f in npy_files(out)} == first
    assert run_prepare_data(['--demo', '--data-dir', out, '--seed', '1', '--force'], capsys)[0] == 0
    second = {f: open(os.path.join(out, f), 'rb').read() for f in npy_files(out)}
    assert set(second) == set(first) and all(second[f] != first[f] for f in first)


def test_an_import_killed_during_its_renames_is_refused_until_imported_again(tmp_path, demo_dir, capsys):
    out = str(tmp_path / 'data')
    shutil.copytree(demo_dir, out)
    before = {f: open(os.path.join(out, f), 'rb').read() for f in npy_files(out)}
    run_killed('prepare_data.py', 'replace', 3, 'final', '--demo', '--seed', '1', '--data-dir', out, '--force')
    after = {f: open(os.path.join(out, f), 'rb').read() for f in npy_files(out) if '.tmp-' not in f}
    changed = sorted(f for f in after if after[f] != before[f])
    assert len(changed) == 3 and set(after) == set(before)  # new and old files side by side
    for f in sorted(after):  # every file of the interrupted import is refused, new or old; one line each
        with pytest.raises(data_utils.DataError) as err:
            data_utils.load_split(os.path.join(out, f))
        assert str(err.value) == ('%s: the run that was replacing it and the files written with it stopped half-way '
                                  '(listed in %s), so it may not match them; import the data again '
                                  '(prepare_data.py ... --force)' % (os.path.join(out, f), os.path.join(out, '.unfinished.json')))
    assert run_prepare_data(['--demo', '--seed', '1', '--data-dir', out, '--force'], capsys)[0] == 0
    assert not os.path.exists(os.path.join(out, '.unfinished.json')) and set(npy_files(out)) == set(before)
    data_provider.Dataset('train', data_dir=out, verbose=False)  # readable again


def test_an_import_stopped_by_a_full_disk_is_one_line_and_leaves_no_empty_folder(tmp_path, fer_rows, capsys,
                                                                                 monkeypatch):
    out = tmp_path / 'new' / 'data'

    def disk_full(*args, **kwargs):  # how NumPy reports a disk that fills up in the middle of a file
        raise OSError('1200 requested and 1027 written')
    monkeypatch.setattr(np.lib.format, 'write_array', disk_full)
    code, _, err = run_prepare_data(['--fer2013', write_lines(tmp_path / 'a.csv', fer_lines(fer_rows)),
                                     '--data-dir', out], capsys)
    assert code == 2 and err.count('\n') == 1
    assert err.startswith('error: %s' % (out / 'emotion_data2')) and 'No space left on device' in err, err
    assert not (tmp_path / 'new').exists()  # the folders it made are gone again


def test_script_entry_point_writes_the_demo_set(tmp_path):
    out = str(tmp_path / 'data')
    proc = subprocess.run([sys.executable, os.path.join(ROOT, 'prepare_data.py'), '--demo', '--data-dir', out],
                          cwd=str(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for task in TASKS:
        n_train, n_test = prepare_data.DEMO_SIZES[task]
        for split in data_utils.TASK_SPLITS[task]:
            assert data_utils.count_split(data_utils.split_path(out, task, split)) == (
                n_train if split == 'train' else n_test)
    assert 'smile_data/train.npy: 1200 images (non_smile 600, smile 600)' in proc.stdout


# ----------------------------------------------------------------------------- the real archives

REAL_COUNTS = {  # PROVENANCE.md: split -> per-class counts
    SMILE: {'train': [1210, 1527], 'test': [566, 580]},
    EMOTION: {'train': [3995, 436, 4097, 7215, 4830, 3171, 4965],
              'public_test': [467, 56, 496, 895, 653, 415, 607],
              'private_test': [491, 55, 528, 879, 594, 416, 626]},
    GENDER: {'train': [8579, 25700], 'test': [915, 2793]},
}


@pytest.fixture(scope='module')
def real_data(shared_data_dir, tmp_path_factory):
    """The three shared archives imported into a temp folder; -> (folder, {archive: seconds})."""
    out = str(tmp_path_factory.mktemp('real') / 'data')
    seconds = {}
    for name, task in (('genki4k.npz', SMILE), ('fer2013.npz', EMOTION), ('gender.npz', GENDER)):
        t0 = time.time()
        prepare_data.import_npz(os.path.join(shared_data_dir, name), task, out)
        seconds[name] = time.time() - t0
    return out, seconds


def test_real_archives_import_with_the_documented_counts(real_data, record_property):
    out, seconds = real_data
    for name, s in seconds.items():
        record_property('import_seconds_' + name, round(s, 2))  # gender.npz (81 MB): about 1 s here
    for task, splits in REAL_COUNTS.items():
        for split, per_class in splits.items():
            images, labels = read_split(out, task, split)
            assert images.dtype == np.uint8 and images.shape == (sum(per_class), 48, 48)
            assert np.bincount(labels, minlength=len(per_class)).tolist() == per_class
    assert [sum(REAL_COUNTS[t]['train']) for t in TASKS] == [2737, 28709, 34279]
    assert [sum(REAL_COUNTS[t][s]) for t, s in ((SMILE, 'test'), (GENDER, 'test'))] == [1146, 3708]


@pytest.mark.parametrize('data_type', ['public_test', 'private_test'])
def test_real_data_passes_the_handout_cells(real_data, data_type):
    handout_all_data_cell(real_data[0], data_type, 1146 + 3589 + 3708)

    dataset = data_provider.Dataset(data_type=data_type, batch_size=1000, data_dir=real_data[0], verbose=False)
    sizes = [len(b) for b, _, _ in dataset.gen()]
    assert sizes == [1000] * 8 + [443]


def test_real_train_set_fits_in_uint8(real_data):
    ds = data_provider.Dataset('train', batch_size=128, data_dir=real_data[0], seed=0, verbose=False)
    n = 2737 + 28709 + 34279
    assert ds.images.dtype == np.uint8 and ds.images.nbytes == n * 2304  # 145 MB
    assert ds.steps_per_epoch() == -(-n // 128) == 514
    assert collections.Counter(ds.indexes.tolist()) == {1.0: 2737, 2.0: 28709, 3.0: 34279}
