"""The face-detection test set bench_detect.py scores detectors on: pictures no one here drew.

Photos that registry packages ship, with their faces marked here by eye (scikit-image's astronaut
and cameraman, matplotlib's Grace Hopper); composites of those faces and of the 100 LFW faces
scikit-image ships, pasted at 20-160 px and turned up to 30 degrees onto the shipped pictures that
hold no face; and those pictures without faces, with a mosaic of scikit-image's 100 LFW non-face
patches. A detection finds a face when its centre lies in the face's box and its side is 0.5-2x the
box's; every other detection is a false face.

Public names:
  test_set(composites=40, lfw_composites=8, seed=0) -> [(kind, name, BGR picture, faces)], kind one of KINDS
  match(boxes, truths) -> (found per face, false faces)
  shipped_pictures(), photo_faces(photos), lfw_sources(lfw_faces), compose(background, sources, rng, n_faces)
  random_view(picture, rng)  a random CANVAS-sized view of a picture
  PHOTO_FACES, CANVAS, KINDS
"""
import os

import cv2
import numpy as np

# Faces marked by eye on the shipped photos: (centre x, centre y, side) of a square over brows to chin.
PHOTO_FACES = {'astronaut': [(224, 115, 100)], 'grace_hopper': [(265, 218, 215)], 'camera': [(228, 152, 72)]}
# LFW patches are tight: the face square is 0.92 of the 25 px patch, a little up and left of its centre.
LFW_FACE = (-0.06, -0.03, 0.92)
NEGATIVES = ('coffee', 'chelsea', 'rocket', 'brick', 'grass', 'gravel', 'hubble_deep_field', 'retina', 'logo',
             'coins', 'page', 'text', 'moon', 'cell', 'clock')
CANVAS = (480, 640)
KINDS = ('photo', 'composite', 'lfw', 'no face')

def bgr(image):
    """A gray, RGB or RGBA uint8 picture (what scikit-image ships) -> BGR."""
    image = np.asarray(image)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return cv2.cvtColor(image, cv2.COLOR_RGBA2BGR if image.shape[2] == 4 else cv2.COLOR_RGB2BGR)


def shipped_pictures():
    """-> ({name: BGR photo with faces}, {name: BGR picture without a face}, LFW faces, LFW non-faces)."""
    import skimage
    import skimage.data
    from matplotlib import cbook
    photos = {'astronaut': bgr(skimage.data.astronaut()), 'camera': bgr(skimage.data.camera()),
              'grace_hopper': cv2.imread(cbook.get_sample_data('grace_hopper.jpg', asfileobj=False))}
    negatives = {name: bgr(getattr(skimage.data, name)()) for name in NEGATIVES}
    negatives['minduka'] = cv2.imread(cbook.get_sample_data('Minduka_Present_Blue_Pack.png', asfileobj=False))
    lfw = np.load(os.path.join(os.path.dirname(skimage.data.__file__), 'lfw_subset.npy'))  # 100 faces, 100 not
    lfw = np.round(lfw * 255).astype(np.uint8)
    return photos, negatives, lfw[:100], lfw[100:]


def photo_faces(photos):
    """-> [(photo name, BGR patch, (face centre x, y, side) in it)]: each marked face of the photos with
    its head around it, and its mirror image."""
    sources = []
    for name, marked in PHOTO_FACES.items():
        for cx, cy, side in marked:
            picture = photos[name]
            x0, y0 = max(0, cx - side), max(0, cy - side)
            patch = picture[y0:cy + side, x0:cx + side]
            sources.append((name, patch, (cx - x0, cy - y0, side)))
            sources.append((name, patch[:, ::-1], (patch.shape[1] - 1 - (cx - x0), cy - y0, side)))
    return sources


def lfw_sources(lfw_faces):
    """-> [('lfw', BGR patch, (face centre x, y, side) in it)] of the 25 px LFW crops (a face, no head around it)."""
    n = lfw_faces.shape[1]
    dx, dy, scale = LFW_FACE
    return [('lfw', bgr(face), (n / 2.0 + dx * n, n / 2.0 + dy * n, scale * n)) for face in lfw_faces]


def random_view(picture, rng):
    """A random CANVAS-sized view of a picture (cropped to the canvas's shape, then resized)."""
    h, w = picture.shape[:2]
    ratio = CANVAS[1] / float(CANVAS[0])
    cw, ch = (w, int(w / ratio)) if w / float(h) < ratio else (int(h * ratio), h)
    x0, y0 = rng.randint(0, w - cw + 1), rng.randint(0, h - ch + 1)
    return cv2.resize(picture[y0:y0 + ch, x0:x0 + cw], CANVAS[::-1], interpolation=cv2.INTER_AREA)


def compose(background, sources, rng, n_faces, size=(20, 160), max_turn=30):
    """Paste n_faces random sources onto a copy of background: sides log-uniform in `size`, turned
    by up to max_turn degrees (two in five upright), contrast and brightness varied by up to 20%,
    apart from each other, with feathered edges.

    -> (picture, [(x, y, side, side, turn, source name)] of each pasted face)."""
    canvas = background.astype(np.float32)
    height, width = canvas.shape[:2]
    truths = []
    for _ in range(200 * n_faces):
        if len(truths) == n_faces:
            break
        side = float(np.exp(rng.uniform(np.log(size[0]), np.log(size[1]))))
        cx, cy = rng.uniform(0.5 * side, width - 0.5 * side), rng.uniform(0.5 * side, height - 0.5 * side)
        if any(np.hypot(cx - (x + s / 2), cy - (y + s / 2)) < 0.8 * (side + s) for x, y, s, _, _, _ in truths):
            continue
        name, patch, (fx, fy, fside) = sources[rng.randint(len(sources))]
        turn = 0.0 if rng.rand() < 0.4 else rng.uniform(-max_turn, max_turn)
        warp = cv2.getRotationMatrix2D((fx, fy), turn, side / fside)
        warp[:, 2] += (cx - fx, cy - fy)
        mask = np.zeros(patch.shape[:2], np.float32)
        cv2.ellipse(mask, (int(fx), int(fy)), (int(0.75 * fside), int(0.95 * fside)), 0, 0, 360, 1.0, -1)
        mask = cv2.GaussianBlur(mask, (0, 0), max(1.0, 0.12 * fside))
        mask[[0, -1], :] = mask[:, [0, -1]] = 0  # the patch's own edge fades out too
        alpha = cv2.warpAffine(mask, warp, (width, height))[..., None]
        light = rng.uniform(0.8, 1.2) * patch.astype(np.float32) + rng.uniform(-20, 20)
        pasted = cv2.warpAffine(light, warp, (width, height))
        canvas = alpha * pasted + (1 - alpha) * canvas
        truths.append((cx - side / 2, cy - side / 2, side, side, turn, name))
    return np.clip(np.round(canvas), 0, 255).astype(np.uint8), truths


def test_set(composites=40, lfw_composites=8, seed=0):
    """-> [(kind, name, BGR picture, [(x, y, w, h, turn, source) of its faces])], kind one of KINDS."""
    photos, negatives, lfw_faces, lfw_others = shipped_pictures()
    cases = [('photo', name, photos[name], [(cx - s / 2.0, cy - s / 2.0, s, s, 0.0, name) for cx, cy, s in marked])
             for name, marked in PHOTO_FACES.items()]
    rng = np.random.RandomState(seed)
    backgrounds = sorted(negatives)
    for kind, count, sources in (('composite', composites, photo_faces(photos)),
                                 ('lfw', lfw_composites, lfw_sources(lfw_faces))):
        for i in range(count):
            view = random_view(negatives[backgrounds[i % len(backgrounds)]], rng)
            picture, truths = compose(view, sources, rng, n_faces=rng.randint(2, 8))
            cases.append((kind, '%s_%02d' % (kind, i), picture, truths))
    cases += [('no face', name, picture, []) for name, picture in sorted(negatives.items())]
    tiles = [cv2.resize(p, (48, 48), interpolation=cv2.INTER_CUBIC) for p in lfw_others]
    mosaic = np.vstack([np.hstack(tiles[r * 10:(r + 1) * 10]) for r in range(10)])
    cases.append(('no face', 'lfw_non_faces', bgr(mosaic), []))
    return cases


def match(boxes, truths):
    """-> (found: bool per truth, false: count of boxes that find no face). Each box finds at most one
    face: its centre in the face's box, its side 0.5-2x the box's; nearest centres are paired first."""
    pairs = []
    for i, (x, y, w, h) in enumerate(boxes):
        cx, cy, side = x + w / 2.0, y + h / 2.0, max(w, h)
        for j, (tx, ty, tw, th) in enumerate(t[:4] for t in truths):
            if tx <= cx <= tx + tw and ty <= cy <= ty + th and 0.5 <= side / float(tw) <= 2.0:
                pairs.append((np.hypot(cx - tx - tw / 2.0, cy - ty - th / 2.0) / tw, i, j))
    used_boxes, found = set(), [False] * len(truths)
    for _, i, j in sorted(pairs):
        if i not in used_boxes and not found[j]:
            used_boxes.add(i)
            found[j] = True
    return found, len(boxes) - len(used_boxes)
