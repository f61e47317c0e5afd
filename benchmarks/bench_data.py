"""How fast data_provider.Dataset.gen() serves batches, and how much memory the train set takes.

  python benchmarks/bench_data.py                       imports ../shared/data/*.npz into a temp folder first
  python benchmarks/bench_data.py --data-dir data       an already prepared data folder
  python benchmarks/bench_data.py --epochs 5 --aug-epochs 1 --batch-size 128

The imports run in child processes so that their memory peak is not counted here. Memory:
  baseline   resident set size after importing numpy and data_provider
  data       Dataset.images + labels + indexes (nbytes)
  rss        resident set size with the Dataset loaded; peak = ru_maxrss (the highest ever)
Targets: >= 2,000 batches/s without augmentation; <= 200 MB resident for the data.
"""
import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project's modules

import data_provider
import data_utils

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ARCHIVES = (('smile', 'genki4k.npz'), ('emotion', 'fer2013.npz'), ('gender', 'gender.npz'))
MB = 1024.0 * 1024.0


def rss_mb():
    """Current resident set size, from /proc (Linux) or psutil; None if neither works."""
    try:
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / MB
    except (OSError, ValueError, IndexError):
        try:
            import psutil
            return psutil.Process().memory_info().rss / MB
        except ImportError:
            return None


def peak_mb():
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MB if sys.platform == 'darwin' else peak / 1024.0  # bytes on macOS, KiB on Linux


def import_shared(shared, data_dir):
    for task, name in ARCHIVES:
        path = os.path.join(shared, name)
        if not os.path.isfile(path):
            sys.exit('error: %s: file not found (give --shared or --data-dir)' % path)
        t0 = time.time()
        imported = subprocess.run([sys.executable, os.path.join(ROOT, 'prepare_data.py'), '--task', task, '--npz', path,
                                   '--data-dir', data_dir], stdout=subprocess.DEVNULL)
        if imported.returncode:  # prepare_data.py has printed its one-line error
            sys.exit('error: %s: prepare_data.py could not import it' % path)
        print('imported %-12s %5.1f s' % (name, time.time() - t0))


def time_epochs(ds, epochs):
    """-> (batches, seconds) of the fastest of `epochs` full gen() epochs."""
    best = None
    for _ in range(epochs):
        t0 = time.perf_counter()
        n = 0
        for _batch in ds.gen():
            n += 1
        dt = time.perf_counter() - t0
        best = (n, dt) if best is None or dt < best[1] else best
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--data-dir', help='prepared data folder (default: import the shared archives into a temp folder)')
    parser.add_argument('--shared', default=os.path.join(ROOT, '..', 'shared', 'data'),
                        help="folder of the .npz archives (default: ../shared/data from the repo's root)")
    parser.add_argument('--batch-size', type=int, default=128, help='samples a batch (default: %(default)s)')
    parser.add_argument('--epochs', type=int, default=3,
                        help='epochs without augmentation, the fastest counts (default: %(default)s)')
    parser.add_argument('--aug-epochs', type=int, default=1, help='epochs with augmentation (default: %(default)s)')
    args = parser.parse_args(argv)

    tmp = None
    data_dir = args.data_dir
    if data_dir is None:
        tmp = data_dir = tempfile.mkdtemp(prefix='bench-data-')
    try:
        if tmp:
            import_shared(args.shared, data_dir)
        base = rss_mb()
        t0 = time.time()
        try:
            ds = data_provider.Dataset('train', batch_size=args.batch_size, data_dir=data_dir, seed=0, verbose=False)
        except data_utils.DataError as err:
            sys.exit('error: %s' % err)
        load_s = time.time() - t0
        rss = rss_mb()
        data = (ds.images.nbytes + ds.labels.nbytes + ds.indexes.nbytes) / MB

        rows = []
        n, dt = time_epochs(ds, args.epochs)
        rows.append(('gen(), no augmentation', n, dt))
        if args.aug_epochs:
            ds.augment = True
            n, dt = time_epochs(ds, args.aug_epochs)
            rows.append(('gen(), augment (pad %d)' % ds.aug_pad, n, dt))
        peak = peak_mb()
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)

    print()
    print('train set: %d samples (%s), batch %d, loaded in %.1f s'
          % (len(ds.labels), ', '.join('%s %d' % kv for kv in
                                       zip(('smile', 'emotion', 'gender'), ds.task_sizes.values())),
             args.batch_size, load_s))
    print('%-26s %8s %9s %11s %12s' % ('', 'batches', 'seconds', 'batches/s', 'samples/s'))
    for name, n, dt in rows:
        print('%-26s %8d %9.2f %11.0f %12.0f' % (name, n, dt, n / dt, n * args.batch_size / dt))
    print()
    print('%-26s %8.1f MB' % ('baseline rss', base))
    print('%-26s %8.1f MB' % ('data arrays (nbytes)', data))
    print('%-26s %8.1f MB  (+%.1f MB over baseline)' % ('rss with Dataset', rss, rss - base))
    print('%-26s %8.1f MB  (+%.1f MB over baseline)' % ('peak rss (ru_maxrss)', peak, peak - base))
    no_aug = rows[0][1] / rows[0][2]
    print()
    print('target >= 2000 batches/s without augmentation: %s (%.0f)' % ('met' if no_aug >= 2000 else 'MISSED', no_aug))
    print('target <= 200 MB resident for the data:        %s (%.1f MB over baseline, peak +%.1f MB)'
          % ('met' if rss - base <= 200 else 'MISSED', rss - base, peak - base))
    return 0


if __name__ == '__main__':
    sys.exit(main())
