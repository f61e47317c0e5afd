"""serve.py under load: requests/s and latency with 1, 4 and 16 clients, against predict.py in-process.

  python benchmarks/bench_serve.py                       20 s per setting (~2 minutes on 2 cores)
  python benchmarks/bench_serve.py --quick               a smoke run: 2 s per setting, 1 and 2 clients

It starts `python serve.py` on a free loopback port (its own process, as a user runs it) and, for
each number of clients, that many threads each POST the same 640x480 one-face JPEG to /analyze
(image/jpeg body, one keep-alive connection each) as fast as the answers come, for --seconds or
--max-requests in all, whichever ends first. Per setting: requests/s, p50 and p99 latency (request
sent to answer read) and errors (any answer but 200 with one face); the server's resident memory
(VmRSS) after its warm-up and after the last setting. Then, in this process, predict.Predictor's p50
end to end (detection + crop + session call) on the same decoded picture (predict.benchmark), the
figure /analyze is compared with. The server is stopped with SIGINT at the end, whatever happens.
Run it on a quiet machine: another busy process skews every time (ratios less so).
"""
import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project's modules

import cv2
import numpy as np

import bench_detect
import checkpoints
import cli
import tf_setup

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START_TIMEOUT = 180  # seconds for serve.py to load TensorFlow and the model
REQUEST_TIMEOUT = 60


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def start_server(checkpoint, port, threads):
    """serve.py in its own process, returned once its /health answers; RuntimeError if it does not in time."""
    command = [sys.executable, os.path.join(ROOT, 'serve.py'), '--port', str(port), '--threads', str(threads)]
    server = subprocess.Popen(command + (['--checkpoint', checkpoint] if checkpoint else []), cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + START_TIMEOUT
    while time.time() < deadline:
        if server.poll() is not None:
            raise RuntimeError('serve.py stopped: %s' % server.stderr.read().strip()[-500:])
        try:
            if request(port, 'GET', '/health')[0] == 200:
                return server
        except OSError:
            time.sleep(0.5)
    stop_server(server)
    raise RuntimeError('serve.py did not answer within %d s' % START_TIMEOUT)


def stop_server(server):
    server.send_signal(signal.SIGINT)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(timeout=30)


def request(port, method, path, body=None, connection=None):
    """-> (status, JSON answer) of one request, on `connection` (kept alive) or a new one."""
    conn = connection or http.client.HTTPConnection('127.0.0.1', port, timeout=REQUEST_TIMEOUT)
    conn.request(method, path, body, {'Content-Type': 'image/jpeg'} if body is not None else {})
    answer = conn.getresponse()
    data = answer.read()
    if connection is None:
        conn.close()
    return answer.status, json.loads(data)


def resident_mb(pid):
    with open('/proc/%d/status' % pid) as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith('VmRSS:'))
    return kb / 1024.0


def load(port, jpeg, clients, seconds, max_requests):
    """`clients` threads posting jpeg until `seconds` or max_requests in all -> (latencies s, errors, wall s)."""
    latencies, errors, lock = [], [], threading.Lock()
    deadline = time.perf_counter() + seconds

    def client():
        conn = http.client.HTTPConnection('127.0.0.1', port, timeout=REQUEST_TIMEOUT)
        while time.perf_counter() < deadline:
            with lock:
                if len(latencies) + len(errors) >= max_requests:
                    break
            t0 = time.perf_counter()
            try:
                status, answer = request(port, 'POST', '/analyze', jpeg, conn)
                ok = status == 200 and len(answer['faces']) == 1
            except (OSError, http.client.HTTPException, ValueError) as err:
                ok, answer = False, repr(err)
                conn.close()
                conn = http.client.HTTPConnection('127.0.0.1', port, timeout=REQUEST_TIMEOUT)
            with lock:
                (latencies if ok else errors).append(time.perf_counter() - t0 if ok else answer)
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + REQUEST_TIMEOUT + 10)
    return latencies, errors, time.perf_counter() - start


def in_process_ms(checkpoint, picture, runs):
    """predict.Predictor's p50 end to end on picture, in this process (as predict.py --benchmark measures)."""
    import predict
    tf = tf_setup.import_tf()
    with tf.Graph().as_default() as graph, tf.Session(graph=graph, config=tf_setup.session_config()) as session:
        predictor = predict.Predictor(session, checkpoint or checkpoints.default_checkpoint())
        return predict.benchmark(predictor, picture, runs)[2]


def run(args):
    picture = bench_detect.one_face_photo()
    jpeg = cv2.imencode('.jpg', picture, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    port = free_port()
    print('load average %s; a %dx%d JPEG of %d bytes, one face; serve.py --threads %d on 127.0.0.1:%d'
          % (_load_average(), picture.shape[1], picture.shape[0], len(jpeg), args.threads, port))
    server = start_server(args.checkpoint, port, args.threads)
    rows = []
    try:
        load(port, jpeg, 1, 60, 5)  # warm-up: TensorFlow's first calls
        before = resident_mb(server.pid)
        for clients in args.clients:
            latencies, errors, wall = load(port, jpeg, clients, args.seconds, args.max_requests)
            ms = 1000 * np.array(latencies or [np.nan])
            rows.append((clients, len(latencies), len(latencies) / wall, np.percentile(ms, 50), np.percentile(ms, 99),
                         len(errors)))
            if errors:
                print('  %d client(s), first error: %s' % (clients, errors[0]))
        after = resident_mb(server.pid)
    finally:
        stop_server(server)
    local_ms = in_process_ms(args.checkpoint, cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR),
                             args.runs)
    report(rows, before, after, local_ms)
    print('load average at the end: %s' % _load_average())


def _load_average():
    return ' '.join('%.2f' % v for v in os.getloadavg())


def report(rows, before, after, local_ms):
    print('| clients | requests | requests/s | p50 ms | p99 ms | p99/p50 | errors |')
    print('|---:|---:|---:|---:|---:|---:|---:|')
    for clients, count, rate, p50, p99, errors in rows:
        print('| %d | %d | %.1f | %.1f | %.1f | %.2f | %d |' % (clients, count, rate, p50, p99, p99 / p50, errors))
    print('server resident memory: %.0f MB after the warm-up, %.0f MB after the run (%+.1f MB)'
          % (before, after, after - before))
    print('predict.py in-process, p50 end to end: %.1f ms (1000 / it = %.1f requests/s)' % (local_ms, 1000 / local_ms))
    one = [r for r in rows if r[0] == 1]
    if one:
        print('/analyze p50 at 1 client / in-process: %.2fx' % (one[0][3] / local_ms))
    four = [r for r in rows if r[0] == 4]
    if four:
        print('4 clients: %.2fx of 1000 / in-process ms' % (four[0][2] / (1000 / local_ms)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--checkpoint', help="serve.py's --checkpoint (default: serve.py's own, pretrained/)")
    parser.add_argument('--clients', type=int, nargs='+', default=[1, 4, 16],
                        help='numbers of concurrent clients, one setting each (default: 1 4 16)')
    parser.add_argument('--threads', type=int, default=2, help="serve.py's --threads (default: 2, its own)")
    parser.add_argument('--seconds', type=float, default=20, help='length of each setting (default: 20)')
    parser.add_argument('--max-requests', type=int, default=5000,
                        help='requests per setting at most (default: 5000)')
    parser.add_argument('--runs', type=int, default=100, help='timed in-process runs (default: 100)')
    parser.add_argument('--quick', action='store_true', help='a smoke run: 2 s per setting, 1 and 2 clients, 10 runs')
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.clients, args.runs = 2, [1, 2], 10
    if min(args.clients) < 1 or args.threads < 1 or args.seconds <= 0 or args.max_requests < 1 or args.runs < 1:
        parser.error('--clients, --threads, --seconds, --max-requests and --runs must be positive')
    try:
        run(args)
    except RuntimeError as err:
        return cli.error(err)
    return 0


if __name__ == '__main__':
    cli.start(onednn=False)  # as predict.py and serve.py, before TensorFlow loads
    sys.exit(main())
