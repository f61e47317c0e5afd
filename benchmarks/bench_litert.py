"""LiteRT against the TensorFlow session: the network alone on one face and on batches of 256 faces.

  python benchmarks/bench_litert.py --tflite-dir exported          the .tflite files export.py --tflite wrote there
  python benchmarks/bench_litert.py --tflite-dir exported --export --data-dir data/real   export the missing ones first
  python benchmarks/bench_litert.py --tflite-dir exported --quick  a few rounds: checks that it runs

Times the predict() call that predict.py and evaluate.py make (the network alone: no detection, no
crop) on the same uint8 faces (random pixels: the time does not depend on them), for --checkpoint
restored in a TensorFlow session (--onednn on, evaluate.py's setting, is its faster one at batch 256;
predict.py turns it off, and with it off the one-face call is faster here when batch sizes alternate)
and for each bknet_{float32,float16,int8}.tflite in --tflite-dir run by LiteRT (XNNPACK, every
core). Then predict.py end to end with the session and with each .tflite file: on bench_detect.py's
640x480 photo of one face (YuNet detection, crop and the network: predict.benchmark), and on its
640x480 MJPG clip of three faces panning, read to written at the default settings (frames/s). The
engines take turns round by round, so a change of load hits them alike; each figure is
the median over --rounds rounds. The load average is printed before and after: the figures are only
comparable between runs on a quiet machine. The CPU time a face (process time over the batch of
256, every thread of the process) is less sensitive to other processes than the wall time.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project's modules

import numpy as np

import checkpoints
import cli
import export
import litert_model
import tf_setup
from config import IMAGE_SIZE

BATCH = 256


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    cli.add_checkpoint_argument(p)
    p.add_argument('--tflite-dir', default='exported', help='the folder of the .tflite files (default: exported)')
    p.add_argument('--export', action='store_true', help='first write the .tflite files missing from --tflite-dir')
    p.add_argument('--data-dir', help='with --export: the data whose validation faces calibrate int8 (default: '
                                      "the checkpoint config's data_dir)")
    p.add_argument('--rounds', type=int, default=20, help='rounds of every engine in turn (default: 20)')
    p.add_argument('--runs', type=int, default=50, help='one-face calls of each engine per round (default: 50)')
    p.add_argument('--photo-runs', type=int, default=10,
                   help='end-to-end predictions of the photo per engine and round (default: 10)')
    p.add_argument('--video-frames', type=int, default=60, help='frames of the clip (default: 60)')
    p.add_argument('--onednn', choices=('on', 'off'), default='on',
                   help="the session's oneDNN: on as evaluate.py has it, off as predict.py (default: on)")
    p.add_argument('--quick', action='store_true', help='2 rounds of 5 calls: checks that it runs')
    return p.parse_args(argv)


def load_average():
    return ' '.join('%.2f' % v for v in os.getloadavg())


def tflite_files(args):
    """{precision: path} of the .tflite files in --tflite-dir (with --export, after writing the missing ones)."""
    found = {}
    for precision in export.TFLITE_PRECISIONS:
        path = os.path.join(args.tflite_dir, export.TFLITE_FILE % precision)
        if args.export and not os.path.exists(path):
            export.export_tflite(args.checkpoint, args.tflite_dir, [precision], data_dir=args.data_dir)
        if os.path.exists(path):
            found[precision] = path
        else:
            print('%s: not found, skipped (export.py --tflite %s --out %s, or --export)'
                  % (path, precision, args.tflite_dir))
    return found


def time_round(net, faces, runs, timings):
    """One round of one engine: `runs` one-face calls, then one call on the whole batch."""
    for i in range(runs):
        start = time.perf_counter()
        net.predict(faces[i % len(faces)][None])
        timings['one'].append(time.perf_counter() - start)
    start, cpu = time.perf_counter(), time.process_time()
    net.predict(faces, batch_size=BATCH)
    timings['batch'].append(len(faces) / (time.perf_counter() - start))
    timings['cpu'].append((time.process_time() - cpu) / len(faces))


def main(argv=None):
    args = parse_args(argv)
    if args.quick:
        args.rounds, args.runs, args.photo_runs, args.video_frames = 2, 5, 2, 10
    cli.start(onednn=args.onednn == 'on')
    tf = tf_setup.import_tf()
    files = tflite_files(args)
    faces = np.random.RandomState(0).randint(0, 256, (BATCH, IMAGE_SIZE, IMAGE_SIZE)).astype(np.uint8)
    with tf.Graph().as_default() as graph, tf.Session(graph=graph, config=tf_setup.session_config()) as session:
        session_net, path = litert_model.load_model(session, args.checkpoint, 'tf')
        nets = {'TF session': session_net}
        nets.update(('LiteRT %s' % p, litert_model.LiteRTModel(f)) for p, f in files.items())
        sizes = {'TF session': os.path.getsize(checkpoints.find_weights(path))}
        sizes.update(('LiteRT %s' % p, os.path.getsize(f)) for p, f in files.items())
        for net in nets.values():  # warm up: the first calls of each batch size set things up
            net.predict(faces[:1])
            net.predict(faces)
        print('load average before: %s (%d cores)' % (load_average(), os.cpu_count()))
        timings = {name: {'one': [], 'batch': [], 'cpu': []} for name in nets}
        for _ in range(args.rounds):
            for name, net in nets.items():
                time_round(net, faces, args.runs, timings[name])
    photo, video = end_to_end(tf, args, files)
    print('load average after:  %s' % load_average())
    base = statistics.median(timings['TF session']['batch'])
    print('%s, %d rounds, the session with oneDNN %s\n' % (path, args.rounds, args.onednn))
    print('| engine | file MB | 1 face, p50 ms | %d faces: faces/s | vs session | CPU ms a face | photo, p50 ms '
          '| video, frames/s |' % BATCH)
    print('|---|---:|---:|---:|---:|---:|---:|---:|')
    for name in nets:
        rate = statistics.median(timings[name]['batch'])
        print('| %s | %.2f | %.2f | %.0f | %.2fx | %.2f | %.1f | %.1f |' % (
            name, sizes[name] / 1e6, 1000 * statistics.median(timings[name]['one']), rate, rate / base,
            1000 * statistics.median(timings[name]['cpu']), statistics.median(photo[name]),
            statistics.median(video[name])))
    return 0


def end_to_end(tf, args, files):
    """({engine: [p50 ms of the photo's detection + crop + network]}, {engine: [the clip's frames/s]}), one
    figure per round."""
    import bench_detect  # its 640x480 photo of one face (scikit-image's astronaut) and its clip
    import predict
    picture = bench_detect.one_face_photo()
    with tempfile.TemporaryDirectory(prefix='bench-litert-') as folder, tf.Graph().as_default() as graph, \
            tf.Session(graph=graph, config=tf_setup.session_config()) as session:
        clip, out = os.path.join(folder, 'clip.avi'), os.path.join(folder, 'out.avi')
        bench_detect.panning_clip(clip, args.video_frames)
        predictors = {'TF session': predict.Predictor(session, args.checkpoint, engine='tf')}
        predictors.update(('LiteRT %s' % p, predict.Predictor(None, f)) for p, f in files.items())
        photo, video = {name: [] for name in predictors}, {name: [] for name in predictors}
        for _ in range(args.rounds):
            for name, predictor in predictors.items():
                photo[name].append(predict.benchmark(predictor, picture, args.photo_runs)[2])
                frames, _, seconds = predict.run_stream(predict.open_video(clip), predictor, out, clip)
                video[name].append(frames / seconds)
    return photo, video


if __name__ == '__main__':
    sys.exit(main())
