"""Turn public face data sets (or a generated demo set) into the practice's data layout.

  python prepare_data.py --demo                                   synthetic faces, all three tasks
  python prepare_data.py --task smile --npz ../shared/data/genki4k.npz
  python prepare_data.py --task emotion --npz ../shared/data/fer2013.npz
  python prepare_data.py --task gender --npz ../shared/data/gender.npz
  python prepare_data.py --fer2013 fer2013.csv                    Kaggle FER-2013 (.csv or .csv.gz)
  python prepare_data.py --genki GENKI4K                          labels.txt + files/fileNNNN.jpg
  python prepare_data.py --wiki wiki_crop                         IMDB-WIKI: wiki.mat + NN/*.jpg
  python prepare_data.py --course OLD_DATA --allow-pickle         the course's old pickled folder

Writes data/smile_data, data/emotion_data2 and data/gender_data (see data_utils). An import
replaces a task's whole data set and never overwrites without --force; with --force, a split the
new source lacks (say, a FER-2013 csv without PublicTest rows) is removed, not kept from the
earlier import. All inputs are read and checked before the first file is written; the files are
written to hidden temp files and renamed into place together, so a failed or interrupted
(Ctrl-C: exit code 130) import changes nothing, and temp files a killed run left behind are
removed by the next run. Bad input stops with one line that names the file and the fault.

Splits made here (seeded by --seed, stratified by label, so the class balance of train and test
is the same; GENKI-4K files are sorted by label, so a first-N split would be wrong):
  GENKI-4K  1000 test images, the rest train (a quarter of the images is test when there are
            fewer than 4000).
  WIKI      30,000 train and 4,118 test, the course's sizes. With fewer than 34,118 usable images
            the same 88/12 ratio is used (test = round(N * 4118 / 34118)); with more, the surplus
            is left out and the report says how many.
GENKI-4K and WIKI faces are cropped around the largest Haar face (faces.py, with its FACE_MARGIN);
when Haar finds none, the largest centred square is used instead, and the report counts those images.

Public functions:
  make_demo(data_dir, force, seed)   write the demo data set (its faces drawn by demo_faces.draw_faces)
  import_npz(path, task, data_dir, force)   import an archive of images/labels/split/split_names
  import_fer2013(path, data_dir, force)     Kaggle fer2013.csv(.gz) -> emotion splits
  import_genki(folder, data_dir, force, seed)   GENKI-4K folder -> smile splits
  import_wiki(folder, data_dir, force, seed)    wiki_crop folder -> gender splits
  stratified_split(labels, n_test, seed, n_train=None)   the seeded, class-balanced split used here
  wiki_split_sizes(n)             (train, test) sizes for n usable WIKI images
  import_course(folder, data_dir, force, allow_pickle)   the course's pickled folder -> all tasks
  preprocess_face(image, box=None)          any face picture -> 48x48 uint8 (faces.py's, shared with predict.py)
  crop_largest_face(image)        -> (48x48 face, found): the largest Haar face, or the centre square
"""
import gzip
import os
import sys
import zipfile
import zlib

import cli

if __name__ == '__main__':  # from the first slow import on, Ctrl-C is one line and exit code 130
    cli.start()

import cv2
import numpy as np
from tqdm import tqdm

import data_utils
import files
from config import CLASS_NAMES, EMOTION, GENDER, IMAGE_SIZE, NUM_CLASSES, SMILE, TASK_NAMES, TASKS
from data_utils import DataError
from demo_faces import draw_faces
from faces import detect_faces, preprocess_face, to_gray

TASK_BY_NAME = {name: task for task, name in TASK_NAMES.items()}
# Split names found in public archives -> the layout's split of each task.
SPLIT_ALIASES = {
    'train': 'train', 'training': 'train',
    'test': 'test', 'publictest': 'public_test', 'public_test': 'public_test', 'validation': 'public_test',
    'privatetest': 'private_test', 'private_test': 'private_test',
}
DEMO_SIZES = {  # (train, each test split) per task: small enough to train in ~2 minutes on 2 cores
    SMILE: (1200, 300),
    EMOTION: (2100, 350),
    GENDER: (1200, 300),
}
GENKI_TEST = 1000
WIKI_TRAIN, WIKI_TEST = 30000, 4118
FER_USAGE = {'Training': 'train', 'PublicTest': 'public_test', 'PrivateTest': 'private_test'}
PIXELS = IMAGE_SIZE * IMAGE_SIZE


# ----------------------------------------------------------------------------- faces

def crop_largest_face(image):
    """-> (48x48 uint8 face, found): the largest Haar face, or the centred square when none is found."""
    gray = to_gray(image)
    boxes = detect_faces(gray, 'haar')
    return preprocess_face(gray, boxes[0] if boxes else None), bool(boxes)


def _read_gray(path):
    """An image file -> gray uint8 (H,W); DataError naming the file if it cannot be decoded."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as err:
        raise DataError('%s: cannot read image (%s)' % (path, err.strerror or err)) from err
    try:
        image = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE) if data.size else None
    except cv2.error:
        image = None
    if image is None or image.size == 0:
        raise DataError('%s: not a readable image (empty, truncated or not an image file)' % path)
    return image


def _crop_files(paths, desc):
    """Read and crop every image: -> (faces uint8 (N,48,48), found bool (N,))."""
    faces = np.empty((len(paths), IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    found = np.zeros(len(paths), bool)
    for i, path in enumerate(tqdm(paths, desc=desc, unit='img', disable=None, leave=False)):
        faces[i], found[i] = crop_largest_face(_read_gray(path))
    return faces, found


# ----------------------------------------------------------------------------- npz archives

def import_npz(path, task, data_dir='data', force=False):
    """Import an archive with `images`, `labels`, `split` and `split_names` into the layout.

    Images may be (N,48,48) uint8 or any other size / colour (cropped square and resized).
    The archive replaces the task's whole data set: a split it lacks is not written (and with
    force, the earlier file of that split is removed). Returns {split: count}.
    """
    images, labels, split, split_names = _read_npz(path)
    _check_npz_arrays(path, images, labels, split, split_names)
    targets = _npz_split_targets(path, task, split, split_names)
    if images.shape[1:3] != (IMAGE_SIZE, IMAGE_SIZE) or images.ndim == 4:
        images = np.stack([preprocess_face(img) for img in images])
    data_utils.check_images(images, labels, task, path)
    out = _outputs(data_dir, task)
    _refuse_overwrite(out.values(), force)
    parts = {}
    for target in set(targets.values()):
        keep = np.isin(split, [c for c, t in targets.items() if t == target])
        parts[target] = images[keep], labels[keep], task
    return _write(out, parts, path)


NPZ_ARRAYS = ('images', 'labels', 'split', 'split_names')


def _read_npz(path):
    """The archive's four arrays -> (images, labels, split, split_names); DataError if it cannot be read."""
    data_utils.check_npz(path)
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise DataError('%s: not a readable .npz archive (%s)' % (path, err)) from err
    with archive:
        missing = [k for k in NPZ_ARRAYS if k not in archive.files]
        if missing:
            raise DataError('%s: missing array(s) %s (has %s)' % (path, ', '.join(missing), ', '.join(archive.files)))
        try:
            return tuple(archive[k] for k in NPZ_ARRAYS)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as err:
            raise DataError('%s: cannot read an array of the archive (damaged or truncated: %s)' % (path, err)) from err


def _check_npz_arrays(path, images, labels, split, split_names):
    """DataError unless labels, split and split_names are 1-D, split holds integer codes, the lengths
    agree and images are uint8 (N,H,W) or (N,H,W,C) with C 1, 3 or 4 and some pixels."""
    for name, array in (('labels', labels), ('split', split), ('split_names', split_names)):
        if array.ndim != 1:
            raise DataError('%s: %s must be a 1-D array, got shape %s' % (path, name, array.shape))
    if not np.issubdtype(split.dtype, np.integer):
        raise DataError('%s: split must hold integer codes into split_names, got %s' % (path, split.dtype))
    if len(labels) != len(images) or len(split) != len(images):
        raise DataError('%s: images, labels and split differ in length (%d, %d, %d)'
                        % (path, len(images), len(labels), len(split)))
    if images.ndim not in (3, 4) or images.dtype != np.uint8 or (images.ndim == 4 and images.shape[3] not in (1, 3, 4)):
        raise DataError('%s: images must be uint8 (N,H,W) or (N,H,W,C) with C 1, 3 or 4, got %s %s'
                        % (path, images.dtype, images.shape))
    if len(images) == 0 or 0 in images.shape[1:3]:
        raise DataError('%s: the archive holds no pixels (images of shape %s)' % (path, images.shape))


def _npz_split_targets(path, task, split, split_names):
    """-> {split code: the task's split it goes to}, from the names in split_names (SPLIT_ALIASES);
    DataError for a name with no place in the task, or a code of split that split_names lacks."""
    targets = {code: _npz_split_target(path, task, str(name)) for code, name in enumerate(split_names)}
    unknown = sorted(set(np.unique(split).tolist()) - set(targets))
    if unknown:
        raise DataError('%s: split code %s has no name in split_names' % (path, unknown[0]))
    return targets


def _npz_split_target(path, task, name):
    """One split name of an archive ('PublicTest', 'training', ...) -> the task's split it goes to."""
    target = SPLIT_ALIASES.get(name.lower().replace(' ', ''))
    if target == 'test' and 'test' not in data_utils.TASK_SPLITS[task]:
        raise DataError('%s: split %r is ambiguous for %s (use PublicTest / PrivateTest)'
                        % (path, name, TASK_NAMES[task]))
    if target == 'public_test' and task != EMOTION:
        target = 'test'
    if target is None or target not in data_utils.TASK_SPLITS[task]:
        raise DataError('%s: split name %r has no place in %s (expected one of %s)'
                        % (path, name, TASK_NAMES[task], ', '.join(data_utils.TASK_SPLITS[task])))
    return target


def _refuse_overwrite(paths, force):
    for folder in sorted({os.path.dirname(p) for p in paths}):
        _check_folder(folder)
    existing = [p for p in paths if os.path.exists(p)]
    if existing and not force:
        raise DataError('%s already exists; pass --force to overwrite it' % existing[0])


def _check_folder(folder):
    """DataError unless folder is a folder or can be made one (a file is not in the way)."""
    while folder and not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if folder and not os.path.isdir(folder):
        raise DataError('%s: is a file, not a folder (give --data-dir a folder)' % folder)


def _report(path, labels, task):
    per_class = np.bincount(labels, minlength=len(CLASS_NAMES[task]))
    print('%s: %d images (%s)' % (path, len(labels), ', '.join(
        '%s %d' % (name, n) for name, n in zip(CLASS_NAMES[task], per_class))))
    return len(labels)


# ----------------------------------------------------------------------------- shared helpers

TEMP_PREFIX = files.TEMP_PREFIX  # _write's staging folder and save_split's temp files


def _outputs(data_dir, task):
    return {s: data_utils.split_path(data_dir, task, s) for s in data_utils.TASK_SPLITS[task]}


def _write(out, parts, source):
    """Write parts {key: (images, labels, task)} to the paths out {key: path}; -> {key: count}.

    out holds all the paths the import replaces (checked by _refuse_overwrite): one without a
    part is not written, and an earlier file there is removed, so no split of an older import
    stays beside the new ones. Every file is first written in full to a hidden staging folder in
    the data folder and all are renamed into place at the end: an import stopped before that leaves the old files as they
    were; one stopped during the renames leaves them listed in files.UNFINISHED, and data_utils
    refuses them until an import replaces them. A failed import leaves no folder it made.
    """
    data_dir, made = data_utils.data_dir_of(next(iter(out.values()))), _missing_folders(out.values())
    try:
        with files.staging_folder(data_dir) as tmp:  # held: another run's clean-up leaves it alone
            staged = {key: os.path.join(tmp, '%d-%s' % (i, os.path.basename(out[key])))
                      for i, key in enumerate(sorted(parts))}
            for key, (images, labels, task) in sorted(parts.items()):
                try:
                    data_utils.save_split(staged[key], images, labels, task, force=True)
                except OSError as err:  # name the file the user asked for, not its staged copy
                    raise OSError(err.errno, err.strerror or str(err), out[key]) from None
            gone = [key for key in sorted(set(out) - set(parts)) if os.path.exists(out[key])]
            with files.publishing(data_dir, out.values()):
                for key in staged:
                    os.makedirs(os.path.dirname(out[key]), exist_ok=True)
                    os.replace(staged[key], out[key])
                for key in gone:
                    os.remove(out[key])
    except BaseException:
        for folder in made[::-1]:  # deepest first: a failed first import leaves no empty folder
            if os.path.isdir(folder) and not os.listdir(folder):
                os.rmdir(folder)
        raise
    for key in sorted(set(out) - set(parts)):
        print('%s: %s has no such split, so it is not written%s'
              % (out[key], source, ' (removed the earlier import\'s file)' if key in gone else ''))
    return {key: _report(out[key], labels, task) for key, (_, labels, task) in sorted(parts.items())}


def _missing_folders(paths):
    """The folders that writing paths will make, parents first."""
    missing = set()
    for folder in {os.path.dirname(os.path.abspath(p)) for p in paths}:
        while not os.path.exists(folder):
            missing.add(folder)
            folder = os.path.dirname(folder)
    return sorted(missing)


def _remove_leftovers(data_dir):
    """Remove the hidden temp files and staging folders an import killed mid-write left in data_dir and
    its task folders (those of an import still running stay)."""
    leftovers = []
    for folder in [data_dir] + [os.path.join(data_dir, f) for f in sorted(data_utils.TASK_FOLDERS.values())]:
        leftovers += [os.path.join(folder, name) for name in files.remove_leftovers(folder, TEMP_PREFIX)]
    if leftovers:
        print('removed %d temp file(s) left by an interrupted run: %s' % (len(leftovers), ', '.join(sorted(leftovers))))


def _allocate(sizes, total):
    """Share `total` over classes in proportion to `sizes` (largest remainder, exact integers)."""
    n = sum(sizes)
    alloc = [total * s // n for s in sizes]
    remainders = [total * s % n for s in sizes]
    for c in sorted(range(len(sizes)), key=lambda c: (-remainders[c], c))[:total - sum(alloc)]:
        alloc[c] += 1
    return alloc


def stratified_split(labels, n_test, seed, n_train=None):
    """Seeded split keeping each class's share: -> (train indexes, test indexes), both sorted.

    The test set gets n_test samples; train gets n_train of the rest (default: all of the rest).
    """
    labels = np.asarray(labels)
    rng = np.random.RandomState(seed)
    classes = np.unique(labels)
    pools = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    n_test = min(int(n_test), len(labels))
    test_alloc = _allocate([len(p) for p in pools], n_test)
    test = [p[:k] for p, k in zip(pools, test_alloc)]
    rest = [p[k:] for p, k in zip(pools, test_alloc)]
    if n_train is not None and n_train < sum(len(r) for r in rest):
        rest = [r[:k] for r, k in zip(rest, _allocate([len(r) for r in rest], int(n_train)))]
    empty = np.zeros(0, np.int64)
    return np.sort(np.concatenate(rest + [empty])), np.sort(np.concatenate(test + [empty]))


def _report_fallback(source, found):
    missed = int(len(found) - np.count_nonzero(found))
    print('%s: Haar found no face in %d of %d images; used the centred square for those' % (source, missed, len(found)))
    return missed


def _check_files(paths, source):
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise DataError('%s: image not found (%d of the %d images %s lists are missing)'
                        % (missing[0], len(missing), len(paths), source))


# ----------------------------------------------------------------------------- FER-2013 csv

def import_fer2013(path, data_dir='data', force=False):
    """Import Kaggle's fer2013.csv (or .csv.gz): emotion,pixels,Usage. Returns {split: count}."""
    if not os.path.isfile(path):
        raise DataError('%s: file not found' % path)
    out = _outputs(data_dir, EMOTION)
    _refuse_overwrite(out.values(), force)
    images, labels, usage = _read_fer2013(path)
    parts = {split: (images[usage == split], labels[usage == split], EMOTION)
             for split in out if np.any(usage == split)}
    return _write(out, parts, path)


def _read_fer2013(path):
    """-> (images uint8 (N,48,48), labels int64 (N,), usage split names (N,)); DataError with the line."""
    try:
        raw = open(path, 'rb')
    except OSError as err:
        raise DataError('%s: cannot open (%s)' % (path, err.strerror or err)) from err
    images, labels, usage = [], [], []
    with raw:
        gzipped = raw.read(2) == b'\x1f\x8b'
        raw.seek(0)
        stream = gzip.GzipFile(fileobj=raw, mode='rb') if gzipped else raw
        bar = tqdm(total=os.path.getsize(path), unit='B', unit_scale=True, desc='fer2013', disable=None, leave=False)
        try:
            lines = iter(stream)
            header = _fer_text(next(lines, b''), path, 1).lstrip('\ufeff').strip()
            columns = [c.strip().strip('"').lower() for c in header.split(',')]
            if not header or sorted(columns) != ['emotion', 'pixels', 'usage']:
                raise DataError('%s line 1: header is %r, expected emotion,pixels,Usage' % (path, header[:80]))
            i_label, i_pixels, i_usage = (columns.index(c) for c in ('emotion', 'pixels', 'usage'))
            for lineno, line in enumerate(lines, 2):
                if lineno % 1000 == 0:
                    bar.update(raw.tell() - bar.n)
                text = _fer_text(line, path, lineno).strip()
                if not text:
                    continue
                fields = [f.strip().strip('"').strip() for f in text.split(',')]
                if len(fields) != 3:
                    raise DataError('%s line %d: %d comma-separated fields, expected 3 (emotion,pixels,Usage)'
                                    % (path, lineno, len(fields)))
                try:
                    label = int(fields[i_label])
                except ValueError:
                    label = None
                if label is None or not 0 <= label < NUM_CLASSES[EMOTION]:
                    raise DataError('%s line %d: emotion %r is not a label 0..%d'
                                    % (path, lineno, fields[i_label][:20], NUM_CLASSES[EMOTION] - 1))
                split = FER_USAGE.get(fields[i_usage])
                if split is None:
                    raise DataError('%s line %d: Usage %r is not Training, PublicTest or PrivateTest'
                                    % (path, lineno, fields[i_usage][:20]))
                images.append(_fer_pixels(fields[i_pixels], path, lineno))
                labels.append(label)
                usage.append(split)
        except (OSError, EOFError, zlib.error) as err:
            raise DataError('%s: cannot read the file (%s)' % (path, err)) from err
        finally:
            bar.close()
    if not images:
        raise DataError('%s: no data rows after the header' % path)
    return np.stack(images), np.array(labels, np.int64), np.array(usage)


def _fer_text(line, path, lineno):
    try:
        return line.decode('utf-8')
    except UnicodeDecodeError:
        raise DataError('%s line %d: not text (is it really a csv file?)' % (path, lineno)) from None


def _fer_pixels(text, path, lineno):
    try:
        pixels = np.fromstring(text, dtype=np.int64, sep=' ')
    except ValueError:  # a token that is not an integer: find it for the message
        for i, token in enumerate(text.split()):
            if not token.isdigit():
                raise DataError('%s line %d: pixel %d is %r, not an integer 0..255'
                                % (path, lineno, i + 1, token[:20])) from None
        raise DataError('%s line %d: pixels are not space-separated integers' % (path, lineno)) from None
    if len(pixels) != PIXELS:
        raise DataError('%s line %d: %d pixel values, expected %d (48x48)' % (path, lineno, len(pixels), PIXELS))
    bad = (pixels < 0) | (pixels > 255)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError('%s line %d: pixel %d is %d, outside 0..255' % (path, lineno, i + 1, pixels[i]))
    return pixels.astype(np.uint8).reshape(IMAGE_SIZE, IMAGE_SIZE)


# ----------------------------------------------------------------------------- GENKI-4K

def import_genki(folder, data_dir='data', force=False, seed=0):
    """Import a GENKI-4K folder (labels.txt, files/fileNNNN.jpg). Returns {split: count}."""
    if not os.path.isdir(folder):
        raise DataError('%s: folder not found' % folder)
    labels = _read_genki_labels(os.path.join(folder, 'labels.txt'))
    paths = [os.path.join(folder, 'files', 'file%04d.jpg' % (i + 1)) for i in range(len(labels))]
    _check_files(paths, 'labels.txt')
    out = _outputs(data_dir, SMILE)
    _refuse_overwrite(out.values(), force)
    faces, found = _crop_files(paths, 'GENKI-4K')
    _report_fallback(folder, found)
    train, test = stratified_split(labels, min(GENKI_TEST, int(round(len(labels) / 4.0))), seed)
    parts = {'train': (faces[train], labels[train], SMILE), 'test': (faces[test], labels[test], SMILE)}
    return _write(out, parts, folder)


def _read_genki_labels(path):
    """labels.txt: line N is 'smile yaw pitch roll' for files/fileNNNN.jpg -> smile labels int64."""
    try:
        with open(path, 'rb') as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise DataError('%s: file not found (GENKI-4K has one "smile yaw pitch roll" line per image there)'
                        % path) from None
    except OSError as err:
        raise DataError('%s: cannot read (%s)' % (path, err.strerror or err)) from err
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise DataError('%s: no label lines' % path)
    labels = []
    for lineno, line in enumerate(lines, 1):
        fields = line.split()
        try:
            ok = len(fields) == 4 and fields[0] in (b'0', b'1') and all(np.isfinite(float(v)) for v in fields[1:])
        except ValueError:
            ok = False
        if not ok:
            raise DataError('%s line %d: %r is not "smile yaw pitch roll" with smile 0 or 1'
                            % (path, lineno, line.decode('utf-8', 'replace').strip()[:60]))
        labels.append(int(fields[0]))
    return np.array(labels, np.int64)


# ----------------------------------------------------------------------------- IMDB-WIKI

def import_wiki(folder, data_dir='data', force=False, seed=0):
    """Import a wiki_crop folder (wiki.mat, NN/*.jpg). Returns {split: count}.

    Keeps the usual clean subset: finite face_score >= 1, no second face, known gender.
    """
    if not os.path.isdir(folder):
        raise DataError('%s: folder not found' % folder)
    mat_path = os.path.join(folder, 'wiki.mat')
    meta = _read_wiki_mat(mat_path)
    score, second, gender = meta['face_score'], meta['second_face_score'], meta['gender']
    with np.errstate(invalid='ignore'):
        keep = np.isfinite(score) & (score >= 1) & np.isnan(second) & ~np.isnan(gender)
    odd = keep & (gender != 0) & (gender != 1)
    if odd.any():
        i = int(np.argmax(odd))
        raise DataError('%s: gender %g at entry %d, expected 0, 1 or NaN' % (mat_path, float(gender[i]), i + 1))
    if not keep.any():
        raise DataError('%s: no entry has a face_score >= 1, no second face and a known gender' % mat_path)
    labels = gender[keep].astype(np.int64)
    paths = [os.path.join(folder, *_mat_str(p, mat_path).split('/')) for p in meta['full_path'][keep]]
    _check_files(paths, 'wiki.mat')
    out = _outputs(data_dir, GENDER)
    _refuse_overwrite(out.values(), force)
    print('%s: %d of %d entries pass the filter (face_score >= 1, no second face, known gender)'
          % (mat_path, len(labels), len(keep)))
    faces, found = _crop_files(paths, 'WIKI')
    _report_fallback(folder, found)
    n = len(labels)
    n_train, n_test = wiki_split_sizes(n)
    train, test = stratified_split(labels, n_test, seed, n_train)
    if n > len(train) + len(test):
        print('%s: %d images left out (the course uses %d train + %d test)'
              % (folder, n - len(train) - len(test), WIKI_TRAIN, WIKI_TEST))
    parts = {'train': (faces[train], labels[train], GENDER), 'test': (faces[test], labels[test], GENDER)}
    return _write(out, parts, folder)


def wiki_split_sizes(n):
    """(train, test) sizes for n usable WIKI images: the course's 30,000 + 4,118 when there are that
    many (the surplus is left out), otherwise the same ratio (~88/12), with at least one test image."""
    if n >= WIKI_TRAIN + WIKI_TEST:
        return WIKI_TRAIN, WIKI_TEST
    n_test = int(round(n * WIKI_TEST / float(WIKI_TRAIN + WIKI_TEST)))
    n_test = min(max(n_test, 1), n - 1) if n > 1 else 0
    return n - n_test, n_test


def _read_wiki_mat(path):
    """wiki.mat (or imdb.mat) -> {field: 1-D array} for full_path, gender, face_score, second_face_score."""
    import scipy.io
    if not os.path.isfile(path):
        raise DataError('%s: file not found (a wiki_crop folder holds wiki.mat and the NN/ image folders)' % path)
    try:
        mat = scipy.io.loadmat(path)
    except NotImplementedError:
        raise DataError('%s: a MATLAB v7.3 (HDF5) file; save it as -v7 or use the original wiki.mat' % path) from None
    except Exception as err:  # scipy raises ValueError, TypeError, MatReadError, ... for a bad file
        raise DataError('%s: not a readable MATLAB file (%s)'
                        % (path, str(err).splitlines()[0] if str(err) else type(err).__name__)) from err
    key = next((k for k in ('wiki', 'imdb') if k in mat), None)
    if key is None:
        raise DataError('%s: no struct named wiki (has %s)' % (path, ', '.join(k for k in mat if not k.startswith('__'))))
    struct = mat[key]
    if not (isinstance(struct, np.ndarray) and struct.dtype.names and struct.size == 1):
        raise DataError('%s: %s is not a 1x1 struct' % (path, key))
    struct = struct.flat[0]
    meta = {}
    for field in ('full_path', 'gender', 'face_score', 'second_face_score'):
        if field not in struct.dtype.names:
            raise DataError('%s: struct %s has no field %s (has %s)' % (path, key, field, ', '.join(struct.dtype.names)))
        value = np.asarray(struct[field]).ravel()
        if field != 'full_path':
            try:
                value = value.astype(np.float64)
            except (TypeError, ValueError):
                raise DataError('%s: %s.%s is not numeric' % (path, key, field)) from None
        meta[field] = value
    sizes = {f: len(v) for f, v in meta.items()}
    if len(set(sizes.values())) != 1:
        raise DataError('%s: fields differ in length (%s)' % (path, ', '.join('%s %d' % fs for fs in sizes.items())))
    return meta


def _mat_str(value, path):
    """A MATLAB cell entry as loadmat returns it (array(['17/x.jpg']) or a str) -> str."""
    while isinstance(value, np.ndarray) and value.size == 1:
        value = value.flat[0]
    if not isinstance(value, str):
        raise DataError('%s: full_path entry %r is not a file name' % (path, value))
    return value


# ----------------------------------------------------------------------------- the course's old folder

COURSE_PAIRS = {  # (task, split) -> file of pickled (image, label) pairs
    (SMILE, 'train'): ('smile_data', 'train.npy'),
    (SMILE, 'test'): ('smile_data', 'test.npy'),
    (GENDER, 'train'): ('wiki_data_gender', 'train.npy'),
    (GENDER, 'test'): ('wiki_data_gender', 'test.npy'),
}
COURSE_EMOTION = {  # split -> folders of images.npy (normalised) + labels.npy (one-hot)
    'train': [('emotion_data2', 'temp_train_and_validation', 'train'),
              ('emotion_data2', 'temp_train_and_validation', 'validation')],
    'public_test': [('emotion_data2', 'public test')],
    'private_test': [('emotion_data2', 'private test')],
}


def import_course(folder, data_dir='data', force=False, allow_pickle=False):
    """Convert the course's old data folder (pickled .npy files) into the layout. Returns {path: count}.

    Its smile and gender files hold pickled Python objects, and unpickling a file can run any code
    in it: this needs allow_pickle=True (CLI --allow-pickle), meaning "I trust this folder".
    """
    if not os.path.isdir(folder):
        raise DataError('%s: folder not found' % folder)
    if not allow_pickle:
        raise DataError('%s: the course\'s .npy files are pickled Python objects and unpickling can run '
                        'arbitrary code, so they are not read by default; if you trust this folder, '
                        'rerun with --allow-pickle' % folder)
    sources = {key: os.path.join(folder, *parts) for key, parts in COURSE_PAIRS.items()}
    for split, dirs in COURSE_EMOTION.items():
        for i, parts in enumerate(dirs):
            for name in ('images.npy', 'labels.npy'):
                sources[(EMOTION, split, i, name)] = os.path.join(folder, *(parts + (name,)))
    missing = [p for p in sources.values() if not os.path.isfile(p)]
    if missing:
        raise DataError('%s: file not found (%d of the course folder\'s %d files are missing)'
                        % (missing[0], len(missing), len(sources)))
    out = {(t, s): data_utils.split_path(data_dir, t, s) for t in TASKS for s in data_utils.TASK_SPLITS[t]}
    _refuse_overwrite(out.values(), force)
    data = {}
    for key in COURSE_PAIRS:
        path = sources[key]
        images, labels = data_utils.load_split(path, allow_pickle=True)
        data_utils.check_images(images, labels, key[0], path)
        data[key] = images, labels
    for split, dirs in COURSE_EMOTION.items():
        parts = [_course_emotion(sources[(EMOTION, split, i, 'images.npy')], sources[(EMOTION, split, i, 'labels.npy')])
                 for i in range(len(dirs))]
        data[(EMOTION, split)] = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    counts = _write(out, {key: data[key] + (key[0],) for key in out}, folder)
    return {out[key]: n for key, n in counts.items()}


def _course_emotion(images_path, labels_path):
    """The course's emotion arrays: images (p - 128) / 255 floats, labels one-hot -> uint8, int64."""
    arrays = []
    for path in (images_path, labels_path):
        try:
            arrays.append(np.load(path, allow_pickle=True))  # only reached with the user's --allow-pickle
        except (ValueError, OSError, EOFError) as err:
            raise DataError('%s: not a readable .npy file (%s)' % (path, err)) from err
    images, labels = arrays
    try:
        images = np.asarray(images, dtype=np.float64).reshape(len(images), IMAGE_SIZE, IMAGE_SIZE)
        labels = np.asarray(labels, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise DataError('%s: expected N 48x48 images (%s)' % (images_path, err)) from err
    if labels.ndim == 2 and labels.shape[1] == NUM_CLASSES[EMOTION]:
        if not (np.all((labels == 0) | (labels == 1)) and np.all(labels.sum(axis=1) == 1)):
            row = int(np.argmax(~np.all((labels == 0) | (labels == 1), axis=1) | (labels.sum(axis=1) != 1)))
            raise DataError('%s: row %d is not a one-hot vector' % (labels_path, row))
        labels = labels.argmax(axis=1)
    elif labels.ndim != 1 or np.any(labels != np.round(labels)):
        raise DataError('%s: expected one-hot rows of %d or integer labels, got %s %s'
                        % (labels_path, NUM_CLASSES[EMOTION], labels.dtype, labels.shape))
    if len(labels) != len(images):
        raise DataError('%s: %d labels for the %d images of %s' % (labels_path, len(labels), len(images), images_path))
    images = data_utils.to_pixels(images)
    labels = labels.astype(np.int64)
    data_utils.check_images(images, labels, EMOTION, labels_path)
    return images, labels


# ----------------------------------------------------------------------------- demo data

def make_demo(data_dir='data', force=False, seed=0):
    """Write a small synthetic data set in the practice's layout; returns {path: count}."""
    rng = np.random.RandomState(seed)
    out = {(t, sp): data_utils.split_path(data_dir, t, sp) for t in TASKS for sp in data_utils.TASK_SPLITS[t]}
    _refuse_overwrite(out.values(), force)
    parts = {}
    for task, split in out:
        n = DEMO_SIZES[task][0 if split == 'train' else 1]
        labels = rng.permutation(np.arange(n) % len(CLASS_NAMES[task]))
        parts[(task, split)] = draw_faces(task, labels, rng), labels, task
    counts = _write(out, parts, 'the demo')
    return {out[key]: n for key, n in counts.items()}


# ----------------------------------------------------------------------------- command line

SOURCE_TASKS = {'fer2013': EMOTION, 'genki': SMILE, 'wiki': GENDER}


def main(argv=None):
    parser = cli.docstring_parser(__doc__, 4)
    parser.add_argument('--data-dir', default='data', help='output folder (default: data)')
    parser.add_argument('--force', action='store_true',
                        help="replace the task's existing files (a split the new source lacks is removed)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument('--demo', action='store_true', help='generate the synthetic demo data set')
    source.add_argument('--npz', help='archive with images, labels, split, split_names (needs --task)')
    source.add_argument('--fer2013', metavar='CSV', help='Kaggle fer2013.csv or fer2013.csv.gz (emotion)')
    source.add_argument('--genki', metavar='DIR', help='GENKI-4K folder with labels.txt and files/ (smile)')
    source.add_argument('--wiki', metavar='DIR', help='wiki_crop folder with wiki.mat (gender)')
    source.add_argument('--course', metavar='DIR', help="the course's old data folder (needs --allow-pickle)")
    parser.add_argument('--task', choices=sorted(TASK_BY_NAME), help='the task an --npz archive holds')
    parser.add_argument('--allow-pickle', action='store_true',
                        help='let --course unpickle its files; pickle can run code, so only for a folder you trust')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of the demo data and of the GENKI / WIKI splits (default: %(default)s)')
    args = parser.parse_args(argv)
    for name, task in SOURCE_TASKS.items():
        if getattr(args, name) and args.task and TASK_BY_NAME[args.task] != task:
            parser.error('--%s holds %s data, not %s' % (name, TASK_NAMES[task], args.task))
    if args.npz and not args.task:
        parser.error('--npz needs --task smile|emotion|gender')
    if not any((args.demo, args.npz, args.fer2013, args.genki, args.wiki, args.course)):
        parser.error('nothing to do: give --demo, --npz with --task, --fer2013, --genki, --wiki or --course')
    try:
        _check_folder(args.data_dir)
        _remove_leftovers(args.data_dir)
        if args.demo:
            make_demo(args.data_dir, args.force, args.seed)
        elif args.npz:
            import_npz(args.npz, TASK_BY_NAME[args.task], args.data_dir, args.force)
        elif args.fer2013:
            import_fer2013(args.fer2013, args.data_dir, args.force)
        elif args.genki:
            import_genki(args.genki, args.data_dir, args.force, args.seed)
        elif args.wiki:
            import_wiki(args.wiki, args.data_dir, args.force, args.seed)
        else:
            import_course(args.course, args.data_dir, args.force, args.allow_pickle)
    except DataError as err:
        return cli.error(err)
    except OSError as err:  # say, a full disk or a folder without write permission
        return cli.error('%s: %s' % (err.filename or args.data_dir, err.strerror or err))
    return 0


if __name__ == '__main__':
    sys.exit(main())
