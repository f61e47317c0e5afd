"""prepare_data's converters on small fixtures written in the real formats, its CLI, and the real archives."""
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
import scipy.io

import data_provider
import data_utils
import faces
import prepare_data
from config import EMOTION, GENDER, SMILE, TASKS
from conftest import ROOT, assert_interrupted, handout_all_data_cell, run_interrupted


# ----------------------------------------------------------------------------- helpers

def npy_files(folder):
    """Every .npy file under folder, hidden temp files included."""
    return sorted(os.path.relpath(os.path.join(d, f), folder)
                  for d, _, files in os.walk(folder) for f in files if f.endswith('.npy'))


def read(data_dir, task, split):
    records = np.load(data_utils.split_path(str(data_dir), task, split))
    return records['image'], records['label']


def run_main(argv, capsys):
    """prepare_data.main in-process -> (exit code, stdout, stderr)."""
    code = prepare_data.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_refused(argv, out_dir, capsys, *fragments):
    """The CLI stops with exit code 2, one 'error:' line holding every fragment, and writes nothing."""
    code, _, err = run_main(list(argv) + ['--data-dir', out_dir], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert 'Traceback' not in err
    assert not os.path.exists(str(out_dir)) or npy_files(str(out_dir)) == []
    return lines[0]


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
    code, stdout, _ = run_main(['--fer2013', csv, '--data-dir', out], capsys)
    assert code == 0
    assert npy_files(str(out)) == ['emotion_data2/private_test.npy', 'emotion_data2/public_test.npy',
                                   'emotion_data2/train.npy']
    for usage, split in prepare_data.FER_USAGE.items():
        rows = [r for r in fer_rows if r[2] == usage]
        images, labels = read(out, EMOTION, split)
        assert labels.tolist() == [r[0] for r in rows]  # file order kept
        np.testing.assert_array_equal(images, np.stack([r[1] for r in rows]))
    assert [len(read(out, EMOTION, s)[1]) for s in ('train', 'public_test', 'private_test')] == [8, 4, 3]
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
    'short pixel string': (lambda l: l.rsplit(' ', 1)[0] + ',' + l.rsplit(',', 1)[1], 'line 6: 2303 pixel values, expected 2304'),
    'non-int pixel': (lambda l: _replace_pixel(l, 9, 'x'), "line 6: pixel 10 is 'x', not an integer 0..255"),
    'float pixel': (lambda l: _replace_pixel(l, 0, '12.5'), "line 6: pixel 1 is '12.5', not an integer"),
    'pixel above 255': (lambda l: _replace_pixel(l, 99, '256'), 'line 6: pixel 100 is 256, outside 0..255'),
    'label out of range': (lambda l: '7' + l[1:], "line 6: emotion '7' is not a label 0..6"),
    'label not a number': (lambda l: 'sad' + l[1:], "line 6: emotion 'sad' is not a label 0..6"),
    'unknown Usage': (lambda l: l.rsplit(',', 1)[0] + ',Validation', "line 6: Usage 'Validation' is not Training, PublicTest or PrivateTest"),
    'missing field': (lambda l: l.rsplit(',', 1)[0], 'line 6: 2 comma-separated fields, expected 3'),
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
    assert run_main(['--fer2013', csv, '--data-dir', out], capsys)[0] == 0
    before = {f: open(os.path.join(out, f), 'rb').read() for f in npy_files(out)}

    changed = [(6 - label, px, usage) for label, px, usage in fer_rows]
    csv2 = write_lines(tmp_path / 'fer2013b.csv', fer_lines(changed))
    code, _, err = run_main(['--fer2013', csv2, '--data-dir', out], capsys)
    assert code == 2 and 'already exists; pass --force to overwrite it' in err
    assert {f: open(os.path.join(out, f), 'rb').read() for f in npy_files(out)} == before

    assert run_main(['--fer2013', csv2, '--data-dir', out, '--force'], capsys)[0] == 0
    assert read(out, EMOTION, 'train')[1].tolist() == [6 - r[0] for r in fer_rows if r[2] == 'Training']


def test_one_existing_output_stops_all_writes(tmp_path, fer_rows, capsys):
    out = str(tmp_path / 'data')
    existing = data_utils.split_path(out, EMOTION, 'public_test')
    data_utils.save_split(existing, np.zeros((1, 48, 48), np.uint8), np.array([3]), EMOTION)
    csv = write_lines(tmp_path / 'fer2013.csv', fer_lines(fer_rows))
    code, _, err = run_main(['--fer2013', csv, '--data-dir', out], capsys)
    assert code == 2 and existing in err
    assert npy_files(out) == ['emotion_data2/public_test.npy']
    assert read(out, EMOTION, 'public_test')[1].tolist() == [3]


# ----------------------------------------------------------------------------- face pictures for GENKI / WIKI

def face_picture(rng, task, label, size=200, face=120, tries=60):
    """A JPEG of a drawn face pasted into a larger gray picture, redrawn until Haar finds it there.

    -> (jpeg bytes, decoded gray picture, the pasted face's centre).
    """
    for _ in range(tries):
        small = prepare_data.demo_faces(task, [label], rng)[0]
        canvas = np.full((size, size), rng.randint(60, 120), np.uint8)
        x, y = rng.randint(0, size - face, 2)
        canvas[y:y + face, x:x + face] = cv2.resize(small, (face, face), interpolation=cv2.INTER_CUBIC)
        ok, jpeg = cv2.imencode('.jpg', canvas, [cv2.IMWRITE_JPEG_QUALITY, 95])
        gray = cv2.imdecode(jpeg, cv2.IMREAD_GRAYSCALE)
        boxes = faces.detect_faces(gray, 'haar')
        centre = (x + face / 2.0, y + face / 2.0)
        if boxes:
            bx, by, bw, bh = boxes[0]
            if abs(bx + bw / 2.0 - centre[0]) < 20 and abs(by + bh / 2.0 - centre[1]) < 20:
                return jpeg.tobytes(), gray, centre
    raise AssertionError('Haar never found the drawn face in %d tries' % tries)


def faceless_picture():
    """A 200x300 horizontal gradient: no face, not square. -> (jpeg bytes, decoded gray, expected 48x48 crop)."""
    canvas = np.tile(np.linspace(0, 255, 300).astype(np.uint8), (200, 1))
    ok, jpeg = cv2.imencode('.jpg', canvas, [cv2.IMWRITE_JPEG_QUALITY, 95])
    gray = cv2.imdecode(jpeg, cv2.IMREAD_GRAYSCALE)
    assert faces.detect_faces(gray, 'haar') == []
    centre_square = gray[:, 50:250]  # the largest centred square, computed here independently
    return jpeg.tobytes(), gray, cv2.resize(centre_square, (48, 48), interpolation=cv2.INTER_AREA)


def test_haar_finds_a_drawn_face_and_sorts_largest_first():
    rng = np.random.RandomState(3)
    _, gray, centre = face_picture(rng, SMILE, 1)
    boxes = faces.detect_faces(gray, 'haar')
    x, y, w, h = boxes[0]
    assert 60 <= w <= 160 and abs(x + w / 2.0 - centre[0]) < 20  # the 120 px face, not some blob
    areas = [b[2] * b[3] for b in boxes]
    assert areas == sorted(areas, reverse=True)
    big = cv2.resize(gray, (1000, 1000), interpolation=cv2.INTER_LINEAR)  # searched at 640 px, boxes in 1000 px
    bx, by, bw, bh = faces.detect_faces(big, 'haar')[0]
    assert abs((bx + bw / 2.0) / 5.0 - centre[0]) < 20 and abs((by + bh / 2.0) / 5.0 - centre[1]) < 20
    assert faces.detect_faces(np.full((100, 100), 128, np.uint8), 'haar') == []
    colour = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    assert faces.detect_faces(colour, 'haar') == boxes


# ----------------------------------------------------------------------------- GENKI-4K

GENKI_LABELS = [1] * 8 + [0] * 8  # sorted by label like the real files
GENKI_BLANK = 12  # file0012.jpg has no face


@pytest.fixture(scope='module')
def genki(tmp_path_factory):
    """A GENKI-4K folder: labels.txt + files/file0001..0016.jpg. -> (folder, {face bytes: label}, blank crop)."""
    root = tmp_path_factory.mktemp('genki') / 'GENKI4K'
    (root / 'files').mkdir(parents=True)
    rng = np.random.RandomState(0)
    expected = {}
    lines = []
    for n, label in enumerate(GENKI_LABELS, 1):
        if n == GENKI_BLANK:
            jpeg, gray, crop = faceless_picture()
            blank = crop
        else:
            jpeg, gray, _ = face_picture(rng, SMILE, label)
            crop = prepare_data.preprocess_face(gray, faces.detect_faces(gray, 'haar')[0])
        (root / 'files' / ('file%04d.jpg' % n)).write_bytes(jpeg)
        expected[crop.tobytes()] = label
        lines.append('%d %.6f %.6f %.6f' % (label, rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5)))
    (root / 'labels.txt').write_text('\n'.join(lines) + '\n')
    assert len(expected) == 16
    return str(root), expected, blank


def test_genki_import(tmp_path, genki, capsys):
    folder, expected, blank = genki
    out = tmp_path / 'data'
    code, stdout, _ = run_main(['--genki', folder, '--data-dir', out], capsys)
    assert code == 0
    assert 'Haar found no face in 1 of 16 images' in stdout
    train, test = read(out, SMILE, 'train'), read(out, SMILE, 'test')
    assert np.bincount(train[1]).tolist() == [6, 6]  # 16 images: a quarter (4) is test, stratified
    assert np.bincount(test[1]).tolist() == [2, 2]
    seen = collections.Counter()
    for images, labels in (train, test):
        for img, label in zip(images, labels):
            assert expected[img.tobytes()] == label  # every face is the right crop of a file of that label
            seen[img.tobytes()] += 1
    assert set(seen) == set(expected) and set(seen.values()) == {1}
    assert seen[blank.tobytes()] == 1  # the fallback is the centred square


def test_genki_split_is_seeded(tmp_path, genki):
    folder = genki[0]
    runs = {}
    for name, seed in (('a', 0), ('b', 0), ('c', 1)):
        prepare_data.import_genki(folder, str(tmp_path / name), seed=seed)
        runs[name] = open(data_utils.split_path(str(tmp_path / name), SMILE, 'test'), 'rb').read()
    assert runs['a'] == runs['b']
    assert runs['a'] != runs['c']


def _genki_copy(genki, tmp_path):
    folder = str(tmp_path / 'GENKI4K')
    shutil.copytree(genki[0], folder)
    return folder


def test_genki_missing_labels(tmp_path, genki, capsys):
    folder = _genki_copy(genki, tmp_path)
    os.remove(os.path.join(folder, 'labels.txt'))
    assert_refused(['--genki', folder], tmp_path / 'data', capsys, os.path.join(folder, 'labels.txt') + ': file not found')
    assert_refused(['--genki', folder + 'X'], tmp_path / 'data', capsys, folder + 'X: folder not found')


@pytest.mark.parametrize('bad', ['2 0.1 0.2 0.3', '1 0.1 0.2', 'yes 0.1 0.2 0.3', '1 0.1 abc 0.3', ''])
def test_genki_bad_label_line(tmp_path, genki, capsys, bad):
    folder = _genki_copy(genki, tmp_path)
    path = os.path.join(folder, 'labels.txt')
    lines = open(path).read().splitlines()
    lines[2] = bad
    open(path, 'w').write('\n'.join(lines) + '\n')
    assert_refused(['--genki', folder], tmp_path / 'data', capsys, path + ' line 3: ', 'smile 0 or 1')


def test_genki_unreadable_and_missing_images(tmp_path, genki, capsys):
    folder = _genki_copy(genki, tmp_path)
    broken = os.path.join(folder, 'files', 'file0005.jpg')
    open(broken, 'wb').write(b'this is not a jpeg')
    assert_refused(['--genki', folder], tmp_path / 'data', capsys, broken + ': not a readable image')
    open(broken, 'wb').write(b'')
    assert_refused(['--genki', folder], tmp_path / 'data', capsys, broken + ': not a readable image')
    gone = os.path.join(folder, 'files', 'file0016.jpg')
    os.remove(gone)
    assert_refused(['--genki', folder], tmp_path / 'data', capsys, gone + ': image not found')


# ----------------------------------------------------------------------------- IMDB-WIKI

# (folder/file, gender, face_score, second_face_score); the first 17 pass the usual filter
WIKI_ENTRIES = (
    [('%02d/%d_1970-01-0%d_2000.jpg' % (i % 3, 1000 + i, i % 9 + 1), 0.0, 1.0 + i / 10.0, np.nan) for i in range(10)]
    + [('%02d/%d_1960-05-0%d_1999.jpg' % (i % 3, 2000 + i, i % 9 + 1), 1.0, 2.5, np.nan) for i in range(7)]
    + [('05/3001_1950-01-01_1990.jpg', 1.0, -np.inf, np.nan),  # no face
       ('05/3002_1950-01-01_1990.jpg', 0.0, 0.7, np.nan),  # face score below 1
       ('05/3003_1950-01-01_1990.jpg', 1.0, 3.0, 1.4),  # a second face
       ('06/3004_1950-01-01_1990.jpg', np.nan, 2.0, np.nan)]  # unknown gender; this file does not exist
)
WIKI_BLANK = 4  # entry 4 (female) has no face


def write_wiki_mat(path, entries, key='wiki', drop=None, **override):
    n = len(entries)
    full_path = np.empty((1, n), dtype=object)
    name = np.empty((1, n), dtype=object)
    for i, entry in enumerate(entries):
        full_path[0, i] = np.array([entry[0]])
        name[0, i] = np.array(['Person %d' % i])
    fields = {
        'dob': np.full((1, n), 719529.0), 'photo_taken': np.full((1, n), 2000),
        'full_path': full_path, 'gender': np.array([[e[1] for e in entries]]), 'name': name,
        'face_location': np.empty((1, n), dtype=object),
        'face_score': np.array([[e[2] for e in entries]]), 'second_face_score': np.array([[e[3] for e in entries]]),
    }
    for i in range(n):
        fields['face_location'][0, i] = np.array([[10.0, 10.0, 90.0, 90.0]])
    fields.update(override)
    if drop:
        del fields[drop]
    scipy.io.savemat(str(path), {key: fields})


@pytest.fixture(scope='module')
def wiki(tmp_path_factory):
    """A wiki_crop folder: wiki.mat + NN/*.jpg. -> (folder, {face bytes: label} of the kept entries, blank crop)."""
    root = tmp_path_factory.mktemp('wiki') / 'wiki_crop'
    root.mkdir()
    rng = np.random.RandomState(1)
    expected = {}
    for i, (rel, gender, score, second) in enumerate(WIKI_ENTRIES):
        if rel.startswith('06/'):
            continue
        if i == WIKI_BLANK:
            jpeg, gray, crop = faceless_picture()
            blank = crop
        else:
            jpeg, gray, _ = face_picture(rng, GENDER, int(gender), size=180, face=110)
            crop = prepare_data.preprocess_face(gray, faces.detect_faces(gray, 'haar')[0])
        path = root.joinpath(*rel.split('/'))
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(jpeg)
        if i < 17:
            expected[crop.tobytes()] = int(gender)
    write_wiki_mat(root / 'wiki.mat', WIKI_ENTRIES)
    assert len(expected) == 17
    return str(root), expected, blank


def test_wiki_mat_fixture_reads_back_like_the_real_file(wiki):
    mat = scipy.io.loadmat(os.path.join(wiki[0], 'wiki.mat'))
    struct = mat['wiki']
    assert struct.shape == (1, 1) and {'full_path', 'gender', 'face_score', 'second_face_score', 'dob',
                                       'photo_taken', 'name', 'face_location'} <= set(struct.dtype.names)
    full_path = struct[0, 0]['full_path'][0]  # how loaders index the real wiki.mat
    assert full_path.shape == (21,) and full_path[0][0] == '00/1000_1970-01-01_2000.jpg'
    gender = struct[0, 0]['gender'][0]
    assert gender.dtype == np.float64 and np.isnan(gender[-1]) and gender[10] == 1.0
    assert np.isneginf(struct[0, 0]['face_score'][0][17])
    assert np.isnan(struct[0, 0]['second_face_score'][0][0])


def test_wiki_split_sizes():
    assert prepare_data.wiki_split_sizes(40000) == (30000, 4118)  # the course's sizes; 5,882 left out
    assert prepare_data.wiki_split_sizes(34118) == (30000, 4118)
    assert prepare_data.wiki_split_sizes(1000) == (879, 121)  # the same 88/12 ratio
    assert prepare_data.wiki_split_sizes(17) == (15, 2)
    assert prepare_data.wiki_split_sizes(1) == (1, 0)


def test_wiki_import(tmp_path, wiki, capsys):
    folder, expected, blank = wiki
    out = tmp_path / 'data'
    code, stdout, _ = run_main(['--wiki', folder, '--data-dir', out, '--seed', '3'], capsys)
    assert code == 0
    assert '17 of 21 entries pass the filter' in stdout
    assert 'Haar found no face in 1 of 17 images' in stdout
    train, test = read(out, GENDER, 'train'), read(out, GENDER, 'test')
    assert np.bincount(train[1], minlength=2).tolist() == [9, 6]  # 15 train, 2 test, stratified
    assert np.bincount(test[1], minlength=2).tolist() == [1, 1]
    seen = collections.Counter()
    for images, labels in (train, test):
        for img, label in zip(images, labels):
            assert expected[img.tobytes()] == label  # only kept entries, with their own gender
            seen[img.tobytes()] += 1
    assert set(seen) == set(expected) and set(seen.values()) == {1}
    assert seen[blank.tobytes()] == 1


def _wiki_copy(wiki, tmp_path):
    folder = str(tmp_path / 'wiki_crop')
    shutil.copytree(wiki[0], folder)
    return folder


def test_wiki_bad_mat_files(tmp_path, wiki, capsys):
    folder = _wiki_copy(wiki, tmp_path)
    mat = os.path.join(folder, 'wiki.mat')
    os.remove(mat)
    assert_refused(['--wiki', folder], tmp_path / 'data', capsys, mat + ': file not found')
    open(mat, 'wb').write(b'MATLAB? no, just some bytes' * 10)
    assert_refused(['--wiki', folder], tmp_path / 'data', capsys, mat + ': not a readable MATLAB file')
    write_wiki_mat(mat, WIKI_ENTRIES, key='people')
    assert_refused(['--wiki', folder], tmp_path / 'data', capsys, mat + ': no struct named wiki (has people)')
    write_wiki_mat(mat, WIKI_ENTRIES, drop='gender')
    assert_refused(['--wiki', folder], tmp_path / 'data', capsys, mat + ': struct wiki has no field gender')
    write_wiki_mat(mat, WIKI_ENTRIES, gender=np.array([[0.0, 2.0] + [1.0] * 19]))
    assert_refused(['--wiki', folder], tmp_path / 'data', capsys, mat + ': gender 2 at entry 2, expected 0, 1 or NaN')
    write_wiki_mat(mat, WIKI_ENTRIES, face_score=np.zeros((1, 20)))
    assert_refused(['--wiki', folder], tmp_path / 'data', capsys, mat + ': fields differ in length')
    write_wiki_mat(mat, WIKI_ENTRIES, face_score=np.full((1, 21), -np.inf))
    assert_refused(['--wiki', folder], tmp_path / 'data', capsys, mat + ': no entry has a face_score >= 1')


def test_wiki_unreadable_and_missing_images(tmp_path, wiki, capsys):
    folder = _wiki_copy(wiki, tmp_path)
    broken = os.path.join(folder, '01', '2001_1960-05-02_1999.jpg')
    open(broken, 'wb').write(b'GIF89a garbage')
    assert_refused(['--wiki', folder], tmp_path / 'data', capsys, broken + ': not a readable image')
    os.remove(broken)
    assert_refused(['--wiki', folder], tmp_path / 'data', capsys, broken + ': image not found')


# ----------------------------------------------------------------------------- splits

def test_stratified_split_on_label_sorted_files():
    labels = np.array([1] * 2162 + [0] * 1838)  # GENKI-4K: all smiles first
    train, test = prepare_data.stratified_split(labels, 1000, seed=0)
    assert len(test) == 1000 and len(train) == 3000
    assert not set(train) & set(test) and sorted(np.concatenate([train, test])) == list(range(4000))
    assert np.bincount(labels[test]).tolist() == [460, 540]  # 459.5 / 540.5: the tie goes to class 0
    assert np.all(np.diff(test) > 0)
    again = prepare_data.stratified_split(labels, 1000, seed=0)[1]
    other = prepare_data.stratified_split(labels, 1000, seed=1)[1]
    assert np.array_equal(test, again) and not np.array_equal(test, other)
    train, test = prepare_data.stratified_split(np.array([0] * 9000 + [1] * 31000), 4118, seed=0, n_train=30000)
    assert (len(train), len(test)) == (30000, 4118) and not set(train) & set(test)
    assert np.bincount(np.where(test < 9000, 0, 1)).tolist() == [927, 3191]  # 9/40 of 4118 = 926.55


# ----------------------------------------------------------------------------- the course's old folder

def _pairs_file(path, images, labels, rows):
    if rows:  # np.array of (image, label) tuples in old numpy: an (N, 2) object array
        arr = np.empty((len(images), 2), dtype=object)
        for i in range(len(images)):
            arr[i, 0], arr[i, 1] = images[i], labels[i]
    else:
        arr = np.empty(len(images), dtype=object)
        for i in range(len(images)):
            arr[i] = (images[i], labels[i])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.save(path, arr, allow_pickle=True)


@pytest.fixture
def course(tmp_path):
    """The course's old data folder. -> (folder, {(task, split): (uint8 images, labels)} it should become)."""
    root = tmp_path / 'course'
    rng = np.random.RandomState(4)

    def pixels(n):
        return rng.randint(0, 256, (n, 48, 48)).astype(np.uint8)

    expected = {}
    for split, n in (('train', 6), ('test', 4)):
        images, labels = pixels(n), rng.randint(0, 2, n)
        _pairs_file(str(root / 'smile_data' / (split + '.npy')), list(images), [int(v) for v in labels], rows=True)
        expected[(SMILE, split)] = images, labels
        images, labels = pixels(n + 1), rng.randint(0, 2, n + 1)
        _pairs_file(str(root / 'wiki_data_gender' / (split + '.npy')),
                    [((img.astype(np.float32) - 128) / 255).reshape(48, 48, 1) for img in images],
                    list(np.eye(2)[labels]), rows=False)
        expected[(GENDER, split)] = images, labels
    emotion = {}
    for sub, n in (('temp_train_and_validation/train', 5), ('temp_train_and_validation/validation', 3),
                   ('public test', 4), ('private test', 2)):
        images, labels = pixels(n), rng.randint(0, 7, n)
        folder = root.joinpath('emotion_data2', *sub.split('/'))
        folder.mkdir(parents=True)
        np.save(str(folder / 'images.npy'), ((images.astype(np.float32) - 128) / 255)[..., None])
        np.save(str(folder / 'labels.npy'), np.eye(7, dtype=np.float32)[labels])
        emotion[sub] = images, labels
    train = [emotion['temp_train_and_validation/train'], emotion['temp_train_and_validation/validation']]
    expected[(EMOTION, 'train')] = np.concatenate([t[0] for t in train]), np.concatenate([t[1] for t in train])
    expected[(EMOTION, 'public_test')] = emotion['public test']
    expected[(EMOTION, 'private_test')] = emotion['private test']
    return str(root), expected


def test_course_import(tmp_path, course, capsys):
    folder, expected = course
    out = tmp_path / 'data'
    code, stdout, _ = run_main(['--course', folder, '--allow-pickle', '--data-dir', out], capsys)
    assert code == 0
    assert len(npy_files(str(out))) == 7
    for (task, split), (images, labels) in expected.items():
        got_images, got_labels = read(out, task, split)
        np.testing.assert_array_equal(got_images, images)
        np.testing.assert_array_equal(got_labels, labels)
    assert len(read(out, EMOTION, 'train')[1]) == 8  # train + validation
    ds = data_provider.Dataset('private_test', data_dir=str(out), verbose=False)
    assert len(ds.all_data) == 4 + 2 + 5


def test_course_without_allow_pickle_refuses_and_never_unpickles(tmp_path, course, capsys, monkeypatch):
    calls = []
    real_load = np.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get('allow_pickle', False))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(np, 'load', spy)
    assert_refused(['--course', course[0]], tmp_path / 'data', capsys, course[0], 'pickled',
                   'can run arbitrary code', '--allow-pickle')
    assert True not in calls
    with pytest.raises(prepare_data.DataError, match='pickled'):
        prepare_data.import_course(course[0], str(tmp_path / 'data'))
    assert True not in calls


def test_course_faults(tmp_path, course, capsys):
    folder = course[0]
    labels = os.path.join(folder, 'emotion_data2', 'public test', 'labels.npy')
    bad = np.eye(7, dtype=np.float32)[[0, 1, 2, 3]]
    bad[2, 5] = 1  # two classes in one row
    np.save(labels, bad)
    assert_refused(['--course', folder, '--allow-pickle'], tmp_path / 'data', capsys, labels + ': row 2 is not a one-hot vector')
    np.save(labels, np.eye(7, dtype=np.float32)[[0, 1, 2]])
    assert_refused(['--course', folder, '--allow-pickle'], tmp_path / 'data', capsys, labels + ': 3 labels for the 4 images')
    gone = os.path.join(folder, 'wiki_data_gender', 'test.npy')
    os.remove(gone)
    assert_refused(['--course', folder, '--allow-pickle'], tmp_path / 'data', capsys, gone + ': file not found')


# ----------------------------------------------------------------------------- npz archives and the CLI

def test_npz_import_resizes_and_maps_split_names(tmp_path, capsys):
    rng = np.random.RandomState(5)
    colour = rng.randint(0, 256, (6, 64, 64, 3)).astype(np.uint8)
    path = str(tmp_path / 'emo.npz')
    np.savez(path, images=colour, labels=np.array([0, 1, 2, 3, 4, 5]), split=np.array([0, 0, 1, 2, 0, 1]),
             split_names=np.array(['Training', 'PublicTest', 'PrivateTest']))
    code, _, _ = run_main(['--task', 'emotion', '--npz', path, '--data-dir', tmp_path / 'data'], capsys)
    assert code == 0
    images, labels = read(tmp_path / 'data', EMOTION, 'train')
    assert labels.tolist() == [0, 1, 4]
    gray = cv2.cvtColor(colour[0], cv2.COLOR_BGR2GRAY)
    np.testing.assert_array_equal(images[0], cv2.resize(gray, (48, 48), interpolation=cv2.INTER_AREA))
    assert read(tmp_path / 'data', EMOTION, 'public_test')[1].tolist() == [2, 5]

    channel = rng.randint(0, 256, (3, 48, 48, 1)).astype(np.uint8)  # a trailing channel axis
    path = str(tmp_path / 'smile.npz')
    np.savez(path, images=channel, labels=np.array([0, 1, 1]), split=np.array([0, 1, 0]),
             split_names=np.array(['train', 'test']))
    assert prepare_data.import_npz(path, SMILE, str(tmp_path / 'data')) == {'train': 2, 'test': 1}
    np.testing.assert_array_equal(read(tmp_path / 'data', SMILE, 'train')[0], channel[[0, 2], ..., 0])


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


def _smile_npz(path, **override):
    """A valid smile archive of 4 faces (2 train, 2 test), with any array replaced by override."""
    arrays = dict(images=np.arange(4 * 48 * 48).reshape(4, 48, 48).astype(np.uint8), labels=np.array([0, 1, 1, 0]),
                  split=np.array([0, 0, 1, 1]), split_names=np.array(['train', 'test']))
    arrays.update(override)
    np.savez(str(path), **arrays)
    return str(path)


def _truncated(path):
    data = open(_smile_npz(path), 'rb').read()
    open(path, 'wb').write(data[:len(data) // 2])


def _crc_damaged(path):
    data = bytearray(open(_smile_npz(path), 'rb').read())
    data[data.index(b'PK\x03\x04', 4) - 1] ^= 0xFF  # the last byte of images.npy, the first member (stored)
    open(path, 'wb').write(bytes(data))


NPZ_DAMAGE = {  # name -> (how the archive is made, the message)
    'truncated': (_truncated, 'not a readable .npz archive'),
    '0 bytes': (lambda path: open(path, 'wb').close(), 'empty file (0 bytes)'),
    'text': (lambda path: open(path, 'w').write('images,labels\n'), 'not an .npz archive (not a zip file'),
    'CRC-damaged': (_crc_damaged, "cannot read an array of the archive (damaged or truncated: Bad CRC-32 for file 'images.npy')"),
    'scalar labels': (lambda path: _smile_npz(path, labels=np.array(1)), 'labels must be a 1-D array, got shape ()'),
    '2-D split': (lambda path: _smile_npz(path, split=np.zeros((4, 1), int)), 'split must be a 1-D array, got shape (4, 1)'),
    '48x0 images': (lambda path: _smile_npz(path, images=np.zeros((4, 48, 0), np.uint8)),
                    'the archive holds no pixels (images of shape (4, 48, 0))'),
}


@pytest.mark.parametrize('damage', sorted(NPZ_DAMAGE))
def test_damaged_npz_is_one_line_and_leaves_the_earlier_import(tmp_path, capsys, damage):
    out = str(tmp_path / 'data')
    assert run_main(['--task', 'smile', '--npz', _smile_npz(tmp_path / 'good.npz'), '--data-dir', out], capsys)[0] == 0
    before = {f: open(os.path.join(out, f), 'rb').read() for f in npy_files(out)}
    make, message = NPZ_DAMAGE[damage]
    path = str(tmp_path / 'faces.npz')
    make(path)
    code, _, err = run_main(['--task', 'smile', '--npz', path, '--data-dir', out, '--force'], capsys)
    assert code == 2 and err.startswith('error: %s: %s' % (path, message)) and err.count('\n') == 1, err
    assert {f: open(os.path.join(out, f), 'rb').read() for f in npy_files(out)} == before


def test_data_dir_that_is_a_file_is_one_line(tmp_path, capsys):
    blocker = tmp_path / 'data'
    blocker.write_text('my notes')
    npz = _smile_npz(tmp_path / 'faces.npz')
    for data_dir in (blocker, blocker / 'inside'):
        code, _, err = run_main(['--task', 'smile', '--npz', npz, '--data-dir', data_dir], capsys)
        assert code == 2 and err == 'error: %s: is a file, not a folder (give --data-dir a folder)\n' % blocker
    assert blocker.read_text() == 'my notes'


def test_forced_import_without_test_rows_removes_the_earlier_test_splits(tmp_path, fer_rows, capsys):
    out = str(tmp_path / 'data')
    assert run_main(['--fer2013', write_lines(tmp_path / 'all.csv', fer_lines(fer_rows)), '--data-dir', out], capsys)[0] == 0
    training = [r for r in fer_rows if r[2] == 'Training'][:5]
    csv = write_lines(tmp_path / 'train_only.csv', fer_lines(training))
    code, _, err = run_main(['--fer2013', csv, '--data-dir', out], capsys)
    assert code == 2 and 'already exists; pass --force' in err and len(npy_files(out)) == 3

    code, stdout, _ = run_main(['--fer2013', csv, '--data-dir', out, '--force'], capsys)
    assert code == 0
    assert npy_files(out) == ['emotion_data2/train.npy']  # no test split of the earlier import is left beside it
    assert read(out, EMOTION, 'train')[1].tolist() == [r[0] for r in training]
    for split in ('public_test', 'private_test'):
        path = data_utils.split_path(out, EMOTION, split)
        assert "%s: %s has no such split, so it is not written (removed the earlier import's file)" % (path, csv) in stdout


def _placeholder(out, task):
    """A one-face train split of task in out, standing for an earlier import; -> its path."""
    path = data_utils.split_path(out, task, 'train')
    data_utils.save_split(path, np.full((1, 48, 48), 7, np.uint8), np.array([1]), task)
    return path


@pytest.mark.parametrize('source', ['npz', 'genki', 'wiki', 'course'])
def test_every_source_refuses_to_overwrite_without_force(tmp_path, capsys, request, source):
    if source == 'npz':
        argv, task, n_train = ['--task', 'smile', '--npz', _smile_npz(tmp_path / 'faces.npz')], SMILE, 2
    elif source == 'course':
        argv, task, n_train = ['--course', request.getfixturevalue('course')[0], '--allow-pickle'], GENDER, 7
    else:
        argv = ['--' + source, request.getfixturevalue(source)[0]]
        task, n_train = (SMILE, 12) if source == 'genki' else (GENDER, 15)
    out = str(tmp_path / 'data')
    earlier = _placeholder(out, task)
    before = open(earlier, 'rb').read()
    code, stdout, err = run_main(argv + ['--data-dir', out], capsys)
    assert code == 2 and err == 'error: %s already exists; pass --force to overwrite it\n' % earlier
    assert npy_files(out) == [os.path.relpath(earlier, out)] and open(earlier, 'rb').read() == before

    assert run_main(argv + ['--data-dir', out, '--force'], capsys)[0] == 0
    assert len(read(out, task, 'train')[1]) == n_train


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
    code, stdout, _ = run_main(['--fer2013', write_lines(tmp_path / 'a.csv', fer_lines(fer_rows)), '--data-dir', out], capsys)
    assert code == 0
    assert stdout.splitlines()[0] == 'removed 2 temp file(s) left by an interrupted run: %s, %s' % tuple(sorted(map(str, leftovers)))
    assert npy_files(str(out)) == ['emotion_data2/private_test.npy', 'emotion_data2/public_test.npy',
                                   'emotion_data2/train.npy']


def test_demo_refuses_to_overwrite_then_force_rewrites(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(prepare_data, 'DEMO_SIZES', {SMILE: (4, 2), EMOTION: (7, 7), GENDER: (4, 2)})
    out = str(tmp_path / 'data')
    assert run_main(['--demo', '--data-dir', out], capsys)[0] == 0
    first = {f: open(os.path.join(out, f), 'rb').read() for f in npy_files(out)}
    assert len(first) == 7
    code, _, err = run_main(['--demo', '--data-dir', out, '--seed', '1'], capsys)
    assert code == 2 and err.count('\n') == 1 and 'already exists; pass --force' in err
    assert {f: open(os.path.join(out, f), 'rb').read() for f in npy_files(out)} == first
    assert run_main(['--demo', '--data-dir', out, '--seed', '1', '--force'], capsys)[0] == 0
    second = {f: open(os.path.join(out, f), 'rb').read() for f in npy_files(out)}
    assert set(second) == set(first) and all(second[f] != first[f] for f in first)


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
            images, labels = read(out, task, split)
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
