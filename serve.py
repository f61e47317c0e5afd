"""The model as a web service: a REST API, and a page that shows it live on the browser's camera.

  python serve.py                                 the page at http://127.0.0.1:8000/, the shipped model
  python serve.py --checkpoint checkpoints/ --port 8080
  python serve.py --checkpoint exported/bknet_int8.tflite   LiteRT runs the network (export.py --tflite, --engine)
  curl -F file=@photo.jpg http://127.0.0.1:8000/analyze          the JSON `predict.py photo.jpg --json` prints
  curl --data-binary @photo.jpg -H 'Content-Type: image/jpeg' 'http://127.0.0.1:8000/analyze?tta_views=2'

Endpoints (/docs lists them, Swagger UI served from fastapi-offline's files: it works offline too):
  GET  /           the page (web/index.html and web/app.js, nothing fetched from elsewhere): a photo, or the
                   camera; each face's box and labels drawn over it and written out as text
  POST /analyze    one picture (multipart field 'file', or an image/* body) -> {'image', 'faces', 'server_ms'}:
                   the image's name (the upload's file name; null for a bare body), its faces exactly as
                   predict.py --json describes them, the server's time. Query: detector, detect_side, tta_views
  WS   /live       binary JPEG or PNG frames in, one JSON answer out for each ({'faces', 'server_ms'}, or
                   {'error'}): the faces are followed and their labels smoothed per connection, as
                   predict.py --video does (tracking.FaceTracker). Query: the same as /analyze's
  GET  /health, /info   liveness; the model's tasks, classes and where it was loaded from

The model is loaded once (--checkpoint: predict.py's rule) and answers every request on --threads
threads of its own (INFERENCE_THREADS, the cores: more only wait, and each thread keeps its own
detectors), one picture's detection beside another's session call, which a lock keeps to one at a
time (benchmarks/bench_serve.py compared this with no lock and with the web server's 40 threads;
see docs/speed.md). Bad input costs one 4xx answer {"error": "<one line>"}, never a 500: a body
that is not a picture, a truncated one, an empty one, another content type, one over
--max-upload-mb (refused from its Content-Length, or as soon as it streams past the limit) or over
predict.py's MAX_PIXELS (from its header). Nothing is written to disk: uploads are read into memory. Binds 127.0.0.1 unless --host
says otherwise; no CORS unless --cors-origin names an origin. Ctrl-C stops it (the requests under
way get SHUTDOWN_SECONDS to finish).

Public names:
  MAX_UPLOAD_MB, DETECT_SIDE_MAX, INFERENCE_THREADS, SHUTDOWN_SECONDS, WEB_DIR
                                  the defaults and limits above; where the page is
  BadInput(status, message)       a request refused with that HTTP status and its one-line error
  Analyzer(predictor, threads)    the model for every request: .analyze(data, name, options) -> /analyze's
                                  JSON, .frame(data, tracker, options) -> /live's, await .run(method, *args)
                                  runs one on its threads; .info() -> /info's; .close()
  check_options(detector, detect_side, tta_views) -> predictor options; BadInput when out of bounds
  decode_picture(data, name)      a picture's bytes -> BGR uint8; BadInput (400 unreadable, 413 over MAX_PIXELS)
  content_kind(content_type)      'multipart/form-data' or 'image/...'; BadInput (415) for other types
  picture_from_body(body, content_type) -> (name, bytes) of an /analyze request
  create_app(analyzer, max_upload_bytes, cors_origins=()) -> the FastAPI app
"""
import asyncio
import concurrent.futures
import copy
import functools
import io
import os
import sys
import threading
import time

import cli

if __name__ == '__main__':
    cli.start(onednn=False, message='stopped')  # as predict.py: oneDNN off for batch-1 calls

import predict  # first: it sets OpenCV's pixel limit (MAX_PIXELS), which OpenCV reads when it loads

# isort: split
import numpy as np

import checkpoints
import faces
import litert_model
import tracking
from config import CLASS_NAMES, TASK_NAMES
from data_utils import DataError

MAX_UPLOAD_MB = 20  # a 20 MB JPEG is a large phone photo; MAX_PIXELS still applies below it
DETECT_SIDE_MAX = faces.YUNET_MAX_SIDE  # detect_side for either detector: larger only costs time
WEB_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'web')
INFERENCE_THREADS = 2  # = the cores measured on: more threads only wait, and each keeps its own detectors
SHUTDOWN_SECONDS = 5  # Ctrl-C waits this long at most for the requests under way
_LOCAL_HOSTS = ('127.0.0.1', 'localhost', '::1')
_PICTURE_TYPES = 'multipart/form-data (field "file") or an image/jpeg or image/png body'


class BadInput(Exception):
    """A request refused: HTTP status and a one-line message."""

    def __init__(self, status, message):
        super(BadInput, self).__init__(message)
        self.status, self.message = status, message


def check_options(detector=faces.DEFAULT_DETECTOR, detect_side=None, tta_views=1):
    """A request's query -> {'detector', 'detect_side', 'views'} for a Predictor; BadInput (422) out of bounds."""
    if detector not in faces.DETECTORS:
        raise BadInput(422, 'detector must be one of %s, not %r' % (', '.join(faces.DETECTORS), detector))
    if detect_side is not None and not 1 <= detect_side <= DETECT_SIDE_MAX:
        raise BadInput(422, 'detect_side must be between 1 and %d, not %d' % (DETECT_SIDE_MAX, detect_side))
    if tta_views not in (1, 2, 18):
        raise BadInput(422, 'tta_views must be 1, 2 or 18, not %d' % tta_views)
    return {'detector': detector, 'detect_side': detect_side, 'views': tta_views}


def decode_picture(data, name):
    """A picture's bytes -> BGR uint8; BadInput: 400 when empty or unreadable, 413 over MAX_PIXELS (by its header)."""
    if not data:
        raise BadInput(400, '%s: empty, no picture in it' % name)
    try:
        predict.check_size(predict.header_size(io.BytesIO(data)), name)
    except DataError as err:
        raise BadInput(413, str(err)) from None
    try:
        return predict.decode_image(np.frombuffer(data, np.uint8), name)
    except DataError as err:
        raise BadInput(400, str(err)) from None


class Analyzer(object):
    """The model that answers every request: one Predictor, run on `threads` threads of its own, its
    session call behind a lock. await analyzer.run(method, *args) runs analyze or frame on them."""

    def __init__(self, predictor, threads=INFERENCE_THREADS):
        self.predictor = predictor
        self._net = _LockedNet(predictor.net)
        self._pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix='analyze')

    async def run(self, method, *args):
        return await asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(method, *args))

    def close(self):
        self._pool.shutdown(wait=True)

    def _predictor(self, options):
        """The predictor with this request's options; it shares the (locked) network, nothing else."""
        variant = copy.copy(self.predictor)
        variant.net, variant.views = self._net, options['views']
        variant.detector, variant.detect_side = options['detector'], options['detect_side']
        return variant

    def analyze(self, data, name, options):
        """A picture's bytes -> {'image': name, 'faces': as predict.py --json, 'server_ms'}."""
        start = time.perf_counter()
        picture = decode_picture(data, name or 'the request body')
        described = [predict.describe(box, probs) for box, probs in self._predictor(options)(picture)]
        return {'image': name, 'faces': described, 'server_ms': _ms_since(start)}

    def frame(self, data, tracker, options):
        """One live frame's bytes -> {'faces' (each with its 'track'), 'server_ms'}; tracker: the connection's."""
        start = time.perf_counter()
        frame = decode_picture(data, 'frame')
        found = tracker.update(self._predictor(options)(frame, tracker.find(frame)))
        return {'faces': [predict.describe(*face) for face in found], 'server_ms': _ms_since(start)}

    def info(self):
        tasks = self.predictor.net.tasks
        return {'checkpoint': self.predictor.checkpoint, 'tasks': [TASK_NAMES[t] for t in tasks],
                'classes': {TASK_NAMES[t]: list(CLASS_NAMES[t]) for t in tasks},
                'detectors': list(faces.DETECTORS), 'detect_side_max': DETECT_SIDE_MAX, 'tta_views': [1, 2, 18],
                'max_pixels': predict.MAX_PIXELS}


class _LockedNet(object):
    """A network whose predict() runs one call at a time."""

    def __init__(self, net):
        self.net, self.tasks, self._lock = net, net.tasks, threading.Lock()

    def predict(self, images, views=1):
        with self._lock:
            return self.net.predict(images, views=views)


def _ms_since(start):
    return round(1000 * (time.perf_counter() - start), 2)


# ----------------------------------------------------------------------------- requests

def content_kind(content_type):
    """'multipart/form-data' or 'image/...' from a Content-Type header; BadInput (415) for any other."""
    kind = content_type.split(';')[0].strip().lower()
    if kind == 'multipart/form-data' or kind.startswith('image/'):
        return kind
    raise BadInput(415, 'Content-Type %s: send a picture as %s' % (kind or 'missing', _PICTURE_TYPES))


def picture_from_body(body, content_type):
    """An /analyze request's body -> (the picture's name or None, its bytes)."""
    if content_kind(content_type) == 'multipart/form-data':
        return _multipart_file(body, content_type)
    return None, body


def _multipart_file(body, content_type):
    """The 'file' part of a multipart/form-data body -> (its file name or 'file', its bytes), parsed in memory."""
    from python_multipart import multipart
    boundary = multipart.parse_options_header(content_type)[1].get(b'boundary')
    if not boundary:
        raise BadInput(400, 'multipart/form-data without a boundary')
    parts, field = [], []
    callbacks = {'on_part_begin': lambda: parts.append(({}, bytearray())),
                 'on_header_field': lambda d, s, e: field.append(d[s:e]),
                 'on_header_value': lambda d, s, e: parts[-1][0].setdefault(b''.join(field).lower(),
                                                                              bytearray()).extend(d[s:e]),
                 'on_header_end': field.clear,
                 'on_part_data': lambda d, s, e: parts[-1][1].extend(d[s:e])}
    try:
        parser = multipart.MultipartParser(boundary, callbacks)
        parser.write(body)
        parser.finalize()
    except multipart.MultipartParseError as err:
        raise BadInput(400, 'malformed multipart/form-data body (%s)' % str(err).splitlines()[0]) from None
    for headers, data in parts:
        params = multipart.parse_options_header(bytes(headers.get(b'content-disposition', b'')))[1]
        if params.get(b'name') == b'file':
            return (params.get(b'filename') or b'file').decode('utf-8', 'replace'), bytes(data)
    raise BadInput(400, 'multipart/form-data without a "file" field (the picture)')


async def _read_body(request, limit):
    """The request's body, refused (413) from its Content-Length or as soon as it streams past limit bytes."""
    length = request.headers.get('content-length', '')
    too_large = BadInput(413, 'the upload is larger than the %.0f MB a picture may have' % (limit / 2 ** 20))
    if length.isdigit() and int(length) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise too_large
    return bytes(body)


# ----------------------------------------------------------------------------- the app

def create_app(analyzer, max_upload_bytes=MAX_UPLOAD_MB * 2 ** 20, cors_origins=()):
    """The FastAPI app serving analyzer: /, /analyze, /live, /health, /info (and FastAPI's /docs)."""
    from fastapi import Query, Request, WebSocket
    from fastapi.responses import FileResponse
    from fastapi.staticfiles import StaticFiles
    from fastapi_offline import FastAPIOffline

    app = FastAPIOffline(title='Multitask BKNet', description=_DESCRIPTION)  # /docs from its own files, no CDN
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=['GET', 'POST'])
    app.mount('/static', StaticFiles(directory=WEB_DIR), name='static')
    _add_error_handlers(app)

    @app.get('/', response_class=FileResponse)
    def page():
        """The page: a photo, or the camera live, each face's box and labels drawn over it."""
        return FileResponse(os.path.join(WEB_DIR, 'index.html'))

    @app.get('/health')
    def health():
        """{"status": "ok"} while the server runs."""
        return {'status': 'ok'}

    @app.get('/info')
    def info():
        """The model's tasks and classes, where it was loaded from, and the limits of /analyze's query."""
        return analyzer.info()

    @app.post('/analyze', openapi_extra=_ANALYZE_BODY)
    async def analyze(request: Request, detector: str = Query(faces.DEFAULT_DETECTOR),
                      detect_side: int = Query(None), tta_views: int = Query(1)):
        """The faces of one picture, as predict.py --json describes them."""
        options = check_options(detector, detect_side, tta_views)
        content_type = request.headers.get('content-type', '')
        content_kind(content_type)  # 415 before the body is read
        name, data = picture_from_body(await _read_body(request, max_upload_bytes), content_type)
        return await analyzer.run(analyzer.analyze, data, name, options)

    @app.websocket('/live')
    async def live(websocket: WebSocket, detector: str = Query(faces.DEFAULT_DETECTOR),
                   detect_side: int = Query(None), tta_views: int = Query(1)):
        await _serve_live(websocket, analyzer, (detector, detect_side, tta_views))

    return app


_DESCRIPTION = ('Smile, emotion and gender of every face in a picture. Besides the endpoints below, the WebSocket '
                '`/live` takes camera frames (binary JPEG or PNG messages, the query of /analyze) and answers each '
                'with one JSON message: `{"faces": [...], "server_ms": ...}` with each face\'s track id, its '
                'labels smoothed over its last frames, or `{"error": "..."}`.')
_ANALYZE_BODY = {'requestBody': {'required': True, 'content': {
    'multipart/form-data': {'schema': {'type': 'object', 'required': ['file'],
                                       'properties': {'file': {'type': 'string', 'format': 'binary'}}}},
    'image/jpeg': {'schema': {'type': 'string', 'format': 'binary'}},
    'image/png': {'schema': {'type': 'string', 'format': 'binary'}}}}}


def _add_error_handlers(app):
    """BadInput, FastAPI's own query checks and its 404/405 -> {"error": "<one line>"} with the 4xx status."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    @app.exception_handler(BadInput)
    async def refused(request, err):
        return JSONResponse({'error': err.message}, status_code=err.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, err):
        first = err.errors()[0]
        where = '.'.join(str(part) for part in first.get('loc', ())[1:]) or 'request'
        return JSONResponse({'error': '%s: %s' % (where, first.get('msg', 'invalid'))}, status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(request, err):
        return JSONResponse({'error': str(err.detail)}, status_code=err.status_code, headers=err.headers)


async def _serve_live(websocket, analyzer, query):
    """/live: each binary frame answered in turn; a text message or bad options close the socket (1003, 1008)."""
    from starlette.websockets import WebSocketDisconnect
    await websocket.accept()
    try:
        options = check_options(*query)
    except BadInput as err:
        return await websocket.close(1008, err.message)
    tracker = tracking.FaceTracker(options['detector'], max_side=options['detect_side'])
    try:
        while True:
            message = await websocket.receive()
            if message['type'] == 'websocket.disconnect':
                return
            if message.get('bytes') is None:
                return await websocket.close(1003, 'send each frame as a binary JPEG or PNG message')
            try:
                answer = await analyzer.run(analyzer.frame, message['bytes'], tracker, options)
            except BadInput as err:
                answer = {'error': err.message}
            await websocket.send_json(answer)
    except WebSocketDisconnect:
        return  # the page went away while its frame was analysed


# ----------------------------------------------------------------------------- command line

def parse_args(argv=None):
    p = cli.docstring_parser(__doc__, 1)
    cli.add_checkpoint_argument(p)
    p.add_argument('--engine', choices=litert_model.ENGINES,
                   help="as predict.py's: tf restores a checkpoint in a TensorFlow session, litert runs a .tflite file "
                        'of export.py --tflite (default: litert for a .tflite --checkpoint)')
    p.add_argument('--host', default='127.0.0.1',
                   help='address to listen on; 0.0.0.0 makes the model reachable from the network (default: %(default)s)')
    p.add_argument('--port', type=int, default=8000, help='port to listen on (default: %(default)s)')
    p.add_argument('--threads', type=int, default=INFERENCE_THREADS,
                   help='requests analyzed at once; the others wait their turn (default: %(default)s)')
    p.add_argument('--max-upload-mb', type=float, default=MAX_UPLOAD_MB,
                   help='largest picture or frame accepted, in MB (default: %(default)s)')
    p.add_argument('--cors-origin', action='append', default=[], metavar='ORIGIN',
                   help='let pages from this origin (e.g. http://localhost:3000) call the API; repeat for several '
                        '(default: none)')
    args = p.parse_args(argv)
    if not 0 <= args.port <= 65535:
        p.error('--port must be between 0 and 65535')
    if args.threads < 1:
        p.error('--threads must be at least 1')
    if args.max_upload_mb <= 0:
        p.error('--max-upload-mb must be positive')
    return args


def main(argv=None):
    args = parse_args(argv)
    import uvicorn
    limit = int(args.max_upload_mb * 2 ** 20)
    try:
        with litert_model.session_for(args.checkpoint, args.engine) as session:  # none for LiteRT
            analyzer = Analyzer(predict.Predictor(session, args.checkpoint, engine=args.engine), args.threads)
            app = create_app(analyzer, limit, args.cors_origin)
            if args.host not in _LOCAL_HOSTS:
                print('--host %s: the model is now reachable from the network, not only from this machine'
                      % args.host)
            host = '[%s]' % args.host if ':' in args.host else args.host
            print('serving %s at http://%s:%d/ (Ctrl-C stops)' % (analyzer.predictor.checkpoint, host, args.port),
                  flush=True)
            try:
                uvicorn.run(app, host=args.host, port=args.port, log_level='warning', ws_max_size=limit,
                            timeout_graceful_shutdown=SHUTDOWN_SECONDS)
            finally:
                analyzer.close()
    except (DataError, checkpoints.CheckpointError) as err:
        return cli.error(err)
    return 0


if __name__ == '__main__':
    sys.exit(main())
