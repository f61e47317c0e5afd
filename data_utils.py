"""Reading and writing the practice's data files.

Layout under a data folder (what the handout reads):
  smile_data/{train,test}.npy
  emotion_data2/{train,public_test,private_test}.npy
  gender_data/{train,test}.npy
Each file is one structured array of RECORD_DTYPE (48x48 uint8 image, int64 label) that loads
with allow_pickle=False. A file still listed in the data folder's files.UNFINISHED (an import
stopped while it moved its files into place) is refused: it may not belong with the others.

Public functions:
  split_path(data_dir, task, split)      where a split lives
  data_dir_of(path)                      the data folder of a split file
  load_split(path, mmap=False, allow_pickle=False, out=None) -> (images uint8 (N,48,48), labels int64 (N,))
  save_split(path, images, labels, task, force=False)   validated, atomic write
  check_images(images, labels, task, source)            the validation save_split uses
  count_split(path)                      number of records, without reading the pixels
  read_data(data_dir, data_type, mmap=False, tasks=TASKS)   the handout's loader: prints its "Load ... Done !" lines
  check_labels(labels, task, source)     DataError unless every label is in the task's range
  check_npz(path)                        DataError unless the file starts as an .npz (a zip) does
  validation_mask(labels, fraction)      the stratified, seeded held-out part of a train split
  VALIDATION_TASKS                       the tasks whose validation part is carved from their train split
  normalize(images)                      uint8 -> float32 (p - 128) / 255, the handout's normalisation
  to_pixels(images)                      back to uint8 (the course's old files hold either form)
  DataError                              bad or missing input; its message is one line for the user
"""
import errno
import os

import numpy as np

import files
from config import EMOTION, GENDER, IMAGE_SIZE, NUM_CLASSES, SMILE, TASK_NAMES, TASKS

RECORD_DTYPE = np.dtype([('image', 'u1', (IMAGE_SIZE, IMAGE_SIZE)), ('label', '<i8')])

TASK_FOLDERS = {SMILE: 'smile_data', EMOTION: 'emotion_data2', GENDER: 'gender_data'}
TASK_SPLITS = {
    SMILE: ('train', 'test'),
    EMOTION: ('train', 'public_test', 'private_test'),
    GENDER: ('train', 'test'),
}
# Which split of each task makes up the handout's three data types.
DATA_TYPES = {
    'train': {SMILE: 'train', EMOTION: 'train', GENDER: 'train'},
    'public_test': {SMILE: 'test', EMOTION: 'public_test', GENDER: 'test'},
    'private_test': {SMILE: 'test', EMOTION: 'private_test', GENDER: 'test'},
    # FER-2013 PublicTest is that set's official validation split; GENKI-4K and WIKI have none, so a
    # part of their train splits is held out (Dataset's validation_fraction).
    'validation': {SMILE: 'train', EMOTION: 'public_test', GENDER: 'train'},
}
VALIDATION_TASKS = (SMILE, GENDER)
VALIDATION_SEED = 2017  # fixed, not the training seed: every run holds out the same faces
PREPARE_HINT = {
    SMILE: 'python prepare_data.py --task smile --npz ... (or --genki DIR), or --demo',
    EMOTION: 'python prepare_data.py --task emotion --npz ... (or --fer2013 fer2013.csv), or --demo',
    GENDER: 'python prepare_data.py --task gender --npz ... (or --wiki DIR), or --demo',
}


class DataError(Exception):
    """Bad or missing input data; str() is a one-line message naming the file."""


def split_path(data_dir, task, split):
    if split not in TASK_SPLITS[task]:
        raise ValueError('%s has no split %r (it has %s)' % (TASK_NAMES[task], split, ', '.join(TASK_SPLITS[task])))
    return os.path.join(data_dir, TASK_FOLDERS[task], split + '.npy')


def data_dir_of(path):
    """The data folder of a split file (the parent of its task folder)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(path)))


def _open(path, mmap, allow_pickle):
    if not os.path.isfile(path):
        raise DataError('%s: file not found' % path)
    # np.load takes any file without the .npy header for a pickle: tell garbage from one first.
    if not _starts_with(path, (b'\x93NUMPY', b'\x80')):
        raise DataError('%s: not a .npy file (it does not start with the NumPy header)' % path)
    try:
        return np.load(path, mmap_mode='r' if mmap else None, allow_pickle=allow_pickle)
    except ValueError as err:
        pickled = 'allow_pickle' in str(err) or 'Python objects' in str(err)  # the latter when mapping
        if pickled and allow_pickle and mmap:  # pickled objects cannot be mapped: read them whole
            return _open(path, False, allow_pickle)
        if pickled:
            raise DataError(
                '%s holds pickled Python objects (the course\'s old format); refusing to unpickle it because '
                'pickle can run code. If you trust it, convert its folder once with: python prepare_data.py --course '
                'FOLDER --allow-pickle (in Python: allow_pickle=True)' % path) from None
        raise DataError('%s: not a readable .npy file (%s)' % (path, err)) from None
    except (OSError, EOFError) as err:
        raise DataError('%s: not a readable .npy file (%s)' % (path, err)) from None


def check_npz(path):
    """DataError naming path unless it starts like an .npz archive (a zip): np.load takes any other
    file for a pickle, and its error would advise allowing pickles."""
    if not os.path.isfile(path):
        raise DataError('%s: %s' % (path, 'a folder, not an .npz archive' if os.path.isdir(path) else 'file not found'))
    if os.path.getsize(path) == 0:
        raise DataError('%s: empty file (0 bytes), not an .npz archive' % path)
    if _starts_with(path, (b'\x93NUMPY',)):
        raise DataError('%s: a single .npy array, not an .npz archive' % path)
    if not _starts_with(path, (b'PK',)):
        raise DataError('%s: not an .npz archive (not a zip file; an .npz is a zip of .npy arrays)' % path)


def _starts_with(path, prefixes):
    try:
        with open(path, 'rb') as f:
            return f.read(max(map(len, prefixes))).startswith(prefixes)
    except OSError as err:
        raise DataError('%s: cannot be read (%s)' % (path, err.strerror)) from None


def load_split(path, mmap=False, allow_pickle=False, out=None):
    """Read one split file and return (images, labels).

    allow_pickle=True also accepts the course's pickled arrays of (image, label) pairs; the
    image may be uint8 pixels or normalised floats, the label an int or a one-hot vector.
    out=(images, labels): arrays of exactly the file's length to fill and return; a record file
    is then read in small chunks, so no second copy of the split is ever held in memory.
    """
    half = files.unfinished(path, data_dir_of(path))
    if half:
        raise DataError(half + '; import the data again (prepare_data.py ... --force)')
    arr = _open(path, mmap or out is not None, allow_pickle)  # with out, the map only checks the header
    if arr.dtype == RECORD_DTYPE:
        if arr.ndim != 1:
            raise DataError('%s: expected a 1-D record array, got shape %s' % (path, arr.shape))
        if out is not None:
            return _read_records_into(path, arr, out)
        return arr['image'], arr['label']
    if arr.dtype == object and allow_pickle:
        images, labels = _from_pairs(path, arr)
        if out is not None:
            _check_out(path, len(labels), out)
            out[0][...], out[1][...] = images, labels
            return out
        return images, labels
    raise DataError('%s: expected a record array of dtype %s, got dtype %s shape %s'
                    % (path, RECORD_DTYPE.descr, arr.dtype, arr.shape))


def _check_out(path, n, out):
    images, labels = out
    if images.shape != (n, IMAGE_SIZE, IMAGE_SIZE) or labels.shape != (n,):
        raise ValueError('%s holds %d records; out arrays have shapes %s and %s' % (path, n, images.shape, labels.shape))


def _read_records_into(path, mapped, out, chunk=2048):
    """Copy a record file's images and labels into out, reading chunk records at a time."""
    n = len(mapped)
    _check_out(path, n, out)
    with open(path, 'rb') as f:
        f.seek(mapped.offset)  # the map was only used for its header: none of its pages were read
        for start in range(0, n, chunk):
            block = np.fromfile(f, dtype=RECORD_DTYPE, count=min(chunk, n - start))
            out[0][start:start + len(block)] = block['image']
            out[1][start:start + len(block)] = block['label']
            if len(block) < min(chunk, n - start):
                raise DataError('%s: file is truncated (%d of %d records)' % (path, start + len(block), n))
    return out


def _from_pairs(path, arr):
    try:
        images = np.stack([np.asarray(pair[0], dtype=np.float64).reshape(IMAGE_SIZE, IMAGE_SIZE) for pair in arr])
        labels = np.array([int(np.argmax(pair[1])) if np.size(pair[1]) > 1 else int(np.ravel(pair[1])[0])
                           for pair in arr])
    except (TypeError, ValueError, IndexError) as err:
        raise DataError('%s: expected (48x48 image, label) pairs (%s)' % (path, err)) from None
    return to_pixels(images), labels.astype(np.int64)


def count_split(path):
    return len(_open(path, mmap=True, allow_pickle=False))


def check_labels(labels, task, source):
    """Raise DataError naming source, the first bad value and how many there are, unless all labels fit the task."""
    labels = np.asarray(labels)
    bad = (labels < 0) | (labels >= NUM_CLASSES[task])
    if bad.any():
        raise DataError('%s: %d %s label(s) out of range 0..%d, e.g. %d (first at item %d)'
                        % (source, int(bad.sum()), TASK_NAMES[task], NUM_CLASSES[task] - 1, labels[bad][0],
                           int(np.argmax(bad))))


def validation_mask(labels, fraction, seed=VALIDATION_SEED):
    """Boolean mask of the held-out faces: round(fraction * n) of each class, chosen by a fixed seed.

    Depends only on the labels, so the same file always gives the same split.
    """
    labels = np.asarray(labels)
    mask = np.zeros(len(labels), dtype=bool)
    rng = np.random.RandomState(seed)
    for value in np.unique(labels):
        members = np.flatnonzero(labels == value)
        mask[rng.permutation(members)[:int(round(fraction * len(members)))]] = True
    return mask


def check_images(images, labels, task, source):
    """Raise DataError unless images is (N,48,48) uint8 and labels are N ints in the task's range."""
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE) or images.dtype != np.uint8:
        raise DataError('%s: images must be uint8 of shape (N, %d, %d), got %s %s'
                        % (source, IMAGE_SIZE, IMAGE_SIZE, images.dtype, images.shape))
    if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError('%s: labels must be %d integers, got %s %s' % (source, len(images), labels.dtype, labels.shape))
    check_labels(labels, task, source)


def save_split(path, images, labels, task, force=False):
    """Write one split atomically: a temp file in the same folder, renamed into place."""
    check_images(images, labels, task, path)
    if os.path.exists(path) and not force:
        raise DataError('%s already exists; pass --force to overwrite it' % path)
    records = np.empty(len(images), dtype=RECORD_DTYPE)
    records['image'] = images
    records['label'] = labels
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    try:
        with files.atomic_write(path) as f:
            np.save(f, records, allow_pickle=False)
    except OSError as err:
        if err.errno is None:  # NumPy's short write, "N requested and M written": the disk is full
            raise OSError(errno.ENOSPC, '%s (%s)' % (os.strerror(errno.ENOSPC), err), path) from None
        raise


def normalize(images):
    return (np.asarray(images, dtype=np.float32) - 128.0) / 255.0


def to_pixels(images):
    """Old course arrays -> uint8: pixel values as they are, or normalised ones (all <= 1) mapped back."""
    images = np.asarray(images, dtype=np.float64)
    if images.size and images.max() <= 1.0:  # stored normalised as (p - 128) / 255
        images = images * 255.0 + 128.0
    return np.clip(np.rint(images), 0, 255).astype(np.uint8)


def read_data(data_dir='data', data_type='train', allow_pickle=False, verbose=True, mmap=False, tasks=TASKS):
    """Load the splits that make up data_type, of the three tasks or of those in `tasks`.

    Returns {task: (images uint8 (N,48,48), labels int64 (N,))}. Prints the handout's lines,
    which report each task's train count whatever data_type is asked for. mmap=True maps the
    files instead of reading them (pickled files are still read); labels read into memory are
    range-checked here, mapped ones are left to the reader (Dataset, evaluate) so the file is read once.
    """
    if data_type not in DATA_TYPES:
        raise ValueError('data_type must be one of %s, got %r' % (', '.join(DATA_TYPES), data_type))
    data = {}
    for task, split in DATA_TYPES[data_type].items():
        if task not in tasks:
            continue
        name = TASK_NAMES[task]
        path = split_path(data_dir, task, split)
        if not os.path.isfile(path):
            raise DataError('%s: file not found; create it with: %s' % (path, PREPARE_HINT[task]))
        if verbose:
            print('Load %s image%s' % (name, '.' * (18 if task == EMOTION else 19)))  # as the handout prints
        data[task] = load_split(path, mmap=mmap, allow_pickle=allow_pickle)
        if not mmap:  # mapped labels are checked by whoever reads them (reading them here reads the whole file)
            check_labels(data[task][1], task, path)
        if verbose:
            train = split_path(data_dir, task, 'train')
            n_train = len(data[task][0]) if split == 'train' else (
                count_split(train) if os.path.isfile(train) else 0)
            print('Done !')
            print('Number of %s train data: ' % name, n_train)
            print('---------------------------------------------------------------')
    return data
