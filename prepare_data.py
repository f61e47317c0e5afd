"""Turn public face data sets (or a generated demo set) into the practice's data layout.

  python prepare_data.py --demo                                   synthetic faces, all three tasks
  python prepare_data.py --task smile --npz ../shared/data/genki4k.npz
  python prepare_data.py --task emotion --npz ../shared/data/fer2013.npz
  python prepare_data.py --task gender --npz ../shared/data/gender.npz

Writes data/smile_data, data/emotion_data2 and data/gender_data (see data_utils). Every file is
written atomically and never overwritten without --force. Bad input stops with one line that
names the file and the fault.

Public functions:
  demo_faces(task, labels, rng)   draw synthetic 48x48 faces whose look encodes the task's labels
  make_demo(data_dir, force)      write the demo data set
  import_npz(path, task, data_dir, force)   import an archive of images/labels/split/split_names
  preprocess_face(image, box=None)          any face picture -> 48x48 uint8 (shared with predict.py)
"""
import argparse
import os
import sys

import cv2
import numpy as np

from config import CLASS_NAMES, EMOTION, GENDER, IMAGE_SIZE, SMILE, TASK_NAMES, TASKS
import data_utils
from data_utils import DataError

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
FACE_MARGIN = 0.2  # fraction of the detected box added on each side before resizing


def preprocess_face(image, box=None):
    """A face picture (gray or BGR, any size) -> 48x48 uint8 gray: crop `box` (x, y, w, h) with a
    margin, squared and clipped to the picture, then resize with INTER_AREA."""
    image = np.asarray(image)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY if image.shape[2] == 3 else cv2.COLOR_BGRA2GRAY)
    if box is not None:
        x, y, w, h = [int(v) for v in box]
        side = int(round(max(w, h) * (1 + 2 * FACE_MARGIN)))
        cx, cy = x + w // 2, y + h // 2
        x0, y0 = max(cx - side // 2, 0), max(cy - side // 2, 0)
        x1, y1 = min(x0 + side, image.shape[1]), min(y0 + side, image.shape[0])
        image = image[y0:y1, x0:x1]
    if image.shape != (IMAGE_SIZE, IMAGE_SIZE):
        image = cv2.resize(image, (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_AREA)
    return image.astype(np.uint8)


# ----------------------------------------------------------------------------- npz archives

def import_npz(path, task, data_dir='data', force=False):
    """Import an archive with `images`, `labels`, `split` and `split_names` into the layout.

    Images may be (N,48,48) uint8 or any other size / colour (cropped square and resized).
    Returns {split: count}.
    """
    try:
        archive = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError('%s: file not found' % path)
    except (ValueError, OSError) as err:
        raise DataError('%s: not a readable .npz archive (%s)' % (path, err))
    with archive:
        missing = [k for k in ('images', 'labels', 'split', 'split_names') if k not in archive.files]
        if missing:
            raise DataError('%s: missing array(s) %s (has %s)' % (path, ', '.join(missing), ', '.join(archive.files)))
        images, labels, split = archive['images'], archive['labels'], archive['split']
        split_names = [str(s) for s in archive['split_names']]
    if len(labels) != len(images) or len(split) != len(images):
        raise DataError('%s: images, labels and split differ in length (%d, %d, %d)'
                        % (path, len(images), len(labels), len(split)))
    if images.ndim not in (3, 4) or images.dtype != np.uint8:
        raise DataError('%s: images must be uint8 (N,H,W) or (N,H,W,C), got %s %s' % (path, images.dtype, images.shape))
    if images.shape[1:3] != (IMAGE_SIZE, IMAGE_SIZE) or images.ndim == 4:
        images = np.stack([preprocess_face(img) for img in images])
    data_utils.check_images(images, labels, task, path)
    targets = {}
    for code, name in enumerate(split_names):
        target = SPLIT_ALIASES.get(name.lower().replace(' ', ''))
        if target == 'test' and 'test' not in data_utils.TASK_SPLITS[task]:
            raise DataError('%s: split %r is ambiguous for %s (use PublicTest / PrivateTest)' % (path, name, TASK_NAMES[task]))
        if target == 'public_test' and task != EMOTION:
            target = 'test'
        if target is None or target not in data_utils.TASK_SPLITS[task]:
            raise DataError('%s: split name %r has no place in %s (expected one of %s)'
                            % (path, name, TASK_NAMES[task], ', '.join(data_utils.TASK_SPLITS[task])))
        targets[code] = target
    unknown = sorted(set(np.unique(split).tolist()) - set(targets))
    if unknown:
        raise DataError('%s: split code %s has no name in split_names' % (path, unknown[0]))
    out = {t: data_utils.split_path(data_dir, task, t) for t in set(targets.values())}
    _refuse_overwrite(out.values(), force)
    counts = {}
    for target, dest in sorted(out.items()):
        keep = np.isin(split, [c for c, t in targets.items() if t == target])
        data_utils.save_split(dest, images[keep], labels[keep], task, force=True)
        counts[target] = _report(dest, labels[keep], task)
    return counts


def _refuse_overwrite(paths, force):
    existing = [p for p in paths if os.path.exists(p)]
    if existing and not force:
        raise DataError('%s already exists; pass --force to overwrite it' % existing[0])


def _report(path, labels, task):
    per_class = np.bincount(labels, minlength=len(CLASS_NAMES[task]))
    print('%s: %d images (%s)' % (path, len(labels), ', '.join(
        '%s %d' % (name, n) for name, n in zip(CLASS_NAMES[task], per_class))))
    return len(labels)


# ----------------------------------------------------------------------------- demo data

# Expression parts per emotion: brow tilt (+ = inner ends down), brow lift, eye openness, mouth.
_EXPRESSIONS = {
    0: dict(brow_tilt=0.35, brow_lift=-0.05, eye=0.45, mouth='line'),      # angry
    1: dict(brow_tilt=0.15, brow_lift=0.0, eye=0.35, mouth='wave'),        # disgust
    2: dict(brow_tilt=-0.3, brow_lift=0.12, eye=1.0, mouth='wide'),        # fear
    3: dict(brow_tilt=0.0, brow_lift=0.0, eye=0.7, mouth='smile'),         # happy
    4: dict(brow_tilt=-0.35, brow_lift=0.0, eye=0.6, mouth='frown'),       # sad
    5: dict(brow_tilt=0.0, brow_lift=0.18, eye=1.0, mouth='open'),         # surprise
    6: dict(brow_tilt=0.0, brow_lift=0.0, eye=0.7, mouth='line'),          # neutral
}


def _draw_face(rng, long_hair, expression):
    """One synthetic face, 96x96 uint8, drawn at 2x and later reduced to 48x48."""
    s = 96
    bg = rng.uniform(20, 110)
    img = np.full((s, s), bg, np.float32)
    img += np.linspace(-1, 1, s)[None, :] * rng.uniform(-25, 25)  # side lighting on the background
    skin = rng.uniform(130, 220)
    hair = rng.uniform(0, 70)
    cx, cy = 48 + rng.uniform(-3, 3), 50 + rng.uniform(-3, 3)
    fw, fh = rng.uniform(25, 30), rng.uniform(32, 37)
    if long_hair:  # hair falling to the shoulders on both sides of the face
        cv2.ellipse(img, (int(cx), int(cy - 4)), (int(fw + 11), int(fh + 8)), 0, 180, 360, hair, -1)
        cv2.rectangle(img, (int(cx - fw - 11), int(cy - 6)), (int(cx + fw + 11), s), hair, -1)
    cv2.ellipse(img, (int(cx), int(cy)), (int(fw), int(fh)), 0, 0, 360, skin, -1)
    if not long_hair:  # short hair: a cap on top, maybe a beard shadow
        cv2.ellipse(img, (int(cx), int(cy - fh * 0.55)), (int(fw + 2), int(fh * 0.5)), 0, 180, 360, hair, -1)
        if rng.rand() < 0.5:
            cv2.ellipse(img, (int(cx), int(cy + fh * 0.55)), (int(fw * 0.8), int(fh * 0.45)), 0, 0, 180,
                        skin * 0.6, -1)
    ink = skin * rng.uniform(0.15, 0.35)
    e = expression
    eye_y, eye_dx = cy - fh * 0.15, fw * 0.42
    for side in (-1, 1):
        ex = cx + side * eye_dx
        cv2.ellipse(img, (int(ex), int(eye_y)), (6, max(1, int(5 * e['eye']))), 0, 0, 360, 245, -1)
        cv2.circle(img, (int(ex), int(eye_y)), 3, ink, -1)
        brow_y = eye_y - 10 - 25 * e['brow_lift']
        inner = (int(ex - side * 6), int(brow_y + 8 * e['brow_tilt']))
        outer = (int(ex + side * 8), int(brow_y - 8 * e['brow_tilt']))
        cv2.line(img, inner, outer, ink, 3)
    my, mw = cy + fh * 0.5, fw * 0.5
    m = e['mouth']
    if m == 'smile':
        cv2.ellipse(img, (int(cx), int(my - 6)), (int(mw), 10), 0, 10, 170, ink, 3)
    elif m == 'frown':
        cv2.ellipse(img, (int(cx), int(my + 6)), (int(mw * 0.9), 8), 0, 190, 350, ink, 3)
    elif m == 'open':
        cv2.ellipse(img, (int(cx), int(my)), (7, 10), 0, 0, 360, ink, -1)
    elif m == 'wide':
        cv2.ellipse(img, (int(cx), int(my)), (int(mw), 5), 0, 0, 360, ink, -1)
    elif m == 'wave':
        xs = np.linspace(cx - mw, cx + mw, 9)
        pts = np.stack([xs, my + 3 * np.sin(np.linspace(0, 2 * np.pi, 9)) - np.linspace(0, 5, 9)], 1)
        cv2.polylines(img, [pts.astype(np.int32)], False, ink, 3)
    else:
        cv2.line(img, (int(cx - mw * 0.8), int(my)), (int(cx + mw * 0.8), int(my)), ink, 3)
    # Pose: small rotation, scale and shift; then uneven light and sensor noise.
    m_aff = cv2.getRotationMatrix2D((48, 48), rng.uniform(-12, 12), rng.uniform(0.9, 1.1))
    m_aff[:, 2] += rng.uniform(-4, 4, 2)
    img = cv2.warpAffine(img, m_aff, (s, s), borderMode=cv2.BORDER_REFLECT)
    img *= 1 + np.linspace(-1, 1, s)[:, None] * rng.uniform(-0.25, 0.25)
    img += rng.normal(0, rng.uniform(3, 12), img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def demo_faces(task, labels, rng):
    """Draw one face per label. Only the task's own attribute follows the label; the others are
    random, so a head can only succeed by looking at the right part of the face."""
    faces = []
    for label in labels:
        long_hair = rng.rand() < 0.5
        expression = _EXPRESSIONS[rng.choice([0, 1, 2, 4, 5, 6])]  # anything but a smile
        if task == SMILE:
            expression = _EXPRESSIONS[3] if label == 1 else _EXPRESSIONS[rng.choice([0, 1, 4, 6])]
        elif task == EMOTION:
            expression = _EXPRESSIONS[int(label)]
        else:
            long_hair = label == 0  # female
            expression = _EXPRESSIONS[rng.randint(7)]
        faces.append(preprocess_face(_draw_face(rng, long_hair, expression)))
    return np.stack(faces)


def make_demo(data_dir='data', force=False, seed=0):
    """Write a small synthetic data set in the practice's layout; returns {path: count}."""
    rng = np.random.RandomState(seed)
    paths = [data_utils.split_path(data_dir, t, sp) for t in TASKS for sp in data_utils.TASK_SPLITS[t]]
    _refuse_overwrite(paths, force)
    counts = {}
    for task in TASKS:
        n_train, n_test = DEMO_SIZES[task]
        n_classes = len(CLASS_NAMES[task])
        for split in data_utils.TASK_SPLITS[task]:
            n = n_train if split == 'train' else n_test
            labels = rng.permutation(np.arange(n) % n_classes)
            path = data_utils.split_path(data_dir, task, split)
            data_utils.save_split(path, demo_faces(task, labels, rng), labels, task, force=True)
            counts[path] = _report(path, labels, task)
    return counts


# ----------------------------------------------------------------------------- command line

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--data-dir', default='data', help='output folder (default: data)')
    parser.add_argument('--force', action='store_true', help='overwrite existing files')
    parser.add_argument('--demo', action='store_true', help='generate the synthetic demo data set')
    parser.add_argument('--task', choices=sorted(TASK_BY_NAME), help='the task an --npz archive holds')
    parser.add_argument('--npz', help='archive with images, labels, split, split_names')
    parser.add_argument('--seed', type=int, default=0, help='demo data seed')
    args = parser.parse_args(argv)
    try:
        if args.demo:
            make_demo(args.data_dir, args.force, args.seed)
        elif args.npz:
            if not args.task:
                parser.error('--npz needs --task smile|emotion|gender')
            import_npz(args.npz, TASK_BY_NAME[args.task], args.data_dir, args.force)
        else:
            parser.error('nothing to do: give --demo or --task with an input')
    except DataError as err:
        print('error: %s' % err, file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
