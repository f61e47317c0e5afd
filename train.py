"""Train Multitask BKNet from the command line.

  python train.py --demo                  make the demo data if missing, then train on it (~1 min)
  python train.py --data-dir data --epochs 10 --lr 0.01
  python train.py --max-steps 20          a cheap smoke run
  python train.py --fresh                 ignore (and remove) the checkpoints in --checkpoint-dir
  python train.py --init-from pretrained  a new run that starts from the shipped weights
  python train.py --tasks emotion         a single-task network: the same trunk, one head

Every flag overrides one entry of config.DEFAULTS; the resolved config is saved as
checkpoint_dir/config.json. A run resumes from the newest checkpoint in checkpoint_dir, with the
config saved there (flags given again override it).
"""
import argparse
import os
import signal
import sys

import cli

if __name__ == '__main__':  # oneDNN on before TensorFlow loads: ~2x training throughput here
    cli.start(onednn=True, message='Interrupted before training started; nothing was saved')

import checkpoints
import config
import data_utils
import model
import tf_setup
import training
from config import TASKS
from tf_setup import tf

DEMO_DATA_DIR = os.path.join('data', 'demo')
DEMO_CHECKPOINT_DIR = os.path.join('checkpoints', 'demo')
DEMO_EPOCHS = 4
DEMO_BATCH_SIZE = 64  # more, smaller steps: the demo set is only 4,500 faces


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--demo', action='store_true',
                   help='train on the demo data (generated into %s if missing); defaults to %d epochs of batch %d, '
                        'no augmentation, in %s' % (DEMO_DATA_DIR, DEMO_EPOCHS, DEMO_BATCH_SIZE, DEMO_CHECKPOINT_DIR))
    config.add_flags(p)
    p.add_argument('--fresh', action='store_true', help='start from scratch, removing old checkpoints')
    p.add_argument('--quiet', action='store_true', help='no per-epoch printing or progress bar')
    return p.parse_args(argv)


def config_overrides(args):
    """The config entries the command line sets: the flags given, plus the demo's defaults with --demo."""
    overrides = config.overrides(args)
    if args.demo:
        overrides.setdefault('data_dir', DEMO_DATA_DIR)
        overrides.setdefault('checkpoint_dir', DEMO_CHECKPOINT_DIR)
        overrides.setdefault('epochs', DEMO_EPOCHS)
        overrides.setdefault('batch_size', DEMO_BATCH_SIZE)
        overrides.setdefault('augment', False)  # the demo faces already vary in pose; shifts slowed it 2x
    return overrides


def _run_config(overrides, fresh):
    """The config this command trains with: a resumed run's saved one with the flags given now applied,
    or the defaults with them; DataError for a value out of range or an architecture a resume would change."""
    ckpt_dir = overrides.get('checkpoint_dir', config.DEFAULTS['checkpoint_dir'])
    try:
        if not fresh and os.path.isfile(os.path.join(ckpt_dir, checkpoints.CONFIG_FILE)):
            return config.resume_config(checkpoints.load_config(ckpt_dir), overrides, ckpt_dir)
        return config.resolve_config(**overrides)
    except ValueError as err:
        raise data_utils.DataError(str(err)) from None


def _bfloat16_refusal():
    """Why --bf16 cannot run here, or None. Without AVX-512 oneDNN has no bfloat16 kernels and TensorFlow
    falls back to Eigen's: 0.07x the float32 throughput measured on an AVX2 CPU (bench_train.py --bf16)."""
    flags = tf_setup.cpu_flags()
    if flags is None or 'avx512f' in flags or tf.config.experimental.list_physical_devices('GPU'):
        return None
    return ('--bf16 needs a CPU with AVX-512 and this one has none (TensorFlow would train ~14x slower than in '
            'float32): train without it, or resume a bfloat16 run with --no-bf16')


def main(argv=None):
    args = parse_args(argv)
    try:
        cfg = _run_config(config_overrides(args), args.fresh)
        refusal = cfg['bfloat16'] and _bfloat16_refusal()
        if refusal:
            raise data_utils.DataError(refusal)
        if args.demo and not os.path.exists(data_utils.split_path(cfg['data_dir'], TASKS[0], 'train')):
            import prepare_data
            print('Generating the demo data set in %s' % cfg['data_dir'])
            prepare_data.make_demo(cfg['data_dir'])
        session_config = tf_setup.session_config(cfg['bfloat16'])
        with tf.Graph().as_default() as graph, tf.Session(graph=graph, config=session_config) as session:
            net = model.Multitask_BKNet(session, cfg, verbose=not args.quiet)
            net.train(fresh=args.fresh)
    except (data_utils.DataError, checkpoints.CheckpointError, training.TrainingDiverged) as err:
        return cli.error(err, 1 if isinstance(err, training.TrainingDiverged) else 2)
    # Stopped by a signal after saving: a non-zero exit, so scripts do not take the run for finished.
    return 128 + signal.Signals[net.stopped_by] if net.stopped_by else 0


if __name__ == '__main__':
    sys.exit(main())
