"""The practice's data provider: one Dataset mixing the three tasks.

Public names:
  Dataset(data_type='train'|'validation'|'public_test'|'private_test', batch_size=128, ..., tasks=TASKS)
    .all_data   sequence of (img float32 48x48x1, one-hot label (7,), task index) like the handout's list
    .gen(start_batch=0)   one epoch of (batch_images, batch_labels, batch_indexes); reshuffled per call
    .reseed(seed)         restart the random stream (training seeds each epoch from (seed, epoch))
    .soft_labels          None, or (N,7) float32 rows gen() yields in place of the one-hot labels (distillation)
  augment_batch(images, rng, pad, erase=0)   random shift, horizontal flip and rotation (and erasing), vectorised
  erase_rectangles(images, rng, share)       one random rectangle of noise in a share of the images
  one_hot(labels)                   int labels -> (N, 7) float32
  tta_views(views)                  the test-time views (mirrored, dy, dx) of 1, 2 or 18 views
  shift_faces(images, dy, dx), shift_index(size, shift)   a view's shift, and its gather indices (export's graph)
"""
import numpy as np

import data_utils
from config import DEFAULTS, IMAGE_SIZE, LABEL_WIDTH, TASKS

MAX_ROTATION_DEG = 10.0
# Random erasing (Zhong et al., AAAI 2020): the rectangle's share of the face and its aspect ratio.
ERASE_AREA = (0.02, 0.25)
ERASE_ASPECT = (0.3, 3.3)
VALIDATION_FRACTION = DEFAULTS['validation_fraction']
TTA_SHIFT = 2  # pixels a multi-view test-time average shifts the face by (tta_views)


def one_hot(labels):
    out = np.zeros((len(labels), LABEL_WIDTH), dtype=np.float32)
    out[np.arange(len(labels)), labels] = 1.0
    return out


class _AllData(object):
    """Read-only list view over the arrays: all_data[i] -> (img, label, index), built on demand.

    The handout stores a list of float tuples; 62K of them would take ~600 MB, the uint8
    arrays behind this view take 145 MB.
    """

    def __init__(self, dataset):
        self._ds = dataset

    def __len__(self):
        return len(self._ds.labels)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        ds = self._ds
        img = data_utils.normalize(ds.images[i])[..., None]
        return img, one_hot(ds.labels[[i]])[0], float(ds.indexes[i])

    def __iter__(self):
        return (self[i] for i in range(len(self)))


class Dataset(object):
    """All three tasks' samples of one data type, in one shuffled stream of mixed batches.

    data_type: 'train' (smile train + emotion train + gender train), 'public_test' (smile test +
      emotion public test + gender test), 'private_test' (the same with emotion private test) or
      'validation' (the held-out part of smile train and gender train + emotion public test).
    validation_fraction: the share of each smile / gender train class held out for 'validation'
      (data_utils.validation_mask: stratified, fixed seed). 'train' leaves it out when it is above 0;
      the default keeps the handout's 'train' whole and holds out VALIDATION_FRACTION for 'validation'.
    shuffle: reshuffle at the start of every gen() call; defaults to True only for 'train'.
    augment: random shift/flip/rotation of training batches (never use it on a test set).
    random_erasing: with augment, the share of faces that also get one rectangle of noise.
    task_weights: (smile, emotion, gender) copies of each task's samples per epoch; 2.5 means
      two full passes plus a random half. Only for training.
    tasks: the task indexes to read (default all three; a single-task model reads one).
    """

    def __init__(self, data_type='train', batch_size=128, data_dir='data', shuffle=None, augment=False,
                 aug_pad=10, task_weights=None, seed=None, allow_pickle=False, verbose=True,
                 validation_fraction=None, tasks=TASKS, random_erasing=0.0):
        # Mapped, not read: only the headers are touched here, the pixels are read once, below.
        self.tasks = tuple(t for t in TASKS if t in tasks)
        if not self.tasks:
            raise ValueError('tasks needs at least one of %s, got %r' % (TASKS, tasks))
        data = data_utils.read_data(data_dir, data_type, allow_pickle=allow_pickle, verbose=verbose, mmap=True,
                                    tasks=self.tasks)
        self.data_type = data_type
        self.batch_size = int(batch_size)
        self.shuffle = (data_type == 'train') if shuffle is None else bool(shuffle)
        self.augment = bool(augment)
        self.aug_pad = int(aug_pad)
        self.random_erasing = float(random_erasing)
        self.task_weights = tuple(float(w) for w in task_weights) if task_weights is not None else None
        if self.task_weights is not None and (len(self.task_weights) != len(TASKS) or min(self.task_weights) < 0):
            raise ValueError('task_weights needs %d non-negative numbers, got %r' % (len(TASKS), task_weights))
        self.rng = np.random.RandomState(seed)
        self.task_sizes = {t: len(data[t][1]) for t in self.tasks}
        total = sum(self.task_sizes.values())
        # One array for all tasks, filled file by file in small chunks, so the pixels are held in
        # memory once (loading whole files and concatenating them would peak at twice the size).
        self.images = np.empty((total, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
        self.labels = np.empty(total, dtype=np.int64)
        start = 0
        for t in self.tasks:
            end = start + self.task_sizes[t]
            images, labels = data.pop(t)
            path = data_utils.split_path(data_dir, t, data_utils.DATA_TYPES[data_type][t])
            if isinstance(images, np.memmap):
                del images, labels
                data_utils.load_split(path, out=(self.images[start:end], self.labels[start:end]))
            else:  # a pickled file, already read
                self.images[start:end], self.labels[start:end] = images, labels
            # a label out of range would train silently as another class
            data_utils.check_labels(self.labels[start:end], t, path)
            start = end
        if validation_fraction is None:
            validation_fraction = VALIDATION_FRACTION if data_type == 'validation' else 0.0
        if data_type in ('train', 'validation') and validation_fraction > 0:
            self._hold_out(validation_fraction, keep_held_out=data_type == 'validation')
        elif data_type == 'validation':
            raise ValueError("'validation' needs a validation_fraction above 0, got %r" % validation_fraction)
        self.indexes = np.concatenate([np.full(self.task_sizes[t], t, dtype=np.float32) for t in self.tasks])
        self.soft_labels = None
        self.all_data = _AllData(self)

    def _hold_out(self, fraction, keep_held_out):
        keep, start = [], 0
        for t in self.tasks:
            end = start + self.task_sizes[t]
            if t in data_utils.VALIDATION_TASKS:
                held = data_utils.validation_mask(self.labels[start:end], fraction)
                keep.append(held if keep_held_out else ~held)
            else:
                keep.append(np.ones(end - start, dtype=bool))
            self.task_sizes[t] = int(keep[-1].sum())
            start = end
        keep = np.concatenate(keep)
        self.images, self.labels = self.images[keep], self.labels[keep]

    def reseed(self, seed):
        self.rng = np.random.RandomState(seed)

    def epoch_order(self):
        """The sample order of one epoch (task weights applied, shuffled if asked)."""
        if self.task_weights is None:
            order = np.arange(len(self.labels))
        else:
            parts, start = [], 0
            for task, weight in zip(TASKS, self.task_weights):
                if task not in self.tasks:
                    continue
                n = self.task_sizes[task]
                whole, frac = int(weight), weight - int(weight)
                parts += [np.arange(start, start + n)] * whole
                parts.append(start + self.rng.choice(n, int(round(frac * n)), replace=False))
                start += n
            order = np.concatenate(parts)
        if self.shuffle:
            self.rng.shuffle(order)
        return order

    def steps_per_epoch(self):
        return -(-self.epoch_size() // self.batch_size)

    def epoch_size(self):
        if self.task_weights is None:
            return len(self.labels)
        return sum(int(w) * self.task_sizes[t] + int(round((w - int(w)) * self.task_sizes[t]))
                   for t, w in zip(TASKS, self.task_weights) if t in self.tasks)

    def gen(self, start_batch=0):
        """Yield one epoch of (images (B,48,48,1) float32, labels (B,7) float32, indexes (B,) float32).

        The last batch may be smaller. Each call starts a new epoch in a new order; start_batch
        skips that many batches of it (a run resumed mid-epoch continues the epoch's order).
        The labels are rows of soft_labels when it is set.
        """
        order = self.epoch_order()
        for start in range(start_batch * self.batch_size, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            if self.shuffle:
                idx = np.sort(idx)  # gathers faster from sorted positions; order inside a batch does not matter
            images = self.images[idx]
            if self.augment:
                batch = augment_batch(images, self.rng, self.aug_pad, self.random_erasing)
            else:
                batch = data_utils.normalize(images)
            labels = self.soft_labels[idx] if self.soft_labels is not None else one_hot(self.labels[idx])
            yield batch[..., None], labels, self.indexes[idx]


def augment_batch(images, rng, pad=10, erase=0.0, max_rotation=MAX_ROTATION_DEG):
    """Normalised, augmented copies of a uint8 batch (B,48,48): the lineage recipe, vectorised.

    Each image is shifted by up to `pad` pixels (zero padding then a random 48x48 crop), flipped
    left-right with p=0.5 and rotated by a uniform angle in +-max_rotation degrees with p=0.5;
    all three are one inverse affine map sampled bilinearly. Then erase_rectangles(share=erase).
    """
    n, size = len(images), IMAGE_SIZE
    shift = rng.randint(-pad, pad + 1, size=(n, 2)).astype(np.float32) if pad else np.zeros((n, 2), np.float32)
    flip = rng.rand(n) < 0.5
    angle = np.where(rng.rand(n) < 0.5, rng.uniform(-max_rotation, max_rotation, n), 0.0)
    theta = np.deg2rad(angle).astype(np.float32)
    centre = (size - 1) / 2.0
    ys, xs = np.meshgrid(np.arange(size, dtype=np.float32) - centre,
                         np.arange(size, dtype=np.float32) - centre, indexing='ij')
    cos, sin = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    # Output pixel (y, x) reads input at R(theta) (y, x) + centre - shift, x mirrored first when flipped.
    xs_f = np.where(flip[:, None, None], -xs, xs)
    src_y = cos * ys - sin * xs_f + centre - shift[:, 0, None, None]
    src_x = sin * ys + cos * xs_f + centre - shift[:, 1, None, None]
    out = _bilinear(data_utils.normalize(images), src_y, src_x)
    return erase_rectangles(out, rng, erase) if erase else out


def erase_rectangles(images, rng, share):
    """Random erasing in place: each normalised image (B,H,W) with probability `share` gets one
    rectangle of ERASE_AREA of its area and ERASE_ASPECT height/width, anywhere inside it,
    filled with uniform noise over the pixel range. Returns images."""
    n, h, w = images.shape
    chosen = np.flatnonzero(rng.rand(n) < share)
    area = rng.uniform(*ERASE_AREA, size=len(chosen)) * h * w
    aspect = np.exp(rng.uniform(*np.log(ERASE_ASPECT), size=len(chosen)))
    heights = np.clip(np.round(np.sqrt(area * aspect)), 1, h).astype(int)
    widths = np.clip(np.round(np.sqrt(area / aspect)), 1, w).astype(int)
    top = (rng.rand(len(chosen)) * (h - heights + 1)).astype(int)[:, None, None]
    left = (rng.rand(len(chosen)) * (w - widths + 1)).astype(int)[:, None, None]
    rows, columns = np.arange(h)[None, :, None], np.arange(w)[None, None, :]
    inside = ((rows >= top) & (rows < top + heights[:, None, None]) &
              (columns >= left) & (columns < left + widths[:, None, None]))
    low, high = data_utils.normalize(np.array([0, 255], np.uint8))
    noise = rng.uniform(low, high, size=inside.shape).astype(np.float32)
    images[chosen] = np.where(inside, noise, images[chosen])
    return images


def _bilinear(images, y, x):
    """Sample images (B,H,W) at float coordinates (B,H,W); outside the image reads as zero."""
    n, h, w = images.shape
    hp, wp = h + 2, w + 2
    zero = data_utils.normalize(np.zeros(1, np.uint8))[0]  # the value of a black (padding) pixel
    padded = np.full((n, hp, wp), zero, dtype=np.float32)
    padded[:, 1:-1, 1:-1] = images
    flat = padded.reshape(-1)
    # Clip to the padding ring (h + 1 is the far border row), then keep the top-left neighbour
    # inside it: at y == h + 1, y0 = h and wy = 1 read the border exactly.
    y = np.clip(y + 1, 0, h + 1)
    x = np.clip(x + 1, 0, w + 1)
    y0, x0 = np.minimum(np.floor(y), h), np.minimum(np.floor(x), w)
    wy, wx = y - y0, x - x0
    # Flat positions of the top-left neighbours; y0 <= h and x0 <= w, so +1 stays in the padding.
    # One take() per neighbour is ~5x faster than indexing with three broadcast index arrays.
    i00 = np.arange(n, dtype=np.intp)[:, None, None] * (hp * wp) + y0.astype(np.intp) * wp + x0.astype(np.intp)
    v00, v01 = flat.take(i00), flat.take(i00 + 1)
    v10, v11 = flat.take(i00 + wp), flat.take(i00 + wp + 1)
    top = v00 + (v01 - v00) * wx
    bottom = v10 + (v11 - v10) * wx
    return (top + (bottom - top) * wy).astype(np.float32)


# ----------------------------------------------------------------------------- test-time views

def tta_views(views):
    """The test-time views as (mirrored, dy, dx): 1 is the face alone, 2 adds its mirror image, 18
    shifts both by -TTA_SHIFT, 0 and +TTA_SHIFT pixels in y and x (what random crops train for)."""
    if views == 1:
        return [(False, 0, 0)]
    if views == 2:
        return [(False, 0, 0), (True, 0, 0)]
    if views == 18:
        shifts = (-TTA_SHIFT, 0, TTA_SHIFT)
        return [(flip, dy, dx) for flip in (False, True) for dy in shifts for dx in shifts]
    raise ValueError('views must be 1, 2 or 18, got %r' % (views,))


def shift_index(size, shift):
    """The source index of each of `size` positions moved by `shift`, the border repeated."""
    return np.clip(np.arange(size) - shift, 0, size - 1)


def shift_faces(images, dy, dx):
    """Faces (N, H, W) moved dy pixels down and dx right, the border rows and columns repeated."""
    if not dy and not dx:
        return images
    return images[:, shift_index(images.shape[1], dy)][:, :, shift_index(images.shape[2], dx)]
