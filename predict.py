"""Smile, emotion and gender of every face in pictures, a video or a camera stream.

  python predict.py photo.jpg                          each face, largest first: box, P(smile), emotion, P(male)
  python predict.py a.jpg b.png --out annotated.jpg    draw boxes and labels (several pictures: annotated_1.jpg, ...)
  python predict.py photo.jpg --json                   machine-readable output
  python predict.py --video clip.mp4 --out annotated.mp4   annotate every frame (.mp4 or .avi)
  python predict.py --camera 0 --out camera.avi        the same from a camera, until Ctrl-C or --max-frames
  python predict.py photo.jpg --benchmark 100          p50 latency: session call alone, and with detection
  python predict.py group.jpg --detect-side 960        search at a larger size: slower, finds smaller faces
  python predict.py photo.jpg --detector haar          OpenCV's Haar cascade instead of YuNet
  python predict.py photo.jpg --engine litert --checkpoint exported/bknet_int8.tflite   run export.py --tflite's file

The model is the newest checkpoint of --checkpoint (default: pretrained/ when the repo ships it,
else checkpoints/). Faces are found by faces.detect_faces (YuNet by default, each face in the box
Haar draws for it, the framing the network was trained on) and cropped exactly as the training faces were
(faces.preprocess_face); all faces of a picture go through the network in one session call. A
model with heads for only some of the tasks reports those. In a video the whole frame is searched
every --detect-every frames and each face is looked for around its last box in between (by YuNet
alone: its box keeps the place Haar's had on it at the last full search); each face is followed
from frame to frame by box overlap and its probabilities are averaged over its last --smooth
frames, which steadies the labels. A picture without a face is not an error (exit 0); a
missing or unreadable file is (one line on stderr, exit 2), and so is a picture of more than
MAX_PIXELS (120 megapixels), found from its header before it is decoded. Pictures are decoded one
at a time, each when its turn comes. Ctrl-C ends a video or camera run after the current frame,
keeping the video written so far; at any other time it stops with one line and exit code 130.

Public names:
  MAX_PIXELS                        the largest picture read (width x height)
  picture_size(path)                (width, height) from a PNG or JPEG header; None for other formats
  header_size(f)                    the same from a binary file object (serve.py's uploads: io.BytesIO)
  check_picture(path)               DataError naming the file if it is missing or larger than MAX_PIXELS
  check_size(size, name)            DataError naming the picture if size is larger than MAX_PIXELS
  read_image(path)                  a picture file -> BGR uint8; DataError naming the file if unreadable
  decode_image(data, name)          a picture's bytes (uint8 array) -> BGR uint8; DataError naming it if
                                    empty, truncated (a JPEG without its end) or no picture
  Predictor(session, checkpoint, views=1, detector='yunet', detect_side=None, engine=None)
                                    predictor(picture, boxes=None) -> [(box, {task: probabilities})], largest
                                    face first (found by the detector unless boxes are given); views > 1
                                    averages test-time views (data_provider.tta_views); a .tflite checkpoint
                                    runs in LiteRT (litert_model.py; session unused, may be None)
  describe(box, probabilities, track=None) -> one face as a JSON-ready dict (the tasks the model has)
  format_face(face)                 one described face as a line of text
  annotate(picture, described)      draw the described faces' boxes and labels in place
  run_stream(capture, predictor, out_path, ..., detect_every=5)   annotate a video or camera stream, its
                                    faces found and followed by tracking.FaceTracker
  benchmark(predictor, picture, runs) -> (faces, session call ms, end-to-end ms), p50 each
  open_video(path), open_camera(index)   an OpenCV capture; DataError naming what cannot be opened
  output_paths(out, count), write_image(path, picture)   where --out's annotated pictures go, and writing one
  refuse_input_as_output(inputs, outputs)   DataError when an output is an input (same file by any path)
"""
import json
import os
import signal
import struct
import sys
import time

import cli

# oneDNN off for this command, decided before TensorFlow loads (an importer keeps its own choice):
# batch-1 calls are no faster with it, and the first call of each new batch size (a new number of
# faces) is slower; benchmarks/bench_detect.py --sections onednn measures both.
if __name__ == '__main__':
    cli.start(onednn=False)

# OpenCV reads these when it loads. Pictures of more than MAX_PIXELS are refused: picture_size reads
# the size of PNG and JPEG files from their header, OpenCV checks the other formats. A camera that
# cannot be opened or a file that is no video is reported in one line of our own, without
# OpenCV's and FFmpeg's warnings.
os.environ.setdefault('OPENCV_IO_MAX_IMAGE_PIXELS', str(120 * 10 ** 6))  # MAX_PIXELS
os.environ.setdefault('OPENCV_FFMPEG_LOGLEVEL', '-8')

import cv2
import numpy as np

import checkpoints
import data_provider
import faces
import files
import litert_model
import tracking
from config import CLASS_NAMES, EMOTION, GENDER, SMILE, TASK_NAMES, TASKS
from data_utils import DataError

# Larger pictures are refused before they are decoded: 120 megapixels lets the largest phone
# photos (108) through and keeps a decoded picture under 0.5 GB.
MAX_PIXELS = 120 * 10 ** 6
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
VIDEO_CODECS = {'.mp4': 'mp4v', '.avi': 'MJPG'}  # what opencv-python-headless can write
BOX_COLOUR = (0, 200, 0)


def picture_size(path):
    """(width, height) from a PNG or JPEG file's header, without decoding; None for other formats."""
    try:
        with open(path, 'rb') as f:
            return header_size(f)
    except FileNotFoundError:
        raise DataError('%s: file not found' % path) from None
    except OSError as err:
        raise DataError('%s: cannot read the picture (%s)' % (path, err.strerror or err)) from err


def header_size(f):
    """(width, height) from the PNG or JPEG header a binary file object starts with; None for other formats."""
    head = f.read(24)
    if head.startswith(b'\x89PNG\r\n\x1a\n') and head[12:16] == b'IHDR':
        return struct.unpack('>II', head[16:24])
    if not head.startswith(b'\xff\xd8'):
        return None
    f.seek(2)
    while True:  # JPEG segments up to the frame header (SOFn) that holds the size
        marker = f.read(2)
        if len(marker) < 2 or marker[0] != 0xFF:
            return None
        if 0xC0 <= marker[1] <= 0xCF and marker[1] not in (0xC4, 0xC8, 0xCC):
            frame = f.read(7)  # length, precision, height, width
            return struct.unpack('>3xHH', frame)[::-1] if len(frame) == 7 else None
        length = f.read(2)
        if len(length) < 2:
            return None
        f.seek(struct.unpack('>H', length)[0] - 2, os.SEEK_CUR)


def check_picture(path):
    """DataError naming the file unless it can be read and is not larger than MAX_PIXELS (by its header)."""
    check_size(picture_size(path), path)


def check_size(size, name):
    """DataError naming the picture if size (width, height; None: unknown) is more than MAX_PIXELS."""
    if size and size[0] * size[1] > MAX_PIXELS:
        raise DataError('%s: %dx%d pixels, more than the %d megapixels a picture may have'
                        % (name, size[0], size[1], MAX_PIXELS // 10 ** 6))


def read_image(path):
    """A picture file -> BGR uint8 (H,W,3). Read as bytes first, so non-ASCII paths work everywhere."""
    check_picture(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as err:
        raise DataError('%s: cannot read the picture (%s)' % (path, err.strerror or err)) from err
    return decode_image(data, path)


def decode_image(data, name):
    """An encoded picture (uint8 array of the file's bytes) -> BGR uint8 (H,W,3); DataError naming it
    if it is empty, truncated, no picture, or (formats other than PNG and JPEG) above MAX_PIXELS."""
    try:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size and not _truncated_jpeg(data) else None
    except cv2.error as err:  # OpenCV refuses a picture above its pixel limit before decoding it
        if 'CV_IO_MAX_IMAGE_PIXELS' in str(err):
            raise DataError('%s: more than the %d megapixels a picture may have'
                            % (name, MAX_PIXELS // 10 ** 6)) from err
        image = None
    if image is None:
        raise DataError('%s: not a readable picture (empty, truncated or not an image file)' % name)
    return image


def _truncated_jpeg(data):
    """True for a JPEG cut short: its last scan (SOS marker) has no end-of-image marker after it.
    OpenCV decodes such a file without an error, greying what is missing."""
    data = data.tobytes()
    return data.startswith(b'\xff\xd8') and data.rfind(b'\xff\xd9') < data.rfind(b'\xff\xda')


class Predictor(object):
    """The restored model plus face detection: one session call per picture."""

    def __init__(self, session, checkpoint, views=1, detector=faces.DEFAULT_DETECTOR, detect_side=None, engine=None):
        self.net, self.checkpoint = litert_model.load_model(session, checkpoint, engine)
        self.views = views
        self.detector, self.detect_side = detector, detect_side

    def crops(self, picture, boxes=None):
        """-> (boxes largest first, their 48x48 crops) of a BGR picture; boxes: found by the detector if None."""
        if boxes is None:
            boxes = faces.detect_faces(picture, self.detector, self.detect_side)
        gray = cv2.cvtColor(picture, cv2.COLOR_BGR2GRAY)
        return boxes, [faces.preprocess_face(gray, box) for box in boxes]

    def __call__(self, picture, boxes=None):
        boxes, crops = self.crops(picture, boxes)
        if not boxes:
            return []
        probs = self.net.predict(np.stack(crops), views=self.views)  # every face of the picture in one batch
        return [(box, {t: p[i] for t, p in probs.items()}) for i, box in enumerate(boxes)]


def describe(box, probabilities, track=None):
    """{'box': [x, y, w, h], task name: {'label', 'probabilities': {class: p}}} (+ 'track' in a stream),
    with the tasks probabilities has (a model may have heads for only some), in TASKS order."""
    face = {'box': [int(v) for v in box]}
    if track is not None:
        face['track'] = track
    for task in _tasks(probabilities):
        p = probabilities[task]
        face[TASK_NAMES[task]] = {'label': CLASS_NAMES[task][int(np.argmax(p))],
                                  'probabilities': {name: round(float(v), 4) for name, v in zip(CLASS_NAMES[task], p)}}
    return face


def _tasks(described):
    """The tasks of a probabilities dict {task: p} or of a described face {task name: ...}, in TASKS order."""
    return [t for t in TASKS if t in described or TASK_NAMES[t] in described]


def _top(face, task):
    """(label, its probability) of one task of a described face."""
    head = face[TASK_NAMES[task]]
    return head['label'], head['probabilities'][head['label']]


def format_face(face):
    """'box x=.. y=.. w=.. h=..  smile 0.93  emotion happy 0.81 (angry 0.01 ...)  gender male, P(male) 0.88',
    with the parts of the tasks the face has."""
    parts = ['box x=%d y=%d w=%d h=%d' % tuple(face['box'])]
    tasks = _tasks(face)
    if SMILE in tasks:
        parts.append('smile %.2f' % face[TASK_NAMES[SMILE]]['probabilities']['smile'])
    if EMOTION in tasks:
        emotion = face[TASK_NAMES[EMOTION]]['probabilities']
        parts.append('emotion %s %.2f (%s)' % (_top(face, EMOTION) + (
            ' '.join('%s %.2f' % item for item in emotion.items()),)))
    if GENDER in tasks:
        gender = face[TASK_NAMES[GENDER]]
        parts.append('gender %s, P(male) %.2f' % (gender['label'], gender['probabilities']['male']))
    return '  '.join(parts)


def annotate(picture, described):
    """Draw each face's box and its predicted labels (one line a task): above the box, below it when
    there is no room above, inside it when there is room for neither."""
    height = picture.shape[0]
    for face in described:
        x, y, w, h = face['box']
        scale = max(0.35, min(0.8, w / 300.0))
        cv2.rectangle(picture, (x, y), (x + w, y + h), BOX_COLOUR, 2)
        lines = ['%s %.2f' % _top(face, t) for t in _tasks(face)]
        line_h = cv2.getTextSize('Ag', cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][1] * 2
        block = line_h * len(lines)
        top = y - block if y >= block else y + h if y + h + block <= height else y
        for i, text in enumerate(lines):
            width = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0]
            y0 = top + i * line_h
            cv2.rectangle(picture, (x, y0), (x + width + 6, y0 + line_h), BOX_COLOUR, -1)
            cv2.putText(picture, text, (x + 3, y0 + line_h * 3 // 4), cv2.FONT_HERSHEY_SIMPLEX, scale,
                        (0, 0, 0), 1, cv2.LINE_AA)
    return picture


# ----------------------------------------------------------------------------- streams

def open_video(path):
    if not os.path.isfile(path):
        raise DataError('%s: file not found' % path)
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        raise DataError('%s: not a readable video' % path)
    return capture


def open_camera(index):
    capture = cv2.VideoCapture(index)
    if not capture.isOpened():
        raise DataError('camera %d: cannot be opened (no camera with this index, or it is in use)' % index)
    return capture


def run_stream(capture, predictor, out_path, source, smooth=tracking.SMOOTH_FRAMES, max_frames=0,
               json_lines=False, detect_every=tracking.DETECT_EVERY):
    """Annotate frames into out_path until the stream ends, max_frames, or Ctrl-C.

    The predictor's detector searches every detect_every-th frame whole and each face's
    surroundings in between (tracking.FaceTracker). Returns (frames, faces tracked, seconds); the
    time covers everything from reading a frame to writing it. json_lines: print one JSON object
    per frame. Ctrl-C ends the stream after the
    frame under way (how a camera run ends) and keeps the video written so far; call it from the
    main thread, where Python handles signals.
    """
    fourcc = VIDEO_CODECS.get(os.path.splitext(out_path)[1].lower())
    if fourcc is None:
        raise DataError('%s: the annotated video must be .mp4 or .avi' % out_path)
    fps = capture.get(cv2.CAP_PROP_FPS)
    fps = fps if 0 < fps < 1000 else 25.0  # cameras often report 0
    announced = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))  # a file's header; a camera's -1 or 0
    tracker = tracking.FaceTracker(predictor.detector, detect_every, predictor.detect_side, smooth)
    writer, frames = None, 0
    stopped = []
    previous_handler = signal.signal(signal.SIGINT, lambda signum, frame: stopped.append(signum))
    start = time.time()
    try:
        while not stopped and (not max_frames or frames < max_frames):
            ok, frame = capture.read()
            if not ok:
                break
            found = [describe(*face) for face in tracker.update(predictor(frame, tracker.find(frame)))]
            if writer is None:
                writer = cv2.VideoWriter(out_path, cv2.VideoWriter_fourcc(*fourcc), fps, frame.shape[1::-1])
                if not writer.isOpened():
                    raise DataError('%s: cannot write the video (%s)' % (out_path, _unwritable(out_path)))
            writer.write(annotate(frame, found))
            if json_lines:
                print(json.dumps({'frame': frames, 'faces': found}), flush=True)
            frames += 1
    finally:
        signal.signal(signal.SIGINT, previous_handler)
        if writer is not None:
            writer.release()
        capture.release()
    if frames == 0:
        raise DataError('%s: no frame could be read (not a video, or an empty one)' % source)
    if announced > frames and not stopped and frames != max_frames:
        print('%s: read %d of the %d frames its header announces: the file is damaged or cut short; the annotated '
              'video holds those %d' % (source, frames, announced, frames), file=sys.stderr)
    return frames, tracker.started, time.time() - start


def _unwritable(path):
    """Why OpenCV could not open path for writing (it does not say)."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        return 'its folder does not exist'
    if not os.access(folder, os.W_OK):
        return 'its folder is read-only'
    return 'OpenCV has no writer for it here'


# ----------------------------------------------------------------------------- pictures

def benchmark(predictor, picture, runs):
    """p50 milliseconds of the session call alone and of detection + crops + session call."""
    _, crops = predictor.crops(picture)
    if not crops:
        raise DataError('no face found to benchmark')
    batch = np.stack(crops)
    timings = {'session': [], 'end_to_end': []}
    for i in range(runs + 3):  # the first calls warm up TensorFlow
        t0 = time.perf_counter()
        predictor.net.predict(batch)
        t1 = time.perf_counter()
        predictor(picture)
        t2 = time.perf_counter()
        if i >= 3:
            timings['session'].append(t1 - t0)
            timings['end_to_end'].append(t2 - t1)
    return len(crops), 1000 * np.median(timings['session']), 1000 * np.median(timings['end_to_end'])


def output_paths(out, count):
    """--out for `count` pictures: the name itself for one, name_1.ext, name_2.ext, ... for several."""
    if count == 1:
        return [out]
    stem, ext = os.path.splitext(out)
    return ['%s_%d%s' % (stem, i, ext) for i in range(1, count + 1)]


def write_image(path, picture):
    """Write picture in the format its extension names, whole or not at all; DataError saying why not."""
    extension = os.path.splitext(path)[1]
    try:
        ok, encoded = cv2.imencode(extension, picture)
    except cv2.error:  # an extension OpenCV has no writer for
        ok = False
    if not ok:
        raise DataError('%s: cannot write the picture (no picture format has the extension %r)' % (path, extension))
    try:
        with files.atomic_write(path) as f:
            f.write(encoded.tobytes())
    except OSError as err:  # a missing or read-only folder, a full disk
        raise DataError('%s: cannot write the picture (%s)' % (path, err.strerror or err)) from None


# ----------------------------------------------------------------------------- command line

def parse_args(argv=None):
    p = cli.docstring_parser(__doc__, 2)
    p.add_argument('images', nargs='*', metavar='IMAGE', help='picture files')
    cli.add_checkpoint_argument(p)
    p.add_argument('--out', help='annotated picture (several pictures: name_1.ext, ...) or video (.mp4 or .avi)')
    p.add_argument('--json', action='store_true', help='print JSON (streams: one line per frame)')
    p.add_argument('--tta-views', type=int, choices=(1, 2, 18), default=1,
                   help='average each face over this many test-time views: 2 adds the mirror image, 18 also shifts '
                        'by -%d, 0, +%d px (a few points more accurate on FER-2013, 18 network passes) (default: 1)'
                        % (data_provider.TTA_SHIFT, data_provider.TTA_SHIFT))
    p.add_argument('--engine', choices=litert_model.ENGINES,
                   help='tf: restore the checkpoint in a TensorFlow session; litert: run a .tflite file of export.py '
                        '--tflite with LiteRT; its int8 file runs the network in a third of the time on CPU (default: litert '
                        'for a .tflite --checkpoint)')
    p.add_argument('--detector', choices=faces.DETECTORS, default=faces.DEFAULT_DETECTOR,
                   help='face detector: yunet (a small CNN, finds turned and small faces) or haar (OpenCV\'s '
                        'cascade, what the training crops used) (default: %(default)s)')
    p.add_argument('--detect-side', type=int, metavar='PIXELS',
                   help='search pictures with their longer side shrunk to this: larger finds smaller faces, slower '
                        '(default: %s; YuNet at most %d)' % (', '.join('%s %d' % kv for kv in faces.DETECT_SIDE.items()),
                                                             faces.YUNET_MAX_SIDE))
    p.add_argument('--video', metavar='FILE', help='annotate every frame of a video file (needs --out)')
    p.add_argument('--camera', type=int, metavar='INDEX', help='annotate a camera stream (needs --out)')
    p.add_argument('--smooth', type=int, default=tracking.SMOOTH_FRAMES,
                   help='streams: average each face over this many frames (default: %(default)s)')
    p.add_argument('--detect-every', type=int, default=tracking.DETECT_EVERY, metavar='K',
                   help='streams: search the whole frame every K-th frame and follow each face around its last box '
                        'in between (default: %(default)s)')
    p.add_argument('--max-frames', type=int, default=0,
                   help='streams: stop after this many frames (default: 0, the whole stream)')
    p.add_argument('--benchmark', type=int, metavar='RUNS', help='time RUNS predictions on the first picture')
    args = p.parse_args(argv)
    streams = (args.video is not None) + (args.camera is not None)
    if streams + bool(args.images) != 1:
        p.error('give picture files, or --video FILE, or --camera INDEX (one of them)')
    if streams and not args.out:
        p.error('--video and --camera need --out FILE.mp4 or FILE.avi')
    if args.benchmark is not None and (streams or args.benchmark < 1):
        p.error('--benchmark needs picture files and RUNS >= 1')
    if args.smooth < 1:
        p.error('--smooth must be at least 1')
    if args.detect_every < 1:
        p.error('--detect-every must be at least 1')
    if args.detect_side is not None and args.detect_side < 1:
        p.error('--detect-side must be at least 1')
    if args.detector == 'yunet' and (args.detect_side or 0) > faces.YUNET_MAX_SIDE:
        p.error('--detect-side must be at most %d for YuNet' % faces.YUNET_MAX_SIDE)
    return args


def refuse_input_as_output(inputs, outputs):
    """DataError when an output would overwrite an input (the same file, through any path or link)."""
    for out in outputs:
        for path in inputs:
            if os.path.exists(out) and os.path.exists(path) and os.path.samefile(out, path):
                raise DataError('%s: --out would overwrite the input %s; choose another file' % (out, path))


def _open_stream(args):
    """-> (source name, capture) of --video or --camera; (None, None) for pictures."""
    if args.video is not None:
        return args.video, open_video(args.video)
    if args.camera is not None:
        return 'camera %d' % args.camera, open_camera(args.camera)
    return None, None


def _annotate_stream(args, predictor, source, capture):
    """--video, --camera: the annotated stream written to --out, then one line about it (on stderr with --json)."""
    frames, tracks, seconds = run_stream(capture, predictor, args.out, source, args.smooth,
                                         args.max_frames, args.json, args.detect_every)
    print('%s: %d frames, %d face track(s), %.1f frames/s; wrote %s'
          % (source, frames, tracks, frames / max(seconds, 1e-9), args.out),
          file=sys.stderr if args.json else sys.stdout)


def _print_benchmark(args, predictor):
    """--benchmark: p50 latencies on the first picture."""
    count, session_ms, total_ms = benchmark(predictor, read_image(args.images[0]), args.benchmark)
    call = 'LiteRT call' if isinstance(predictor.net, litert_model.LiteRTModel) else 'session call'
    print('%s: %d face(s), p50 of %d runs: %s %.1f ms, detection + crop + %s %.1f ms'
          % (args.images[0], count, args.benchmark, call, session_ms, call, total_ms))


def _predict_pictures(args, predictor, outputs):
    """Each picture in turn, decoded when its turn comes: its faces printed, its annotated copy written to
    outputs (if any). -> with --json, [{'image', 'faces'}] for one document printed at the end (nothing
    printed here); else []."""
    results = []
    for i, path in enumerate(args.images):
        picture = read_image(path)
        described = [describe(box, probs) for box, probs in predictor(picture)]
        if outputs:
            write_image(outputs[i], annotate(picture, described))
        if args.json:
            results.append({'image': path, 'faces': described})
            continue
        print('%s: %s' % (path, '%d face(s)' % len(described) if described else 'no face found'))
        for n, face in enumerate(described, 1):
            print('  face %d  %s' % (n, format_face(face)))
    return results


def main(argv=None):
    args = parse_args(argv)
    outputs = output_paths(args.out, len(args.images)) if args.out and args.images else []
    try:
        # Missing and oversized pictures fail before the model is loaded; each is decoded only when its turn comes.
        for path in args.images:
            check_picture(path)
        inputs = args.images + ([args.video] if args.video is not None else [])
        refuse_input_as_output(inputs, outputs or ([args.out] if args.out else []))  # a stream's one --out
        source, capture = _open_stream(args)
        with litert_model.session_for(args.checkpoint, args.engine) as session:  # none for LiteRT
            predictor = Predictor(session, args.checkpoint, args.tta_views, args.detector, args.detect_side, args.engine)
            if not args.images:
                _annotate_stream(args, predictor, source, capture)
                return 0
            if args.benchmark:
                _print_benchmark(args, predictor)
                return 0
            results = _predict_pictures(args, predictor, outputs)  # --json: printed below, as one document
    except (DataError, checkpoints.CheckpointError) as err:
        return cli.error(err)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for path in outputs:
        print('wrote %s' % path)
    return 0


if __name__ == '__main__':
    sys.exit(main())
