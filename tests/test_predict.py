"""predict.py on a picture composed from matplotlib's Grace Hopper photo (Haar finds her face at
every size used here), a blank picture, a file that is no picture, and a short video."""
import contextlib
import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import zlib

import cv2
import numpy as np
import pytest
import skimage.data
from matplotlib import cbook

import faces
import predict
import tf_setup
from config import CLASS_NAMES, EMOTION, GENDER, SMILE, TASK_NAMES, TASKS
from conftest import assert_interrupted, run_interrupted  # SIGINT at a chosen moment

tf = tf_setup.import_tf()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Three copies of the photo's face region side by side: (left x, width) of each on the canvas.
COPIES = ((10, 240), (300, 170), (520, 130))
CANVAS = (320, 700)


def compose_faces():
    """A 320x700 BGR picture with three faces of decreasing size; -> (picture, [(x0, y0, x1, y1)] of each copy)."""
    photo = cv2.imread(cbook.get_sample_data('grace_hopper.jpg', asfileobj=False))[50:440, 100:430]
    canvas = np.full(CANVAS + (3,), 200, np.uint8)
    regions = []
    for x, width in COPIES:
        copy = cv2.resize(photo, (width, int(width * photo.shape[0] / photo.shape[1])), interpolation=cv2.INTER_AREA)
        canvas[10:10 + copy.shape[0], x:x + width] = copy
        regions.append((x, 10, x + width, 10 + copy.shape[0]))
    return canvas, regions


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp('pictures')
    paths = {name: str(folder / name) for name in ('faces.jpg', 'blank.png', 'not_a_picture.jpg', 'clip.avi')}
    picture, _ = compose_faces()
    cv2.imwrite(paths['faces.jpg'], picture)
    cv2.imwrite(paths['blank.png'], np.full((200, 300, 3), 128, np.uint8))
    with open(paths['not_a_picture.jpg'], 'w') as f:
        f.write('hello, I am text\n')
    writer = cv2.VideoWriter(paths['clip.avi'], cv2.VideoWriter_fourcc(*'MJPG'), 10, CANVAS[::-1])
    for i in range(10):  # the faces drift right by 3 pixels a frame
        writer.write(np.roll(picture, 3 * i, axis=1))
    writer.release()
    return paths


@pytest.fixture(scope='module')
def predictor(demo_checkpoint):
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as session:
        yield predict.Predictor(session, demo_checkpoint)


def run_main(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = predict.main(argv)
    return code, out.getvalue(), err.getvalue()


def check_probabilities(probabilities):
    for task in TASKS:
        p = np.asarray(probabilities[task])
        assert p.shape == (len(CLASS_NAMES[task]),)
        assert np.all(p >= 0) and p.sum() == pytest.approx(1.0, abs=1e-5)


def test_finds_every_face_largest_first_with_valid_probabilities(predictor):
    picture, regions = compose_faces()
    faces = predictor(picture)
    assert len(faces) == 3
    boxes = [box for box, _ in faces]
    assert [w * h for _, _, w, h in boxes] == sorted((w * h for _, _, w, h in boxes), reverse=True)
    for (x, y, w, h), (x0, y0, x1, y1) in zip(boxes, regions):  # largest box <-> largest copy
        assert x0 <= x + w / 2 <= x1 and y0 <= y + h / 2 <= y1
    for _, probabilities in faces:
        check_probabilities(probabilities)


def test_all_faces_of_a_picture_go_through_one_session_call(predictor, monkeypatch):
    calls = []
    run = predictor.net.sess.run
    monkeypatch.setattr(predictor.net.sess, 'run', lambda *a, **k: calls.append(1) or run(*a, **k))
    assert len(predictor(compose_faces()[0])) == 3
    assert len(calls) == 1


def test_json_for_faces_and_for_a_blank_picture(demo_checkpoint, files):
    code, out, err = run_main([files['faces.jpg'], files['blank.png'], '--checkpoint', demo_checkpoint, '--json'])
    assert code == 0, err
    results = json.loads(out)
    assert [r['image'] for r in results] == [files['faces.jpg'], files['blank.png']]
    faces, blank = results[0]['faces'], results[1]['faces']
    assert len(faces) == 3 and blank == []
    for face in faces:
        assert len(face['box']) == 4
        for task in TASKS:
            head = face[TASK_NAMES[task]]
            probabilities = [head['probabilities'][name] for name in CLASS_NAMES[task]]
            assert sum(probabilities) == pytest.approx(1.0, abs=1e-3)  # rounded to 4 decimals
            assert head['label'] == CLASS_NAMES[task][int(np.argmax(probabilities))]


def test_text_output_and_annotated_pictures(demo_checkpoint, files, tmp_path):
    out = str(tmp_path / 'annotated.jpg')
    code, stdout, err = run_main([files['faces.jpg'], files['blank.png'], '--checkpoint', demo_checkpoint,
                                  '--out', out])
    assert code == 0, err
    lines = stdout.splitlines()
    assert lines[0] == '%s: 3 face(s)' % files['faces.jpg']
    for line in lines[1:4]:
        assert 'box x=' in line and 'smile ' in line and 'P(male)' in line
        assert all(name in line for name in CLASS_NAMES[EMOTION])
    assert '%s: no face found' % files['blank.png'] in lines
    for i, source in ((1, 'faces.jpg'), (2, 'blank.png')):
        written = cv2.imread(str(tmp_path / ('annotated_%d.jpg' % i)))
        original = cv2.imread(files[source])
        assert written is not None and written.shape == original.shape
    drawn = cv2.imread(str(tmp_path / 'annotated_1.jpg')).astype(int) - cv2.imread(files['faces.jpg']).astype(int)
    assert (np.abs(drawn).max(axis=2) > 60).mean() > 0.01  # boxes and labels, not just JPEG noise


def test_blank_picture_is_not_an_error(demo_checkpoint, files):
    code, out, err = run_main([files['blank.png'], '--checkpoint', demo_checkpoint])
    assert (code, out) == (0, '%s: no face found\n' % files['blank.png']) and 'error' not in err


@pytest.mark.slow
def test_not_a_picture_is_one_line_and_exit_2(files):
    result = subprocess.run([sys.executable, 'predict.py', files['not_a_picture.jpg']], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and result.stdout == ''
    errors = [line for line in result.stderr.splitlines() if line.startswith('error: ')]  # TensorFlow may log too
    assert errors == [result.stderr.strip().splitlines()[-1]] and 'Traceback' not in result.stderr
    assert errors[0].startswith('error: %s: ' % files['not_a_picture.jpg'])


def test_missing_picture_and_missing_camera(demo_checkpoint, tmp_path):
    code, _, err = run_main([str(tmp_path / 'nowhere.jpg')])
    assert code == 2 and err.startswith('error: %s: ' % (tmp_path / 'nowhere.jpg')) and err.count('\n') == 1
    code, _, err = run_main(['--camera', '9', '--out', str(tmp_path / 'camera.avi'), '--checkpoint', demo_checkpoint])
    assert code == 2 and err == 'error: camera 9: cannot be opened (no camera with this index, or it is in use)\n'


def test_video_is_annotated_frame_by_frame_with_tracked_faces(demo_checkpoint, files, tmp_path):
    out = str(tmp_path / 'annotated.mp4')
    code, stdout, err = run_main(['--video', files['clip.avi'], '--out', out, '--checkpoint', demo_checkpoint,
                                  '--json'])
    assert code == 0
    frames = [json.loads(line) for line in stdout.splitlines()]
    assert [f['frame'] for f in frames] == list(range(10))
    assert 'frames/s' in err and '10 frames' in err
    # three faces drifting slowly keep their track ids: the largest one is always track 1
    assert {face['track'] for f in frames for face in f['faces']} == {1, 2, 3}
    assert all(f['faces'][0]['track'] == 1 for f in frames if f['faces'])
    capture = cv2.VideoCapture(out)
    written = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        written.append(frame.shape)
    assert written == [CANVAS + (3,)] * 10


# ----------------------------------------------------------------------------- large pictures, one at a time, Ctrl-C

def png_header(width, height):
    """A tiny PNG file whose header claims width x height (the pixel data is a few bytes)."""
    def chunk(kind, data):
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)) +
            chunk(b'IDAT', zlib.compress(b'\x00' * 64)) + chunk(b'IEND', b''))


def jpeg_claiming(width, height):
    """A real 64x48 JPEG with its frame header (SOF0) changed to claim width x height."""
    data = bytearray(cv2.imencode('.jpg', np.zeros((48, 64, 3), np.uint8))[1].tobytes())
    sof = data.index(b'\xff\xc0')
    assert struct.unpack('>HH', data[sof + 5:sof + 9]) == (48, 64)
    data[sof + 5:sof + 9] = struct.pack('>HH', height, width)
    return bytes(data)


def test_picture_size_from_the_header(tmp_path, files):
    (tmp_path / 'a.png').write_bytes(png_header(100000, 30000))
    (tmp_path / 'b.jpg').write_bytes(jpeg_claiming(9000, 7000))
    cv2.imwrite(str(tmp_path / 'c.bmp'), np.zeros((5, 7, 3), np.uint8))
    assert predict.picture_size(str(tmp_path / 'a.png')) == (100000, 30000)
    assert predict.picture_size(str(tmp_path / 'b.jpg')) == (9000, 7000)
    assert predict.picture_size(files['faces.jpg']) == CANVAS[::-1]  # a JPEG as OpenCV writes it
    assert predict.picture_size(str(tmp_path / 'c.bmp')) is None  # another format: OpenCV checks it


def test_a_truncated_jpeg_is_unreadable_and_bytes_after_its_end_are_not(files, tmp_path):
    """OpenCV decodes a JPEG cut short without an error, greying what is missing; read_image refuses it."""
    with open(files['faces.jpg'], 'rb') as f:
        whole = f.read()
    cut = str(tmp_path / 'cut.jpg')
    for length in (len(whole) // 2, len(whole) - 2):  # mid-picture; only the end-of-image marker missing
        with open(cut, 'wb') as f:
            f.write(whole[:length])
        assert cv2.imread(cut) is not None  # OpenCV alone takes it
        with pytest.raises(predict.DataError, match='cut.jpg: not a readable picture'):
            predict.read_image(cut)
    padded = str(tmp_path / 'padded.jpg')
    with open(padded, 'wb') as f:
        f.write(whole + bytes(100))
    np.testing.assert_array_equal(predict.read_image(padded), cv2.imread(files['faces.jpg']))


@pytest.mark.parametrize('name, content', [('huge.png', png_header(100000, 100000)),
                                           ('huge.jpg', jpeg_claiming(12000, 10001))])
def test_picture_above_the_pixel_limit_is_refused_from_its_header(files, tmp_path, monkeypatch, name, content):
    huge = tmp_path / name
    huge.write_bytes(content)
    decoded = []
    monkeypatch.setattr(cv2, 'imdecode', lambda *args: decoded.append(args))
    # listed after a good picture and with no model: refused before any picture is decoded or the model loaded
    code, out, err = run_main([files['faces.jpg'], str(huge), '--checkpoint', str(tmp_path / 'no_model')])
    width, height = predict.picture_size(str(huge))
    assert width * height > predict.MAX_PIXELS
    assert (code, out, decoded) == (2, '', [])
    assert err == 'error: %s: %dx%d pixels, more than the %d megapixels a picture may have\n' % (
        huge, width, height, predict.MAX_PIXELS // 10 ** 6)


def test_other_formats_above_the_limit_are_refused_by_opencv(demo_checkpoint, tmp_path):
    side = 11000  # 121 megapixels: a BMP header, then a few bytes of pixels
    huge = tmp_path / 'huge.bmp'
    huge.write_bytes(b'BM' + struct.pack('<IHHI', 54 + side * side * 3, 0, 0, 54) +
                     struct.pack('<IiiHHIIiiII', 40, side, side, 1, 24, 0, side * side * 3, 2835, 2835, 0, 0) + bytes(64))
    result = subprocess.run([sys.executable, 'predict.py', str(huge), '--checkpoint', demo_checkpoint], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and 'Traceback' not in result.stderr
    assert result.stderr.splitlines()[-1] == 'error: %s: more than the 120 megapixels a picture may have' % huge


def test_pictures_are_decoded_one_at_a_time(demo_checkpoint, files, monkeypatch):
    events = []
    decode, call = cv2.imdecode, predict.Predictor.__call__
    monkeypatch.setattr(cv2, 'imdecode', lambda *args: events.append('decode') or decode(*args))
    monkeypatch.setattr(predict.Predictor, '__call__', lambda self, picture: events.append('predict') or call(self, picture))
    code, out, err = run_main([files['faces.jpg'], files['blank.png'], files['faces.jpg'], '--checkpoint', demo_checkpoint])
    assert code == 0, err
    assert events == ['decode', 'predict'] * 3
    assert out.count('3 face(s)') == 2 and out.count('no face found') == 1


class InterruptedCapture(object):
    """A capture of `frames` copies of a picture that sends this process SIGINT when frame `at` is read."""

    def __init__(self, picture, frames, at):
        self.picture, self.frames, self.at, self.read_count = picture, frames, at, 0

    def get(self, prop):
        return 10.0

    def read(self):
        self.read_count += 1
        if self.read_count == self.at:
            os.kill(os.getpid(), signal.SIGINT)
        return self.read_count <= self.frames, self.picture

    def release(self):
        pass


def test_ctrl_c_ends_a_stream_after_the_frame_and_keeps_the_video(predictor, tmp_path):
    handler = signal.getsignal(signal.SIGINT)
    out = str(tmp_path / 'camera.avi')
    frames, tracks, _ = predict.run_stream(InterruptedCapture(compose_faces()[0], 10, at=4), predictor, out, 'camera 0')
    assert (frames, tracks) == (4, 3)  # the frame read when Ctrl-C came is still annotated
    assert signal.getsignal(signal.SIGINT) is handler
    capture = cv2.VideoCapture(out)
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 4


def test_ctrl_c_at_start_up_is_one_line(files, tmp_path):
    out = tmp_path / 'annotated.jpg'
    assert_interrupted(run_interrupted('predict.py', 'import tensorflow', files['faces.jpg'], '--out', out))
    assert not out.exists()


def test_tta_views_average_each_face_over_its_views(demo_checkpoint, predictor, files):
    picture = predict.read_image(files['faces.jpg'])
    boxes, crops = predictor.crops(picture)
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as session:
        averaged = predict.Predictor(session, demo_checkpoint, views=18)(picture)
    expected = predictor.net.predict(np.stack(crops), views=18)
    assert [box for box, _ in averaged] == boxes and len(boxes) == 3
    for i, (_, probabilities) in enumerate(averaged):
        for task in TASKS:
            np.testing.assert_allclose(probabilities[task], expected[task][i], atol=1e-6)
    plain = predictor(picture)
    assert max(np.abs(a[1][t] - p[1][t]).max() for a, p in zip(averaged, plain) for t in TASKS) > 1e-3
    code, out, _ = run_main([files['faces.jpg'], '--checkpoint', demo_checkpoint, '--json', '--tta-views', '18'])
    assert code == 0
    faces = json.loads(out)[0]['faces']
    smile = [f['smile']['probabilities']['smile'] for f in faces]
    np.testing.assert_allclose(smile, [round(float(p[SMILE][1]), 4) for _, p in averaged], atol=1e-4)


# ----------------------------------------------------------------------------- detectors, following, fewer heads

def test_detector_flag_chooses_the_boxes(demo_checkpoint, files, tmp_path):
    picture = predict.read_image(files['faces.jpg'])
    for detector in ('yunet', 'haar'):
        code, out, err = run_main([files['faces.jpg'], '--checkpoint', demo_checkpoint, '--json', '--detector', detector])
        assert code == 0, err
        boxes = [face['box'] for face in json.loads(out)[0]['faces']]
        assert boxes == [list(box) for box in faces.detect_faces(picture, detector)] and len(boxes) == 3
    cameraman = str(tmp_path / 'cameraman.png')  # turned to the side: YuNet finds him, Haar does not
    cv2.imwrite(cameraman, skimage.data.camera())
    code, out, err = run_main([cameraman, '--checkpoint', demo_checkpoint])
    assert code == 0 and out.startswith('%s: 1 face(s)\n' % cameraman), err
    code, out, err = run_main([cameraman, '--checkpoint', demo_checkpoint, '--detector', 'haar'])
    assert code == 0 and out == '%s: no face found\n' % cameraman, err


def test_yunet_gives_the_boxes_and_labels_of_the_haar_detector_where_both_find_the_faces(demo_checkpoint, files):
    outputs = {}
    for detector in ('yunet', 'haar'):
        code, out, err = run_main([files['faces.jpg'], '--checkpoint', demo_checkpoint, '--json', '--detector', detector])
        assert code == 0, err
        outputs[detector] = json.loads(out)[0]['faces']
    assert len(outputs['yunet']) == 3 and outputs['yunet'] == outputs['haar']


@pytest.mark.parametrize('argv, message', [(['--detect-side', '2000'], 'at most 960 for YuNet'),
                                           (['--detect-side', '0'], 'at least 1'),
                                           (['--detect-every', '0'], 'at least 1')])
def test_detection_flags_are_checked(files, capsys, argv, message):
    with pytest.raises(SystemExit) as exit:
        predict.parse_args([files['faces.jpg']] + argv)
    assert exit.value.code == 2 and message in capsys.readouterr().err


def test_video_searches_every_kth_frame_and_keeps_the_tracks(demo_checkpoint, files, tmp_path, monkeypatch):
    full_searches = []
    detect = faces.detect_yunet

    def counted(picture, *args, **kwargs):
        if picture.shape[:2] == CANVAS:
            full_searches.append(1)
        return detect(picture, *args, **kwargs)
    monkeypatch.setattr(faces, 'detect_yunet', counted)
    code, stdout, err = run_main(['--video', files['clip.avi'], '--out', str(tmp_path / 'out.avi'), '--json',
                                  '--checkpoint', demo_checkpoint, '--detect-every', '3'])
    assert code == 0, err
    frames = [json.loads(line) for line in stdout.splitlines()]
    assert len(frames) == 10 and len(full_searches) == 4  # frames 0, 3, 6 and 9
    assert all(len(f['faces']) == 3 for f in frames)
    assert {face['track'] for f in frames for face in f['faces']} == {1, 2, 3}
    first = sorted(face['box'][0] for face in frames[0]['faces'])
    last = sorted(face['box'][0] for face in frames[-1]['faces'])
    assert all(20 <= b - a <= 34 for a, b in zip(first, last))  # the faces drifted 27 px right, followed


def probabilities_of(tasks):
    return {t: np.arange(1, len(CLASS_NAMES[t]) + 1, dtype=np.float32) / sum(range(len(CLASS_NAMES[t]) + 1))
            for t in tasks}


def test_a_model_with_fewer_heads_is_described_by_the_heads_it_has():
    face = predict.describe((10, 20, 30, 40), probabilities_of([EMOTION]))
    assert sorted(face) == ['box', 'emotion'] and face['emotion']['label'] == 'neutral'  # the largest of 7
    line = predict.format_face(face)
    assert line.startswith('box x=10 y=20 w=30 h=40  emotion neutral 0.25 (angry 0.04 ')
    assert 'smile' not in line and 'male' not in line
    both = predict.format_face(predict.describe((10, 20, 30, 40), probabilities_of([SMILE, GENDER])))
    assert both == 'box x=10 y=20 w=30 h=40  smile 0.67  gender male, P(male) 0.67'
    # one label line above the box instead of three
    one = predict.annotate(np.zeros((300, 300, 3), np.uint8), [predict.describe((100, 200, 80, 80), probabilities_of([EMOTION]))])
    three = predict.annotate(np.zeros((300, 300, 3), np.uint8), [predict.describe((100, 200, 80, 80), probabilities_of(TASKS))])
    filled_rows = [np.flatnonzero(np.all(p[:200, 100] == predict.BOX_COLOUR, axis=1)) for p in (one, three)]
    assert len(filled_rows[1]) == 3 * len(filled_rows[0]) > 0


@pytest.mark.slow
def test_json_and_text_of_a_model_with_fewer_heads(demo_dir, files, tmp_path):
    import train
    ckpt_dir = str(tmp_path / 'gender_only')  # a real single-task model (train.py --tasks gender)
    assert train.main(['--data-dir', demo_dir, '--checkpoint-dir', ckpt_dir, '--tasks', 'gender', '--max-steps', '1',
                       '--batch-size', '16', '--quiet']) == 0
    code, out, err = run_main([files['faces.jpg'], '--checkpoint', ckpt_dir, '--json'])
    assert code == 0, err
    faces_found = json.loads(out)[0]['faces']
    assert len(faces_found) == 3 and [sorted(face) for face in faces_found] == [['box', 'gender']] * 3
    code, out, err = run_main([files['faces.jpg'], '--checkpoint', ckpt_dir])
    assert code == 0 and out.count('P(male)') == 3 and 'smile' not in out and 'emotion' not in out


def test_an_output_that_is_an_input_is_refused_before_anything_is_read(files, tmp_path):
    """--out naming the input video or picture (itself, through a link or another path) would overwrite it."""
    clip, picture = tmp_path / 'clip.avi', tmp_path / 'a.jpg'
    shutil.copy(files['clip.avi'], clip)
    shutil.copy(files['faces.jpg'], picture)
    os.symlink(clip, tmp_path / 'link.avi')
    before = {path: path.read_bytes() for path in (clip, picture)}
    no_model = ['--checkpoint', str(tmp_path / 'no_model')]  # refused before the model would be looked for
    for out in (str(clip), str(tmp_path / 'link.avi'), os.path.join(str(tmp_path), '.', 'clip.avi')):
        assert run_main(['--video', str(clip), '--out', out] + no_model) == (
            2, '', 'error: %s: --out would overwrite the input %s; choose another file\n' % (out, clip))
    assert run_main([str(picture), '--out', str(picture)] + no_model)[2].startswith('error: %s: --out' % picture)
    second = tmp_path / 'out_2.jpg'  # two pictures and --out out.jpg write out_1.jpg and out_2.jpg
    shutil.copy(picture, second)
    assert run_main([str(picture), str(second), '--out', str(tmp_path / 'out.jpg')] + no_model)[2] == (
        'error: %s: --out would overwrite the input %s; choose another file\n' % (second, second))
    assert {path: path.read_bytes() for path in (clip, picture)} == before


def test_a_truncated_video_says_how_many_frames_it_read_of_how_many_announced(demo_checkpoint, files, tmp_path):
    clip = tmp_path / 'cut.avi'
    data = open(files['clip.avi'], 'rb').read()
    clip.write_bytes(data[:len(data) // 2])  # the header still announces 10 frames
    code, _, err = run_main(['--video', str(clip), '--out', str(tmp_path / 'annotated.avi'),
                             '--checkpoint', demo_checkpoint])
    read = int(cv2.VideoCapture(str(tmp_path / 'annotated.avi')).get(cv2.CAP_PROP_FRAME_COUNT))
    assert code == 0 and 0 < read < 10
    assert ('%s: read %d of the 10 frames its header announces: the file is damaged or cut short; the annotated video '
            'holds those %d\n' % (clip, read, read)) in err
    code, _, err = run_main(['--video', files['clip.avi'], '--out', str(tmp_path / 'whole.avi'),
                             '--checkpoint', demo_checkpoint])
    assert code == 0 and 'announces' not in err  # a whole file says nothing of the kind


def test_an_output_that_cannot_be_written_says_why_and_leaves_no_file(demo_checkpoint, files, tmp_path, monkeypatch):
    missing = tmp_path / 'no_such_folder'
    for argv, out in (([files['faces.jpg']], missing / 'a.jpg'), (['--video', files['clip.avi']], missing / 'a.avi')):
        assert run_main(argv + ['--out', str(out), '--checkpoint', demo_checkpoint]) == (
            2, '', 'error: %s: cannot write the %s (%s)\n' % (out, 'video' if 'video' in argv[0] else 'picture',
                                                             'its folder does not exist' if 'video' in argv[0] else
                                                             'No such file or directory'))
    assert run_main([files['faces.jpg'], '--out', str(tmp_path / 'a.xyz'), '--checkpoint', demo_checkpoint])[2] == (
        "error: %s: cannot write the picture (no picture format has the extension '.xyz')\n" % (tmp_path / 'a.xyz'))

    def read_only(*args, **kwargs):  # what a read-only mount answers (as root, chmod would not stop the test)
        raise OSError(30, 'Read-only file system')
    monkeypatch.setattr(predict.files.tempfile, 'mkstemp', read_only)
    assert run_main([files['faces.jpg'], '--out', str(tmp_path / 'a.jpg'), '--checkpoint', demo_checkpoint])[2] == (
        'error: %s: cannot write the picture (Read-only file system)\n' % (tmp_path / 'a.jpg'))
    assert os.listdir(tmp_path) == []
