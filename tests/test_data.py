"""data_utils and data_provider on the demo data set: the handout's check cells and the Dataset contract."""
import collections
import os
import shutil
import stat

import numpy as np
import pytest

import data_provider
import data_utils
from config import EMOTION, GENDER, IMAGE_SIZE, SMILE, TASK_NAMES, TASKS
from conftest import handout_all_data_cell

BLACK = (0 - 128) / 255.0
WHITE = (255 - 128) / 255.0


def raw_split(data_dir, task, split):
    """A split read straight with numpy (not through data_utils): (images uint8, labels)."""
    records = np.load(data_utils.split_path(data_dir, task, split))
    return records['image'], records['label']


def files_of(data_dir, data_type):
    """[(task, images, labels)] in the Dataset's task order for one data type."""
    return [(t,) + raw_split(data_dir, t, data_utils.DATA_TYPES[data_type][t]) for t in TASKS]


def file_keys(data_dir, data_type):
    """One hashable key per sample (pixels, label, task) in file order."""
    return [(img.tobytes(), int(label), float(t))
            for t, images, labels in files_of(data_dir, data_type) for img, label in zip(images, labels)]


def batch_keys(images, labels, indexes):
    """The same keys for one gen() batch, pixels recovered from the normalised floats."""
    pixels = np.rint(images[..., 0] * 255.0 + 128.0).astype(np.uint8)
    return [(p.tobytes(), int(np.argmax(lab)), float(i)) for p, lab, i in zip(pixels, labels, indexes)]


def epoch_keys(ds):
    return [k for batch in ds.gen() for k in batch_keys(*batch)]


# ----------------------------------------------------------------------------- the handout's check cells

def test_handout_cell_all_data(demo_dir):
    expected = sum(data_utils.count_split(data_utils.split_path(demo_dir, t, s)) for t, s in
                   ((SMILE, 'test'), (EMOTION, 'public_test'), (GENDER, 'test')))
    assert expected == 300 + 350 + 300  # DEMO_SIZES: the counts the cell below must find

    handout_all_data_cell(demo_dir, 'public_test', expected)


@pytest.mark.parametrize('data_type', ['public_test', 'private_test', 'train'])
def test_handout_cell_gen_batches_of_1000(demo_dir, data_type):
    total = sum(len(labels) for _, _, labels in files_of(demo_dir, data_type))
    full, rest = divmod(total, 1000)
    expected = [1000] * full + ([rest] if rest else [])
    assert len(expected) == (1 if data_type != 'train' else 5)  # 950 / 950 / 4500 demo samples

    dataset = data_provider.Dataset(data_type=data_type, batch_size=1000, data_dir=demo_dir)
    sizes = []
    for batch_images, batch_labels, batch_indexes in dataset.gen():
        n, m, k = len(batch_images), len(batch_labels), len(batch_indexes)
        assert n == m == k
        sizes.append(n)
    assert sizes == expected
    assert dataset.steps_per_epoch() == len(expected)


def test_read_data_prints_the_handout_lines(demo_dir, capsys):
    data = data_utils.read_data(demo_dir, 'public_test')
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 12
    for block, task in zip(range(0, 12, 4), TASKS):
        name = TASK_NAMES[task]
        n_train = len(raw_split(demo_dir, task, 'train')[1])
        assert lines[block].startswith('Load %s image...' % name)
        assert lines[block + 1] == 'Done !'
        assert lines[block + 2] == 'Number of %s train data:  %d' % (name, n_train)
        assert set(lines[block + 3]) == {'-'}
    assert [len(data[t][1]) for t in TASKS] == [300, 350, 300]


def test_read_data_missing_file_says_how_to_make_it(tmp_path):
    with pytest.raises(data_utils.DataError, match=r'smile_data.train\.npy: file not found; create it with: python prepare_data.py'):
        data_utils.read_data(str(tmp_path), 'train')


# ----------------------------------------------------------------------------- Dataset contents

def test_all_data_items_are_normalised_copies_of_the_files(demo_dir):
    ds = data_provider.Dataset('public_test', data_dir=demo_dir, verbose=False)
    start = 0
    for task, images, labels in files_of(demo_dir, 'public_test'):
        for j in (0, 1, len(labels) - 1):
            img, label, index = ds.all_data[start + j]
            assert img.dtype == np.float32 and img.shape == (IMAGE_SIZE, IMAGE_SIZE, 1)
            np.testing.assert_allclose(img[..., 0], (images[j].astype(np.float64) - 128) / 255, atol=1e-7)
            assert label.shape == (7,) and label.sum() == 1 and label[labels[j]] == 1
            assert index == float(task)
        start += len(labels)
    assert start == len(ds.all_data)
    last = ds.all_data[-1]
    np.testing.assert_array_equal(last[0], ds.all_data[len(ds.all_data) - 1][0])
    assert [item[2] for item in ds.all_data[298:302]] == [1.0, 1.0, 2.0, 2.0]  # slices work, across tasks


def test_dataset_holds_uint8_pixels_only(demo_dir):
    ds = data_provider.Dataset('train', data_dir=demo_dir, verbose=False)
    n = 1200 + 2100 + 1200
    assert ds.images.dtype == np.uint8 and ds.images.shape == (n, 48, 48)
    assert ds.images.nbytes == n * 2304 and ds.images.flags['C_CONTIGUOUS']
    assert ds.labels.dtype == np.int64 and ds.indexes.dtype == np.float32
    assert np.bincount(ds.indexes.astype(int)).tolist() == [0, 1200, 2100, 1200]
    held = sum(v.nbytes for v in vars(ds).values() if isinstance(v, np.ndarray))
    assert held == n * (2304 + 8 + 4)  # no float copy of the pixels anywhere
    assert not isinstance(ds.images, np.memmap)


def test_load_split_into_out_arrays_matches_a_plain_load(demo_dir):
    path = data_utils.split_path(demo_dir, EMOTION, 'train')  # 2100 records: more than one read chunk
    images, labels = data_utils.load_split(path)
    out = (np.full((2100, 48, 48), 7, np.uint8), np.full(2100, -1, np.int64))
    got = data_utils.load_split(path, out=out)
    assert got[0] is out[0] and got[1] is out[1]
    np.testing.assert_array_equal(out[0], images)
    np.testing.assert_array_equal(out[1], labels)


def test_saved_files_get_the_usual_mode(tmp_path):
    old = os.umask(0o022)
    try:
        path = str(tmp_path / 'smile_data' / 'test.npy')
        data_utils.save_split(path, np.zeros((2, 48, 48), np.uint8), np.array([0, 1]), SMILE)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert os.listdir(str(tmp_path / 'smile_data')) == ['test.npy']  # no temp file left behind


# ----------------------------------------------------------------------------- gen()

def test_gen_covers_every_sample_once_and_reshuffles_each_epoch(demo_dir):
    expected = collections.Counter(file_keys(demo_dir, 'train'))
    assert len(expected) == 4500  # all samples distinct, so keys identify them

    a = data_provider.Dataset('train', batch_size=256, data_dir=demo_dir, seed=5, verbose=False)
    b = data_provider.Dataset('train', batch_size=256, data_dir=demo_dir, seed=5, verbose=False)
    c = data_provider.Dataset('train', batch_size=256, data_dir=demo_dir, seed=6, verbose=False)
    a1, a2 = epoch_keys(a), epoch_keys(a)
    b1, b2 = epoch_keys(b), epoch_keys(b)
    c1 = epoch_keys(c)

    assert collections.Counter(a1) == expected and collections.Counter(a2) == expected
    assert a1 == b1 and a2 == b2  # same seed, same orders
    assert a1 != a2  # a new order every epoch
    assert a1 != c1  # another seed, another order
    assert a1 != file_keys(demo_dir, 'train')  # shuffled at all
    first = a1[:256]
    assert len({k[2] for k in first}) == 3  # batches mix the three tasks


def test_soft_labels_travel_with_their_faces(demo_dir):
    ds = data_provider.Dataset('train', batch_size=256, data_dir=demo_dir, task_weights=(2, 1, 0.5), seed=3,
                               verbose=False)
    ds.soft_labels = np.zeros((len(ds.labels), 7), np.float32)
    ds.soft_labels[:, 0] = np.arange(len(ds.labels))  # each row names its sample
    seen = 0
    for images, labels, indexes in ds.gen():
        rows = labels[:, 0].astype(int)
        np.testing.assert_array_equal(images[..., 0], data_utils.normalize(ds.images[rows]))
        np.testing.assert_array_equal(indexes, ds.indexes[rows])
        seen += len(rows)
    assert seen == ds.epoch_size()


def test_test_sets_come_in_file_order_unshuffled(demo_dir):
    ds = data_provider.Dataset('private_test', batch_size=100, data_dir=demo_dir, verbose=False)
    assert epoch_keys(ds) == file_keys(demo_dir, 'private_test')
    assert epoch_keys(ds) == file_keys(demo_dir, 'private_test')


def test_task_weights_set_copies_per_epoch(demo_dir):
    smile = collections.Counter(k for k in file_keys(demo_dir, 'train') if k[2] == SMILE)
    ds = data_provider.Dataset('train', batch_size=128, data_dir=demo_dir, seed=1, task_weights=(2.5, 1, 0),
                               verbose=False)
    assert ds.epoch_size() == 2 * 1200 + 600 + 2100
    assert ds.steps_per_epoch() == 40  # ceil(5100 / 128)
    triples = []
    for _ in range(2):
        keys = epoch_keys(ds)
        assert len(keys) == 5100
        per_task = collections.Counter(k[2] for k in keys)
        assert per_task == {1.0: 3000, 2.0: 2100}  # 2.5x smile, 1x emotion, no gender
        counts = collections.Counter(k for k in keys if k[2] == SMILE)
        assert set(counts) == set(smile)  # every smile sample at least twice ...
        assert collections.Counter(counts.values()) == {2: 600, 3: 600}  # ... and a random half a third time
        assert all(n == 1 for k, n in collections.Counter(keys).items() if k[2] == EMOTION)
        triples.append({k for k, n in counts.items() if n == 3})
    assert triples[0] != triples[1]  # the extra half is drawn again each epoch


def test_bad_task_weights_are_refused(demo_dir):
    with pytest.raises(ValueError, match='task_weights'):
        data_provider.Dataset('train', data_dir=demo_dir, task_weights=(1, -1, 1), verbose=False)


def test_augmented_gen_keeps_labels_and_changes_pixels(demo_dir):
    plain = data_provider.Dataset('train', batch_size=500, data_dir=demo_dir, seed=9, verbose=False)
    aug = data_provider.Dataset('train', batch_size=500, data_dir=demo_dir, seed=9, augment=True, verbose=False)
    changed = 0
    for (x0, y0, i0), (x1, y1, i1) in zip(plain.gen(), aug.gen()):
        assert x1.shape == x0.shape and x1.shape[1:] == (48, 48, 1) and x1.dtype == np.float32
        np.testing.assert_array_equal(y1, y0)  # the first epoch's order is drawn before any augmentation
        np.testing.assert_array_equal(i1, i0)
        assert x1.min() >= BLACK - 1e-6 and x1.max() <= WHITE + 1e-6
        changed += int(np.sum(np.abs(x1 - x0).max(axis=(1, 2, 3)) > 0.05))
    assert changed > 4000  # nearly every image moved (shift in +-10 px, flips, rotations)


# ----------------------------------------------------------------------------- augment_batch geometry

class ScriptedRng(object):
    """Stands in for np.random.RandomState with fixed draws: shift, flip, rotation gate, angle."""

    def __init__(self, shift=(0, 0), flip=False, rotate=False, angle=0.0):
        self.shift, self.angle = shift, angle
        self.rands = [0.1 if flip else 0.9, 0.1 if rotate else 0.9]  # augment_batch asks flip first

    def randint(self, low, high, size):
        return np.tile(np.array(self.shift), (size[0], 1))

    def rand(self, n):
        return np.full(n, self.rands.pop(0))

    def uniform(self, low, high, n):
        assert low <= self.angle <= high
        return np.full(n, self.angle)


@pytest.fixture
def pictures():
    return np.random.RandomState(0).randint(0, 256, size=(3, 48, 48)).astype(np.uint8)


def test_augment_without_shift_flip_or_rotation_is_identity(pictures):
    out = data_provider.augment_batch(pictures, ScriptedRng(), pad=0)
    assert out.shape == (3, 48, 48) and out.dtype == np.float32
    np.testing.assert_allclose(out, data_utils.normalize(pictures), atol=1e-6)


def test_augment_flip_is_fliplr(pictures):
    out = data_provider.augment_batch(pictures, ScriptedRng(flip=True), pad=0)
    expected = data_utils.normalize(pictures[:, :, ::-1])
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert np.abs(out - data_utils.normalize(pictures)).max() > 0.5  # a real change


def test_augment_shift_moves_pixels_and_pads_black(pictures):
    out = data_provider.augment_batch(pictures, ScriptedRng(shift=(2, -1)), pad=3)
    norm = data_utils.normalize(pictures)
    np.testing.assert_allclose(out[:, 2:, :-1], norm[:, :-2, 1:], atol=1e-6)  # down 2 rows, left 1 column
    np.testing.assert_allclose(out[:, :2, :], BLACK, atol=1e-6)
    np.testing.assert_allclose(out[:, :, -1], BLACK, atol=1e-6)


def test_augment_rotation_by_90_degrees_is_rot90(pictures):
    out = data_provider.augment_batch(pictures, ScriptedRng(rotate=True, angle=90.0), pad=0, max_rotation=90.0)
    expected = data_utils.normalize(np.rot90(pictures, k=-1, axes=(1, 2)))
    np.testing.assert_allclose(out, expected, atol=1e-4)


def test_augment_with_a_real_rng_is_seeded_and_in_range(pictures):
    batch = np.repeat(pictures, 20, axis=0)
    a = data_provider.augment_batch(batch, np.random.RandomState(3))
    b = data_provider.augment_batch(batch, np.random.RandomState(3))
    c = data_provider.augment_batch(batch, np.random.RandomState(4))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 0.1
    assert a.shape == (60, 48, 48) and a.dtype == np.float32
    assert a.min() >= BLACK - 1e-6 and a.max() <= WHITE + 1e-6


def _erased_boxes(before, after):
    """The bounding box (y0, y1, x0, x1) of the pixels that changed in each image, or None."""
    boxes = []
    for a, b in zip(before, after):
        ys, xs = np.nonzero(a != b)
        boxes.append((ys.min(), ys.max() + 1, xs.min(), xs.max() + 1) if len(ys) else None)
    return boxes


def test_random_erasing_replaces_one_rectangle_in_the_chosen_share():
    flat = np.full((400, 48, 48), 3.0, np.float32)  # a value the noise (within the pixel range) never hits exactly
    out = data_provider.erase_rectangles(flat.copy(), np.random.RandomState(0), 0.5)
    boxes = _erased_boxes(flat, out)
    erased = [b for b in boxes if b is not None]
    assert 160 < len(erased) < 240  # binomial(400, 0.5): 200 +- 5 sigma
    for (y0, y1, x0, x1), image in zip(erased, out[[b is not None for b in boxes]]):
        area = (y1 - y0) * (x1 - x0)
        low, high = data_provider.ERASE_AREA
        assert low * 48 * 48 * 0.5 <= area <= high * 48 * 48 * 1.5  # rounding of the sides
        inside = image[y0:y1, x0:x1]
        assert np.all(inside != 3.0), 'the changed pixels form one filled rectangle'
        assert BLACK - 1e-6 <= inside.min() and inside.max() <= WHITE + 1e-6
        assert np.std(inside) > 0.1  # noise, not a flat patch
    untouched = out[[b is None for b in boxes]]
    np.testing.assert_array_equal(untouched, 3.0)


def test_random_erasing_off_or_zero_share_changes_nothing(pictures):
    rng = np.random.RandomState(5)
    np.testing.assert_array_equal(data_provider.augment_batch(pictures, ScriptedRng(), pad=0, erase=0.0),
                                  data_utils.normalize(pictures))
    flat = np.zeros((50, 48, 48), np.float32)
    np.testing.assert_array_equal(data_provider.erase_rectangles(flat.copy(), rng, 0.0), flat)


def test_dataset_passes_random_erasing_to_its_batches(demo_dir):
    kwargs = dict(data_type='train', batch_size=256, data_dir=demo_dir, augment=True, aug_pad=0, verbose=False)
    erased = data_provider.Dataset(random_erasing=1.0, seed=7, **kwargs)
    plain = data_provider.Dataset(seed=7, **kwargs)
    images = next(erased.gen())[0]
    # the same draws up to the erasing, then every face has a rectangle of noise the plain one lacks
    differs = np.abs(images - next(plain.gen())[0]).reshape(len(images), -1).max(axis=1) > 0
    assert differs.all()


# ----------------------------------------------------------------------------- the course's pickled files

def pickled_pairs(path, images, labels, as_rows=True):
    """Save (image, label) pairs the way the course did: an object array, readable only by unpickling."""
    if as_rows:
        arr = np.empty((len(images), 2), dtype=object)
        for i, (img, lab) in enumerate(zip(images, labels)):
            arr[i, 0], arr[i, 1] = img, lab
    else:
        arr = np.empty(len(images), dtype=object)
        for i, pair in enumerate(zip(images, labels)):
            arr[i] = pair
    np.save(path, arr, allow_pickle=True)


def test_pickled_file_is_refused_then_read_with_allow_pickle(tmp_path):
    rng = np.random.RandomState(1)
    images = rng.randint(0, 256, (5, 48, 48)).astype(np.uint8)
    labels = [0, 1, 1, 0, 1]
    path = str(tmp_path / 'train.npy')
    pickled_pairs(path, images, labels)

    with pytest.raises(data_utils.DataError) as err:
        data_utils.load_split(path)
    msg = str(err.value)
    assert path in msg and 'allow_pickle' in msg and 'pickle can run code' in msg and '\n' not in msg
    with pytest.raises(data_utils.DataError, match='allow_pickle'):
        data_utils.count_split(path)

    got_images, got_labels = data_utils.load_split(path, allow_pickle=True)
    assert got_images.dtype == np.uint8 and got_labels.dtype == np.int64
    np.testing.assert_array_equal(got_images, images)
    assert got_labels.tolist() == labels


def test_pickled_normalised_images_and_one_hot_labels_are_decoded(tmp_path):
    rng = np.random.RandomState(2)
    images = rng.randint(0, 256, (4, 48, 48)).astype(np.uint8)
    normalised = [((img.astype(np.float32) - 128) / 255).reshape(48, 48, 1) for img in images]
    labels = [np.eye(7)[3], np.eye(7)[6], np.array([1]), 0]  # one-hot, a 1-element array, an int
    path = str(tmp_path / 'pairs.npy')
    pickled_pairs(path, normalised, labels, as_rows=False)
    got_images, got_labels = data_utils.load_split(path, allow_pickle=True)
    np.testing.assert_array_equal(got_images, images)
    assert got_labels.tolist() == [3, 6, 1, 0]


def test_dataset_reads_a_pickled_split_only_with_allow_pickle(demo_dir, tmp_path):
    data_dir = str(tmp_path / 'data')
    shutil.copytree(demo_dir, data_dir)
    images, labels = raw_split(demo_dir, SMILE, 'test')
    path = data_utils.split_path(data_dir, SMILE, 'test')
    pickled_pairs(path, images, labels)
    with pytest.raises(data_utils.DataError, match='allow_pickle'):
        data_provider.Dataset('public_test', data_dir=data_dir, verbose=False)
    ds = data_provider.Dataset('public_test', data_dir=data_dir, allow_pickle=True, verbose=False)
    ref = data_provider.Dataset('public_test', data_dir=demo_dir, verbose=False)
    np.testing.assert_array_equal(ds.images, ref.images)
    np.testing.assert_array_equal(ds.labels, ref.labels)


# ----------------------------------------------------------------------------- validation split and bad files

def test_validation_is_a_stratified_tenth_of_smile_and_gender_train_plus_emotion_public_test(demo_dir):
    full = collections.Counter(file_keys(demo_dir, 'train'))
    train = data_provider.Dataset('train', data_dir=demo_dir, validation_fraction=0.1, verbose=False)
    val = data_provider.Dataset('validation', data_dir=demo_dir, verbose=False)
    train_keys = collections.Counter(epoch_keys(train))
    val_keys = [k for k in epoch_keys(val)]
    held = [k for k in val_keys if k[2] != EMOTION]
    # smile and gender: train and validation partition the train files; emotion train stays whole
    assert train_keys + collections.Counter(held) == full
    assert not set(train_keys) & set(held)
    for task in (SMILE, GENDER):
        _, labels = raw_split(demo_dir, task, 'train')
        got = collections.Counter(k[1] for k in held if k[2] == task)
        assert got == {c: round(0.1 * n) for c, n in collections.Counter(labels.tolist()).items()}
    # emotion: exactly the public test split, in file order
    assert [k for k in val_keys if k[2] == EMOTION] == [k for k in file_keys(demo_dir, 'public_test')
                                                       if k[2] == EMOTION]


def test_the_validation_split_depends_on_the_labels_only(demo_dir):
    a = data_provider.Dataset('validation', data_dir=demo_dir, seed=1, verbose=False)
    b = data_provider.Dataset('validation', data_dir=demo_dir, seed=2, verbose=False)
    assert epoch_keys(a) == epoch_keys(b)
    labels = np.array([0] * 30 + [1] * 70)
    mask = data_utils.validation_mask(labels, 0.2)
    assert (mask[:30].sum(), mask[30:].sum()) == (6, 14)
    np.testing.assert_array_equal(mask, data_utils.validation_mask(labels, 0.2))
    assert data_provider.Dataset('train', data_dir=demo_dir, verbose=False).task_sizes == {
        t: len(raw_split(demo_dir, t, 'train')[1]) for t in TASKS}  # the handout's 'train' stays whole


def test_a_resumed_epoch_continues_the_same_order(demo_dir):
    ds = data_provider.Dataset('train', batch_size=100, data_dir=demo_dir, verbose=False)
    ds.reseed([7, 3])
    whole = epoch_keys(ds)
    ds.reseed([7, 3])
    tail = [k for batch in ds.gen(start_batch=12) for k in batch_keys(*batch)]
    assert tail == whole[1200:]
    ds.reseed([7, 4])
    assert epoch_keys(ds) != whole  # the next epoch has another order


def test_a_file_that_is_not_npy_is_not_called_pickled(tmp_path):
    path = str(tmp_path / 'train.npy')
    with open(path, 'wb') as f:
        f.write(np.random.RandomState(0).bytes(500))
    with pytest.raises(data_utils.DataError) as err:
        data_utils.load_split(path)
    assert str(err.value) == '%s: not a .npy file (it does not start with the NumPy header)' % path


@pytest.mark.parametrize('task, bad', [(EMOTION, -1), (EMOTION, 7), (SMILE, 5), (GENDER, 9)])
def test_out_of_range_labels_are_refused_on_load(demo_dir, tmp_path, task, bad):
    data_dir = str(tmp_path / 'data')
    shutil.copytree(demo_dir, data_dir)
    path = data_utils.split_path(data_dir, task, 'train')
    records = np.load(path)
    records['label'][[5, 9, 11]] = bad
    np.save(path, records)
    with pytest.raises(data_utils.DataError) as err:
        data_provider.Dataset('train', data_dir=data_dir, verbose=False)
    assert str(err.value) == '%s: 3 %s label(s) out of range 0..%d, e.g. %d (first at item 5)' % (
        path, TASK_NAMES[task], {SMILE: 1, EMOTION: 6, GENDER: 1}[task], bad)
