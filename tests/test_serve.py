"""serve.py's API through FastAPI's TestClient and a uvicorn server on loopback: /analyze answers what
predict.py --json prints, /live what predict.py --video --json does, bad input costs one 4xx line and
nothing more, and concurrent clients get the answers one client gets. The shipped model, loaded once."""
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest
import skimage.data
from fastapi.testclient import TestClient
from matplotlib import cbook
from starlette.websockets import WebSocketDisconnect

import checkpoints
import predict
import serve
import tf_setup

pytestmark = pytest.mark.slow  # the shipped model is restored
tf = tf_setup.import_tf()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIMIT = 2 * 2 ** 20  # the test server's upload limit
JPEG = {'Content-Type': 'image/jpeg'}


def one_face():
    """A 640x480 picture of one face: the astronaut's, her face ~125 px (as bench_detect.one_face_photo)."""
    return cv2.resize(skimage.data.astronaut()[:384, :, ::-1], (640, 480))


def three_faces():
    """Grace Hopper's face three times, in three sizes, on a 320x700 grey canvas."""
    photo = cv2.imread(cbook.get_sample_data('grace_hopper.jpg', asfileobj=False))[50:440, 100:430]
    canvas = np.full((320, 700, 3), 200, np.uint8)
    for x, width in ((10, 240), (300, 170), (520, 130)):
        copy = cv2.resize(photo, (width, width * photo.shape[0] // photo.shape[1]))
        canvas[10:10 + copy.shape[0], x:x + width] = copy
    return canvas


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    """{name: path} of a one-face JPEG, a three-face PNG, a blank PNG and a 1x1 PNG."""
    folder = tmp_path_factory.mktemp('serve')
    pictures = {'one.jpg': one_face(), 'three.png': three_faces(), 'blank.png': np.full((200, 300, 3), 128, np.uint8),
                'dot.png': np.zeros((1, 1, 3), np.uint8)}
    paths = {}
    for name, picture in pictures.items():
        paths[name] = str(folder / name)
        cv2.imwrite(paths[name], picture)
    return paths


def read(path):
    with open(path, 'rb') as f:
        return f.read()


@pytest.fixture(scope='module')
def analyzer():
    with tf.Graph().as_default() as graph, tf.Session(graph=graph, config=tf_setup.session_config()) as session:
        analyzer = serve.Analyzer(predict.Predictor(session, checkpoints.PRETRAINED_DIR))
        yield analyzer
        analyzer.close()


@pytest.fixture(scope='module')
def client(analyzer):
    with TestClient(serve.create_app(analyzer, LIMIT)) as client:
        yield client


@pytest.fixture(scope='module')
def port(analyzer):
    """A uvicorn server of the same app on a free loopback port, in a thread; its log goes to caplog."""
    import uvicorn
    server = uvicorn.Server(uvicorn.Config(serve.create_app(analyzer, LIMIT), host='127.0.0.1', port=0,
                                           log_config=None, log_level='warning'))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not server.started and time.time() < deadline and thread.is_alive():
        time.sleep(0.05)
    assert server.started, 'uvicorn did not start'
    yield server.servers[0].sockets[0].getsockname()[1]
    server.should_exit = True
    thread.join(30)


def predict_json(capsys, paths, *flags):
    """predict.py --json on paths (in this process) -> {file name: faces}."""
    assert predict.main(list(paths) + ['--checkpoint', checkpoints.PRETRAINED_DIR, '--json'] + list(flags)) == 0
    return {os.path.basename(r['image']): r['faces'] for r in json.loads(capsys.readouterr().out)}


def assert_good_request_succeeds(client, files):
    answer = client.post('/analyze', content=read(files['one.jpg']), headers=JPEG)
    assert answer.status_code == 200 and len(answer.json()['faces']) == 1


# ----------------------------------------------------------------------------- answers

@pytest.mark.parametrize('query, flags', [('', []), ('?tta_views=2&detector=haar&detect_side=480',
                                                      ['--tta-views', '2', '--detector', 'haar', '--detect-side', '480'])])
def test_analyze_answers_what_predict_json_prints(client, files, capsys, query, flags):
    expected = predict_json(capsys, files.values(), *flags)
    assert [len(expected[n]) for n in ('one.jpg', 'three.png', 'blank.png', 'dot.png')] == [1, 3, 0, 0]
    for name, path in files.items():
        kind = 'image/jpeg' if name.endswith('.jpg') else 'image/png'
        upload = client.post('/analyze' + query, files={'file': (name, read(path), kind)})
        body = client.post('/analyze' + query, content=read(path), headers={'Content-Type': kind})
        assert upload.status_code == 200 and body.status_code == 200, (upload.text, body.text)
        assert upload.json()['image'] == name and body.json()['image'] is None
        assert upload.json()['faces'] == expected[name] and body.json()['faces'] == expected[name]
        assert set(upload.json()) == {'image', 'faces', 'server_ms'} and upload.json()['server_ms'] > 0


def test_info_health_and_the_documented_endpoints(client):
    info = client.get('/info').json()
    assert info['checkpoint'] == os.path.join(checkpoints.PRETRAINED_DIR, checkpoints.WEIGHTS_FILE)
    assert info['tasks'] == ['smile', 'emotion', 'gender']
    assert info['classes']['emotion'] == ['angry', 'disgust', 'fear', 'happy', 'sad', 'surprise', 'neutral']
    assert client.get('/health').json() == {'status': 'ok'}
    schema = client.get('/openapi.json').json()
    assert set(schema['paths']) == {'/', '/health', '/info', '/analyze'}
    assert 'WebSocket `/live`' in schema['info']['description']  # OpenAPI has no WebSocket entries
    paths = schema['paths']
    assert set(paths['/analyze']['post']['requestBody']['content']) == {'multipart/form-data', 'image/jpeg',
                                                                       'image/png'}
    docs = client.get('/docs')
    assert docs.status_code == 200 and '/static-offline-docs/swagger-ui-bundle.js' in docs.text
    assert 'cdn' not in docs.text and client.get('/static-offline-docs/swagger-ui-bundle.js').status_code == 200
    page = client.get('/')
    assert page.status_code == 200 and 'static/app.js' in page.text and 'http' not in page.text.replace(
        'http-equiv', '')  # nothing fetched from elsewhere
    assert 'new WebSocket' in client.get('/static/app.js').text


def test_no_cors_unless_asked(analyzer):
    origin = {'Origin': 'http://example.org'}
    with TestClient(serve.create_app(analyzer)) as plain:
        assert 'access-control-allow-origin' not in plain.get('/health', headers=origin).headers
    with TestClient(serve.create_app(analyzer, cors_origins=['http://example.org'])) as allowed:
        assert allowed.get('/health', headers=origin).headers['access-control-allow-origin'] == 'http://example.org'


# ----------------------------------------------------------------------------- bad input

def huge_png_header():
    """The first bytes of a 20000x20000 PNG: its header says the size, the rest is missing."""
    return b'\x89PNG\r\n\x1a\n' + struct.pack('>I', 13) + b'IHDR' + struct.pack('>II', 20000, 20000) + bytes(9)


BAD = {  # what is sent -> (status, the start of the error line)
    'not a picture': (dict(content=b'hello, I am text\n', headers=JPEG), 400,
                      'the request body: not a readable picture'),
    'a truncated JPEG': ('cut', 400, 'cut.jpg: not a readable picture (empty, truncated'),
    'an empty body': (dict(content=b'', headers=JPEG), 400, 'the request body: empty'),
    'a wrong content type': (dict(content=b'{}', headers={'Content-Type': 'application/json'}), 415,
                             'Content-Type application/json: send a picture as multipart/form-data'),
    'no content type': (dict(content=b'\xff\xd8'), 415, 'Content-Type missing'),
    'over the upload limit': (dict(content=bytes(LIMIT + 1), headers=JPEG), 413,
                              'the upload is larger than the 2 MB'),
    'over the pixel limit': (dict(content=huge_png_header(), headers={'Content-Type': 'image/png'}), 413,
                             'the request body: 20000x20000 pixels, more than the 120 megapixels'),
    'a form without the file field': (dict(files={'photo': ('a.jpg', b'\xff\xd8', 'image/jpeg')}), 400,
                                      'multipart/form-data without a "file" field'),
    'a form without a boundary': (dict(content=b'x', headers={'Content-Type': 'multipart/form-data'}), 400,
                                  'multipart/form-data without a boundary'),
    'tta_views=3': ('?tta_views=3', 422, 'tta_views must be 1, 2 or 18, not 3'),
    'detector=dlib': ('?detector=dlib', 422, "detector must be one of yunet, haar, not 'dlib'"),
    'detect_side=0': ('?detect_side=0', 422, 'detect_side must be between 1 and 960, not 0'),
    'detect_side=961': ('?detect_side=961', 422, 'detect_side must be between 1 and 960'),
    'detect_side=big': ('?detect_side=big', 422, 'detect_side: Input should be a valid integer'),
}


@pytest.mark.parametrize('case', sorted(BAD))
def test_bad_input_costs_one_line_and_the_next_request_succeeds(client, files, case):
    sent, status, error = BAD[case]
    jpeg = read(files['one.jpg'])
    if sent == 'cut':
        answer = client.post('/analyze', files={'file': ('cut.jpg', jpeg[:len(jpeg) // 2], 'image/jpeg')})
    elif isinstance(sent, str):  # a query out of bounds, with a good picture
        answer = client.post('/analyze' + sent, content=jpeg, headers=JPEG)
    else:
        answer = client.post('/analyze', **sent)
    assert answer.status_code == status, answer.text
    assert list(answer.json()) == ['error'] and answer.json()['error'].startswith(error), answer.json()
    assert '\n' not in answer.json()['error']
    assert_good_request_succeeds(client, files)


def test_other_methods_and_paths_are_one_line_errors(client):
    assert client.get('/analyze').json() == {'error': 'Method Not Allowed'}
    assert client.get('/nothing').status_code == 404 and client.get('/nothing').json() == {'error': 'Not Found'}


def test_uploads_stay_in_memory(client, files, monkeypatch):
    """A form larger than Starlette's 1 MB spool is parsed without a temporary file."""
    import tempfile

    def refuse(*args, **kwargs):
        raise AssertionError('a temporary file was made')
    for name in ('TemporaryFile', 'NamedTemporaryFile', 'SpooledTemporaryFile', 'mkstemp'):
        monkeypatch.setattr(tempfile, name, refuse)
    padded = read(files['one.jpg']) + bytes(1536 * 1024)  # JPEG decoders ignore what follows the picture
    answer = client.post('/analyze', files={'file': ('padded.jpg', padded, 'image/jpeg')})
    assert answer.status_code == 200 and len(answer.json()['faces']) == 1


def http_exchange(port, head, body_chunks=(), wait=10):
    """Send head and then body_chunks on a raw socket until an answer comes -> (answer bytes, chunks sent)."""
    with socket.create_connection(('127.0.0.1', port), timeout=wait) as s:
        s.sendall(head)
        sent = 0
        s.settimeout(0.05)
        for chunk in body_chunks:
            try:
                if s.recv(1, socket.MSG_PEEK):
                    break
            except socket.timeout:
                pass
            s.sendall(chunk)
            sent += 1
        s.settimeout(wait)
        answer = b''
        while b'\r\n\r\n' not in answer or not answer.rstrip().endswith(b'}'):
            data = s.recv(65536)
            if not data:
                break
            answer += data
    return answer, sent


def test_an_oversized_upload_is_refused_before_it_is_read(port):
    # Content-Length says 20 MB and nothing follows: the answer comes at once, without the body
    answer, _ = http_exchange(port, b'POST /analyze HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n'
                                    b'Content-Length: %d\r\n\r\n' % (10 * LIMIT))
    assert answer.startswith(b'HTTP/1.1 413 ') and b'"error":"the upload is larger than the 2 MB' in answer
    # chunked, no length: refused once 2 MB went by, while the client still had 6 MB to send
    chunk = b'%x\r\n%s\r\n' % (2 ** 16, bytes(2 ** 16))
    answer, sent = http_exchange(port, b'POST /analyze HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n'
                                       b'Transfer-Encoding: chunked\r\n\r\n', [chunk] * (4 * LIMIT // 2 ** 16))
    assert answer.startswith(b'HTTP/1.1 413 ') and sent < 4 * LIMIT // 2 ** 16


# ----------------------------------------------------------------------------- several clients

def test_eight_threads_get_the_answers_one_thread_gets(port, files, caplog):
    import http.client
    names = ['one.jpg', 'three.png', 'blank.png']
    pictures = {name: read(files[name]) for name in names}

    def post(conn, name):
        conn.request('POST', '/analyze', pictures[name], {'Content-Type': 'image/png'})
        answer = conn.getresponse()
        return answer.status, json.loads(answer.read())['faces']

    conn = http.client.HTTPConnection('127.0.0.1', port, timeout=60)
    alone = {name: post(conn, name) for name in names}
    assert [len(alone[n][1]) for n in names] == [1, 3, 0]
    got = [[] for _ in range(8)]

    def client(i):
        conn = http.client.HTTPConnection('127.0.0.1', port, timeout=60)
        for j in range(20):
            name = names[(i + j) % 3]
            got[i].append((name, post(conn, name)))
    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert sum(len(answers) for answers in got) == 160
    for answers in got:
        for name, answer in answers:
            assert answer == alone[name], name
    assert 'Traceback' not in caplog.text


# ----------------------------------------------------------------------------- /live

def test_live_follows_faces_as_predict_video_does(client, files, capsys, tmp_path):
    clip = str(tmp_path / 'clip.avi')
    writer = cv2.VideoWriter(clip, cv2.VideoWriter_fourcc(*'MJPG'), 10, (640, 480))
    for i in range(8):  # the face drifts right by 6 pixels a frame
        writer.write(np.roll(one_face(), 6 * i, axis=1))
    writer.release()
    assert predict.main(['--video', clip, '--out', str(tmp_path / 'out.avi'), '--json',
                         '--checkpoint', checkpoints.PRETRAINED_DIR]) == 0
    expected = [json.loads(line)['faces'] for line in capsys.readouterr().out.splitlines()]
    capture = cv2.VideoCapture(clip)
    frames = [capture.read()[1] for _ in range(8)]
    capture.release()
    with client.websocket_connect('/live') as ws:
        got = []
        for frame in frames:  # PNG: the very pixels predict.py decoded
            ws.send_bytes(cv2.imencode('.png', frame)[1].tobytes())
            got.append(ws.receive_json())
    assert len(expected) == 8 and all(len(faces) == 1 and faces[0]['track'] == 1 for faces in expected)
    assert [answer['faces'] for answer in got] == expected
    assert expected[0] != expected[-1]  # the box moves and the smoothed numbers change


def test_live_refuses_garbage_and_goes_on(client, files):
    with client.websocket_connect('/live') as ws:
        ws.send_bytes(b'garbage')
        assert ws.receive_json() == {'error': 'frame: not a readable picture (empty, truncated or not an image file)'}
        ws.send_bytes(read(files['one.jpg']))
        assert len(ws.receive_json()['faces']) == 1
        ws.send_text('hello')
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 1003
    with client.websocket_connect('/live?tta_views=5') as ws:
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 1008 and closed.value.reason == 'tta_views must be 1, 2 or 18, not 5'
    assert_good_request_succeeds(client, files)


def test_a_client_that_leaves_mid_frame_costs_nothing(port, files, caplog):
    from websockets.sync.client import connect
    for _ in range(3):
        with connect('ws://127.0.0.1:%d/live' % port, open_timeout=30) as ws:
            ws.send(read(files['one.jpg']))  # and gone before the answer
    with connect('ws://127.0.0.1:%d/live' % port, open_timeout=30) as ws:
        ws.send(read(files['one.jpg']))
        assert len(json.loads(ws.recv(timeout=60))['faces']) == 1
    time.sleep(0.5)  # the abandoned frames' answers have been tried
    assert 'Traceback' not in caplog.text and 'Exception' not in caplog.text, caplog.text


# ----------------------------------------------------------------------------- the command

def test_a_public_host_is_announced_before_serving(monkeypatch, capsys):
    import uvicorn
    calls = []
    monkeypatch.setattr(uvicorn, 'run', lambda app, **kwargs: calls.append(kwargs))
    assert serve.main(['--host', '0.0.0.0', '--port', '8123', '--max-upload-mb', '1']) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == '--host 0.0.0.0: the model is now reachable from the network, not only from this machine'
    weights = os.path.join(checkpoints.PRETRAINED_DIR, checkpoints.WEIGHTS_FILE)
    assert lines[1] == 'serving %s at http://0.0.0.0:8123/ (Ctrl-C stops)' % weights
    assert calls[0]['host'] == '0.0.0.0' and calls[0]['port'] == 8123 and calls[0]['ws_max_size'] == 2 ** 20


def test_ctrl_c_stops_the_server_in_one_line(files):
    import http.client
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        free = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, 'serve.py', '--port', str(free)], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180  # TensorFlow and the model load first
        while server.poll() is None and time.time() < deadline:
            try:
                conn = http.client.HTTPConnection('127.0.0.1', free, timeout=60)
                conn.request('POST', '/analyze', read(files['one.jpg']), JPEG)
                assert len(json.loads(conn.getresponse().read())['faces']) == 1
                break
            except ConnectionRefusedError:
                time.sleep(0.2)
        server.send_signal(signal.SIGINT)
        out, err = server.communicate(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate(timeout=30)
    assert out.startswith('serving ') and 'http://127.0.0.1:%d/' % free in out
    assert server.returncode == 130 and err.strip().splitlines()[-1] == 'stopped' and 'Traceback' not in err, err
