"""prepare_data's folder sources on small fixtures written in the real formats: GENKI-4K and IMDB-WIKI
(pictures cropped around the largest Haar face, split by the seeded stratified split) and the course's
old pickled folder; and every source's refusal to overwrite an earlier import without --force.

The FER-2013 csv, .npz archives, the rest of the CLI and the real archives are test_prepare_data.py's.
"""
import collections
import os
import shutil

import cv2
import numpy as np
import pytest
import scipy.io

import data_provider
import data_utils
import demo_faces
import faces
import prepare_data
from config import EMOTION, GENDER, SMILE
from conftest import assert_refused, npy_files, read_split, run_prepare_data, smile_npz

# ----------------------------------------------------------------------------- face pictures for GENKI / WIKI

def face_picture(rng, task, label, size=200, face=120, tries=60):
    """A JPEG of a drawn face pasted into a larger gray picture, redrawn until Haar finds it there.

    -> (jpeg bytes, decoded gray picture, the pasted face's centre).
    """
    for _ in range(tries):
        small = demo_faces.draw_faces(task, [label], rng)[0]
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
    code, stdout, _ = run_prepare_data(['--genki', folder, '--data-dir', out], capsys)
    assert code == 0
    assert 'Haar found no face in 1 of 16 images' in stdout
    train, test = read_split(out, SMILE, 'train'), read_split(out, SMILE, 'test')
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


def _copy(source, tmp_path):
    """A copy of a fixture's folder (genki[0], wiki[0]) in tmp_path, under the same name, for a test to damage."""
    folder = str(tmp_path / os.path.basename(str(source)))
    shutil.copytree(source, folder)
    return folder


def test_genki_missing_labels(tmp_path, genki, capsys):
    folder = _copy(genki[0], tmp_path)
    os.remove(os.path.join(folder, 'labels.txt'))
    assert_refused(['--genki', folder], tmp_path / 'data', capsys, os.path.join(folder, 'labels.txt') + ': file not found')
    assert_refused(['--genki', folder + 'X'], tmp_path / 'data', capsys, folder + 'X: folder not found')


@pytest.mark.parametrize('bad', ['2 0.1 0.2 0.3', '1 0.1 0.2', 'yes 0.1 0.2 0.3', '1 0.1 abc 0.3', ''])
def test_genki_bad_label_line(tmp_path, genki, capsys, bad):
    folder = _copy(genki[0], tmp_path)
    path = os.path.join(folder, 'labels.txt')
    lines = open(path).read().splitlines()
    lines[2] = bad
    open(path, 'w').write('\n'.join(lines) + '\n')
    assert_refused(['--genki', folder], tmp_path / 'data', capsys, path + ' line 3: ', 'smile 0 or 1')


def test_genki_unreadable_and_missing_images(tmp_path, genki, capsys):
    folder = _copy(genki[0], tmp_path)
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
    for i, (rel, gender, _score, _second) in enumerate(WIKI_ENTRIES):
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
    code, stdout, _ = run_prepare_data(['--wiki', folder, '--data-dir', out, '--seed', '3'], capsys)
    assert code == 0
    assert '17 of 21 entries pass the filter' in stdout
    assert 'Haar found no face in 1 of 17 images' in stdout
    train, test = read_split(out, GENDER, 'train'), read_split(out, GENDER, 'test')
    assert np.bincount(train[1], minlength=2).tolist() == [9, 6]  # 15 train, 2 test, stratified
    assert np.bincount(test[1], minlength=2).tolist() == [1, 1]
    seen = collections.Counter()
    for images, labels in (train, test):
        for img, label in zip(images, labels):
            assert expected[img.tobytes()] == label  # only kept entries, with their own gender
            seen[img.tobytes()] += 1
    assert set(seen) == set(expected) and set(seen.values()) == {1}
    assert seen[blank.tobytes()] == 1


def test_wiki_bad_mat_files(tmp_path, wiki, capsys):
    folder = _copy(wiki[0], tmp_path)
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
    folder = _copy(wiki[0], tmp_path)
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
    code, stdout, _ = run_prepare_data(['--course', folder, '--allow-pickle', '--data-dir', out], capsys)
    assert code == 0
    assert len(npy_files(str(out))) == 7
    for (task, split), (images, labels) in expected.items():
        got_images, got_labels = read_split(out, task, split)
        np.testing.assert_array_equal(got_images, images)
        np.testing.assert_array_equal(got_labels, labels)
    assert len(read_split(out, EMOTION, 'train')[1]) == 8  # train + validation
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


# ----------------------------------------------------------------------------- every source

def _placeholder(out, task):
    """A one-face train split of task in out, standing for an earlier import; -> its path."""
    path = data_utils.split_path(out, task, 'train')
    data_utils.save_split(path, np.full((1, 48, 48), 7, np.uint8), np.array([1]), task)
    return path


@pytest.mark.parametrize('source', ['npz', 'genki', 'wiki', 'course'])
def test_every_source_refuses_to_overwrite_without_force(tmp_path, capsys, request, source):
    if source == 'npz':
        argv, task, n_train = ['--task', 'smile', '--npz', smile_npz(tmp_path / 'faces.npz')], SMILE, 2
    elif source == 'course':
        argv, task, n_train = ['--course', request.getfixturevalue('course')[0], '--allow-pickle'], GENDER, 7
    else:
        argv = ['--' + source, request.getfixturevalue(source)[0]]
        task, n_train = (SMILE, 12) if source == 'genki' else (GENDER, 15)
    out = str(tmp_path / 'data')
    earlier = _placeholder(out, task)
    before = open(earlier, 'rb').read()
    code, stdout, err = run_prepare_data(argv + ['--data-dir', out], capsys)
    assert code == 2 and err == 'error: %s already exists; pass --force to overwrite it\n' % earlier
    assert npy_files(out) == [os.path.relpath(earlier, out)] and open(earlier, 'rb').read() == before

    assert run_prepare_data(argv + ['--data-dir', out, '--force'], capsys)[0] == 0
    assert len(read_split(out, task, 'train')[1]) == n_train
