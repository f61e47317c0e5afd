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

import config
from config import TASKS

if __name__ == '__main__':  # training installs its own handler, which saves a checkpoint first
    config.exit_on_interrupt('Interrupted before training started; nothing was saved')
    config.import_tf(onednn=True)  # this command decides, before anything imports TensorFlow: ~2x training throughput here

import data_utils  # noqa: E402
import model  # noqa: E402

DEMO_DATA_DIR = os.path.join('data', 'demo')
DEMO_CHECKPOINT_DIR = os.path.join('checkpoints', 'demo')
DEMO_EPOCHS = 4
DEMO_BATCH_SIZE = 64  # more, smaller steps: the demo set is only 4,500 faces


def parse_args(argv=None):
    d = config.DEFAULTS

    def default(key, shown=None):
        value = d[key] if shown is None else shown
        text = ' '.join('%g' % v for v in value) if isinstance(value, tuple) else str(value)
        return ' (default: %s)' % text.replace('%', '%%')  # argparse %-formats help: a default's own '%' stays literal

    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--demo', action='store_true',
                   help='train on the demo data (generated into %s if missing); defaults to %d epochs of batch %d, '
                        'no augmentation, in %s' % (DEMO_DATA_DIR, DEMO_EPOCHS, DEMO_BATCH_SIZE, DEMO_CHECKPOINT_DIR))
    p.add_argument('--data-dir', help='data folder' + default('data_dir'))
    p.add_argument('--checkpoint-dir', help='checkpoint folder; a run resumes from the newest checkpoint in it'
                                            + default('checkpoint_dir'))
    p.add_argument('--epochs', type=int, help='passes over the weighted mix of the three train sets' + default('epochs'))
    p.add_argument('--batch-size', type=int, help='faces per step, all tasks mixed' + default('batch_size'))
    p.add_argument('--optimizer', choices=('momentum', 'adam'), help='momentum is Nesterov with 0.9' + default('optimizer'))
    p.add_argument('--lr', dest='learning_rate', type=float, help='initial learning rate' + default('learning_rate'))
    p.add_argument('--lr-schedule', choices=('step', 'cosine'),
                   help='step: staircase decay; cosine: to zero over the run' + default('lr_schedule'))
    p.add_argument('--lr-decay-rate', type=float, help='step schedule: multiply the rate by this ...'
                   + default('lr_decay_rate'))
    p.add_argument('--lr-decay-epochs', type=float, help='... every this many epochs' + default('lr_decay_epochs'))
    p.add_argument('--weight-decay', type=float, help='L2 factor on the weights' + default('weight_decay'))
    p.add_argument('--keep-prob', type=float, help="dropout's keep probability in training" + default('keep_prob'))
    p.add_argument('--augment', dest='augment', action='store_true', default=None,
                   help='shift, flip and rotate the training faces' + default('augment', 'on' if d['augment'] else 'off'))
    p.add_argument('--no-augment', dest='augment', action='store_false', help='train on the faces as they are')
    p.add_argument('--aug-pad', type=int, help='largest random shift of a training face, pixels' + default('aug_pad'))
    p.add_argument('--random-erasing', type=float, metavar='P',
                   help='share of training faces with a random rectangle (2 to 25 percent of the face) replaced '
                        'by noise' + default('random_erasing'))
    p.add_argument('--bf16', dest='bfloat16', action='store_true', default=None,
                   help="train convolutions and matmuls in bfloat16 (oneDNN's mixed precision): 2x faster on a "
                        "CPU with AMX, 1.5x faster to 0.6x as fast on AVX-512 BF16 ones without (measure: "
                        "benchmarks/bench_train.py --bf16), refused without AVX-512 (default: float32)")
    p.add_argument('--no-bf16', dest='bfloat16', action='store_false', help='train in float32')
    p.add_argument('--tasks', nargs='+', choices=[config.TASK_NAMES[t] for t in TASKS],
                   help='the heads to train: a single-task model has one' + default('tasks', ' '.join(d['tasks'])))
    p.add_argument('--task-weights', type=float, nargs=3, metavar=('SMILE', 'EMOTION', 'GENDER'),
                   help='copies of each train set per epoch, e.g. 5 1 1 to oversample GENKI-4K' + default('task_weights'))
    p.add_argument('--task-weighting', choices=('fixed', 'uncertainty'),
                   help="how the heads' losses combine: fixed (a plain sum) or uncertainty (weights learned as "
                        "Kendall et al.'s log-variances)" + default('task_weighting'))
    p.add_argument('--init-from', metavar='PATH',
                   help='start a new run from these weights (a checkpoint folder or prefix, a weights.npz or the folder '
                        'holding one, such as pretrained/); ignored when --checkpoint-dir already holds a checkpoint '
                        'to resume (default: random initialisation)')
    p.add_argument('--distill-from', metavar='PATH',
                   help="a teacher model (paths as --init-from): each training face's target mixes its label with "
                        "the teacher's predictions, by --distill-weight (default: none)")
    p.add_argument('--distill-weight', type=float, metavar='W',
                   help="the teacher's share of each target, (1 - W) one-hot + W teacher, at most 0.5"
                        + default('distill_weight'))
    p.add_argument('--seed', type=int, help="seed of each epoch's batch order and augmentation (the validation "
                                            "split has its own, fixed)" + default('seed'))
    p.add_argument('--validation-fraction', type=float,
                   help='share of the smile and gender train sets held out to judge epochs (emotion is judged on '
                        'FER-2013 PublicTest; 0 judges all three on the public test split)' + default('validation_fraction'))
    p.add_argument('--ema-decay', type=float,
                   help='evaluate, keep and export a moving average of the weights with this decay; 0 = off'
                        + default('ema_decay'))
    p.add_argument('--label-smoothing', type=float, help='emotion targets (1-e) one-hot + e/7' + default('label_smoothing'))
    p.add_argument('--gender-balance', type=float,
                   help='weight gender class c by n_c ** -this: 1 = class-balanced, 0 = plain' + default('gender_balance'))
    p.add_argument('--gender-logit-bias', type=float, metavar='B',
                   help='added to the female logit when the model predicts (predict, evaluate, export), not in '
                        'training; the run prints the B of a class-balanced decision' + default('gender_logit_bias'))
    p.add_argument('--keep-checkpoints', type=int,
                   help='how many of the newest epoch checkpoints to keep (best/ is kept apart), e.g. every epoch\'s '
                        'for a later weight average' + default('keep_checkpoints'))
    p.add_argument('--max-steps', type=int, help='stop after this many global steps; for this command only, '
                                                 'never saved in config.json (default: no cap)')
    p.add_argument('--fresh', action='store_true', help='start from scratch, removing old checkpoints')
    p.add_argument('--quiet', action='store_true', help='no per-epoch printing or progress bar')
    return p.parse_args(argv)


def config_overrides(args):
    """The config entries the command line sets: the flags given, plus the demo's defaults with --demo."""
    overrides = {k: v for k, v in vars(args).items() if k in config.DEFAULTS and v is not None}
    if args.demo:
        overrides.setdefault('data_dir', DEMO_DATA_DIR)
        overrides.setdefault('checkpoint_dir', DEMO_CHECKPOINT_DIR)
        overrides.setdefault('epochs', DEMO_EPOCHS)
        overrides.setdefault('batch_size', DEMO_BATCH_SIZE)
        overrides.setdefault('augment', False)  # the demo faces already vary in pose; shifts slowed it 2x
    return overrides


def _shown(value):
    return ' '.join(value) if isinstance(value, list) else value


def _bfloat16_refusal(tf):
    """Why --bf16 cannot run here, or None. Without AVX-512 oneDNN has no bfloat16 kernels and TensorFlow
    falls back to Eigen's: 0.07x the float32 throughput measured on an AVX2 CPU (bench_train.py --bf16)."""
    flags = config.cpu_flags()
    if flags is None or 'avx512f' in flags or tf.config.experimental.list_physical_devices('GPU'):
        return None
    return ('--bf16 needs a CPU with AVX-512 and this one has none (TensorFlow would train ~14x slower than in '
            'float32): train without it, or resume a bfloat16 run with --no-bf16')


def main(argv=None):
    args = parse_args(argv)
    overrides = config_overrides(args)
    # A resumed run keeps the config it was started with; flags given now override it.
    ckpt_dir = overrides.get('checkpoint_dir', config.DEFAULTS['checkpoint_dir'])
    resumed = not args.fresh and os.path.isfile(os.path.join(ckpt_dir, model.CONFIG_FILE))
    try:
        try:
            saved = model.load_config(ckpt_dir) if resumed else None
            cfg = model.resolve_config(saved, **overrides)
        except ValueError as err:  # a flag's value out of range
            raise data_utils.DataError(str(err))
        for key in model.ARCHITECTURE_KEYS if resumed else ():
            if cfg[key] != saved[key]:
                raise data_utils.DataError('%s was trained with %s %s; resuming it cannot change that to %s: '
                                           'use --fresh or another --checkpoint-dir'
                                           % (ckpt_dir, key, _shown(saved[key]), _shown(cfg[key])))
        tf = config.import_tf()
        refusal = cfg['bfloat16'] and _bfloat16_refusal(tf)
        if refusal:
            raise data_utils.DataError(refusal)
        if args.demo and not os.path.exists(data_utils.split_path(cfg['data_dir'], TASKS[0], 'train')):
            import prepare_data
            print('Generating the demo data set in %s' % cfg['data_dir'])
            prepare_data.make_demo(cfg['data_dir'])
        with tf.Graph().as_default() as graph, tf.Session(graph=graph, config=config.session_config(cfg['bfloat16'])) as session:
            net = model.Multitask_BKNet(session, cfg, verbose=not args.quiet)
            net.train(fresh=args.fresh)
    except (data_utils.DataError, model.CheckpointError, model.TrainingDiverged) as err:
        print('error: %s' % err, file=sys.stderr)
        return 1 if isinstance(err, model.TrainingDiverged) else 2
    # Stopped by a signal after saving: a non-zero exit, so scripts do not take the run for finished.
    return 128 + signal.Signals[net.stopped_by] if net.stopped_by else 0


if __name__ == '__main__':
    sys.exit(main())
