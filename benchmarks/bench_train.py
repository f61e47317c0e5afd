"""Training throughput of Multitask BKNet: our tf.compat.v1 graph vs the same network in Keras 3.

  python benchmarks/bench_train.py                      5 windows x 20 steps of each, batch 128
  python benchmarks/bench_train.py --quick              1 window x 3 steps: checks that it runs
  python benchmarks/bench_train.py --windows 7 --steps 30 --batch-size 128
  python benchmarks/bench_train.py --no-onednn          TF_ENABLE_ONEDNN_OPTS=0 (unless already set)
  python benchmarks/bench_train.py --bf16                also ours in bfloat16 (oneDNN's mixed precision)

What it measures, all in one process, with the same TensorFlow threading:
  ours     model.Multitask_BKNet's train_op, one session.run per step, fed numpy batches the way
           train.py feeds them (mixed tasks, one-hot labels 7 wide, indexes in {1,2,3}, random
           images; phase_train True, keep_prob 0.5) and fetching what train.py fetches.
  keras    the same network rebuilt from Keras 3 layers (it lives only in this file), compiled with
           SGD(momentum 0.9, Nesterov) and trained with model.fit on the same kind of data, with a
           masked multi-task loss: three outputs, each with a sample_weight mask of its own task.
  matmul   a float32 2048x2048 @ 2048x2048 matmul run in our session: the attainable GFLOP/s.
  bf16     (--bf16) ours again in a session with oneDNN's bfloat16 rewrite (train.py --bf16).
The three (four) are interleaved (ours, keras, matmul; ours, keras, matmul; ...) after a warm-up, so a
change of machine load hits all of them alike; each reports the median over the windows.

FLOPs per image of one training step (forward + backward), counted analytically:
  MACs     = sum over convolutions of H_out * W_out * 3 * 3 * C_in * C_out
           + sum over dense layers of n_in * n_out                       (batch norm, ReLU,
  forward  = 2 * MACs                                                     pooling, dropout, the
  training = 3 * forward: the backward pass computes, per layer, the      loss and the update
             gradient of the input and of the weights, each as costly     are elementwise and
             as the forward product                                       not counted)
The first convolution needs no input gradient, so this overcounts by 0.16%. The count is checked
against the Conv2D / MatMul ops of the built graph. ours GFLOP/s = images/s * GFLOP per image.

Targets (the issue): ours >= 1.2x Keras fit, and >= 70% of the matmul rate.
Run it on a quiet machine; another busy process skews every number (the ratios less so).
"""
import argparse
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project's modules

import numpy as np

import config
import tf_setup
from config import IMAGE_SIZE, LABEL_WIDTH, NUM_CLASSES, TASKS

MATMUL_N = 2048
LEARNING_RATE = 0.01
POOL_BATCHES = 4  # distinct random batches, fed in turn


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--windows', type=int, default=5, help='timed windows of each (default: 5)')
    p.add_argument('--steps', type=int, default=20, help='training steps per window (default: 20)')
    p.add_argument('--batch-size', type=int, default=config.DEFAULTS['batch_size'],
                   help='training batch (default: %(default)s)')
    p.add_argument('--warmup', type=int, default=3,
                   help='untimed steps of each before the first window (default: %(default)s)')
    p.add_argument('--matmul-reps', type=int, default=5, help='matmuls per window (default: 5)')
    p.add_argument('--quick', action='store_true', help='1 window of 3 steps, 1 warm-up step, 2 matmuls')
    p.add_argument('--no-onednn', action='store_true', help='run with TF_ENABLE_ONEDNN_OPTS=0')
    p.add_argument('--bf16', action='store_true', help="also time ours with train.py --bf16's session (interleaved)")
    args = p.parse_args(argv)
    if args.quick:
        args.windows, args.steps, args.warmup, args.matmul_reps = 1, 3, 1, 2
    if min(args.windows, args.steps, args.batch_size, args.matmul_reps) < 1 or args.warmup < 0:
        p.error('--windows, --steps, --batch-size and --matmul-reps must be >= 1, --warmup >= 0')
    return args


# ---------------------------------------------------------------------------- FLOPs

def flops_per_image():
    """Analytic forward + backward FLOPs of one image (see the module docstring) and the MACs."""
    import model
    macs, size, channels = 0, IMAGE_SIZE, 1
    for filters, convs in model.TRUNK:
        for _ in range(convs):
            macs += size * size * 9 * channels * filters
            channels = filters
        size = -(-size // 2)  # 2x2 max pool, stride 2, SAME padding
    features = size * size * channels
    for task in TASKS:
        macs += features * model.HEAD_UNITS + model.HEAD_UNITS * model.HEAD_UNITS
        macs += model.HEAD_UNITS * NUM_CLASSES[task]
    return 3 * 2 * macs, macs


def graph_macs(graph):
    """MACs per image of the forward Conv2D and MatMul ops in graph (the check of the count)."""
    macs = 0
    for op in graph.get_operations():
        if op.name.startswith(('trunk/', 'head_')) and op.type in ('Conv2D', 'MatMul'):
            out = op.outputs[0].shape.as_list()
            kernel = op.inputs[1].shape.as_list()
            if op.type == 'Conv2D':  # out (N, H, W, C_out), kernel (kh, kw, C_in, C_out)
                macs += out[1] * out[2] * int(np.prod(kernel))
            else:                    # (N, n_in) @ (n_in, n_out)
                macs += int(np.prod(kernel))
    return macs


# ---------------------------------------------------------------------------- data

def make_batches(batch_size, seed=0):
    """POOL_BATCHES of (images (B,48,48,1), one-hot labels (B,7), indexes (B,)) like Dataset.gen()."""
    rng = np.random.RandomState(seed)
    batches = []
    for _ in range(POOL_BATCHES):
        images = rng.uniform(-0.5, 0.5, (batch_size, IMAGE_SIZE, IMAGE_SIZE, 1)).astype(np.float32)
        indexes = rng.choice(TASKS, batch_size).astype(np.float32)
        classes = np.array([rng.randint(NUM_CLASSES[int(t)]) for t in indexes])
        labels = np.eye(LABEL_WIDTH, dtype=np.float32)[classes]
        batches.append((images, labels, indexes))
    return batches


def keras_arrays(batches, steps):
    """x, per-head y and per-head sample_weight masks for `steps` batches of the pool in turn."""
    pick = [batches[i % len(batches)] for i in range(steps)]
    images = np.concatenate([b[0] for b in pick])
    labels = np.concatenate([b[1] for b in pick])
    indexes = np.concatenate([b[2] for b in pick])
    ys = [labels[:, :NUM_CLASSES[t]] for t in TASKS]
    masks = [(indexes == t).astype(np.float32) for t in TASKS]
    return images, ys, masks


# ---------------------------------------------------------------------------- ours

class Ours(object):
    """Our graph in its own tf.Graph and Session (plus the reference matmul, in the same session)."""

    def __init__(self, tf, batches, keep_prob=0.5, bfloat16=False):
        import model
        self.graph = tf.Graph()
        self.sess = tf.Session(graph=self.graph, config=tf_setup.session_config(bfloat16))
        self.net = model.Multitask_BKNet(self.sess, verbose=False)
        net = self.net
        with self.graph.as_default():
            a = tf.get_variable('bench_a', [MATMUL_N, MATMUL_N], initializer=tf.random_normal_initializer())
            b = tf.get_variable('bench_b', [MATMUL_N, MATMUL_N], initializer=tf.random_normal_initializer())
            self.matmul_op = tf.matmul(a, b).op  # run as a target: no 16 MB copy of the product back
            self.sess.run(tf.global_variables_initializer())
        # What train.py fetches and feeds every step.
        self.fetches = [net.train_op, net.total_loss, net.task_loss, net.task_correct, net.task_count]
        self.feeds = [{net.input_images: x, net.input_labels: y, net.input_indexes: i,
                       net.phase_train: True, net.keep_prob: keep_prob, net.learning_rate: LEARNING_RATE}
                      for x, y, i in batches]

    def train(self, steps):
        """-> seconds for `steps` training steps."""
        t0 = time.perf_counter()
        for step in range(steps):
            self.sess.run(self.fetches, self.feeds[step % len(self.feeds)])
        return time.perf_counter() - t0

    def matmul(self, reps):
        """-> seconds of each of `reps` matmuls."""
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            self.sess.run(self.matmul_op)
            times.append(time.perf_counter() - t0)
        return times


# ---------------------------------------------------------------------------- keras

def build_keras(keras, weight_decay, keep_prob):
    """The same network from Keras 3 layers: the trunk, three heads, logits out (no softmax)."""
    import model
    from layers import BN_DECAY, BN_EPSILON
    L = keras.layers
    # Our weight decay is wd * sum(w^2) / 2 (tf.nn.l2_loss); Keras's L2(l) is l * sum(w^2).
    reg = keras.regularizers.L2(weight_decay / 2.0)

    def bn():
        return L.BatchNormalization(momentum=BN_DECAY, epsilon=BN_EPSILON)

    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 1))
    x = inputs
    for filters, convs in model.TRUNK:
        for _ in range(convs):
            x = L.Conv2D(filters, 3, padding='same', use_bias=False, kernel_initializer='he_normal',
                         kernel_regularizer=reg)(x)
            x = L.ReLU()(bn()(x))
        x = L.MaxPooling2D(2, padding='same')(x)
    features = L.Flatten()(x)
    outputs = []
    for task in TASKS:
        h = features
        for _ in range(2):
            h = L.Dense(model.HEAD_UNITS, use_bias=False, kernel_initializer='he_normal', kernel_regularizer=reg)(h)
            h = L.Dropout(1.0 - keep_prob)(L.ReLU()(bn()(h)))
        outputs.append(L.Dense(NUM_CLASSES[task], kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.01),
                               kernel_regularizer=reg, name=config.TASK_NAMES[task])(h))
    net = keras.Model(inputs, outputs)
    # Masked multi-task loss: each head gets a sample_weight of 1 for its own task's samples and 0
    # for the others. Keras normalises a sample-weighted loss by the batch size (all samples), not
    # by the count of the head's own samples as our graph does: a per-head constant factor on the
    # loss, which does not change the compute.
    net.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE, momentum=0.9, nesterov=True),
                loss=[keras.losses.CategoricalCrossentropy(from_logits=True) for _ in TASKS])
    return net


class Keras(object):

    def __init__(self, keras, batches, batch_size, weight_decay, keep_prob=0.5):
        self.keras = keras
        self.batches = batches
        self.batch_size = batch_size
        self.model = build_keras(keras, weight_decay, keep_prob)
        self._data = {}

        class StepTimer(keras.callbacks.Callback):
            """From the start of the first step to the end of the last: fit()'s per-call set-up
            (data adapter, iterator) is left out, as it is paid once per epoch in real training."""

            def on_train_batch_begin(self, batch, logs=None):
                if batch == 0:
                    self.t0 = time.perf_counter()

            def on_train_batch_end(self, batch, logs=None):
                self.t1 = time.perf_counter()

        self.timer = StepTimer()

    def train(self, steps):
        """-> seconds for `steps` steps of one model.fit call (one epoch of steps * batch samples)."""
        if steps not in self._data:
            self._data[steps] = keras_arrays(self.batches, steps)
        x, ys, masks = self._data[steps]
        # shuffle=False: the data is random already, and our side does not shuffle either.
        self.model.fit(x, ys, sample_weight=masks, batch_size=self.batch_size, epochs=1, shuffle=False,
                       verbose=0, callbacks=[self.timer])
        return self.timer.t1 - self.timer.t0


# ---------------------------------------------------------------------------- report

def _spread(values, fmt='%.1f'):
    return (fmt + ' (%s..%s)') % (statistics.median(values), fmt % min(values), fmt % max(values))


def main(argv=None):
    args = parse_args(argv)
    tf = tf_setup.import_tf(onednn=not args.no_onednn)  # before model imports TensorFlow
    os.environ.setdefault('KERAS_BACKEND', 'tensorflow')
    import keras
    import tensorflow
    from tensorflow.python.util import _pywrap_util_port

    onednn = _pywrap_util_port.IsMklEnabled()
    if keras.backend.backend() != 'tensorflow':
        sys.exit('error: KERAS_BACKEND must be tensorflow, got %s' % keras.backend.backend())
    flops, macs = flops_per_image()
    batches = make_batches(args.batch_size)
    B = args.batch_size

    print('TensorFlow %s, Keras %s, Python %s, %d CPU(s) (%s)' % (
        tensorflow.__version__, keras.__version__, platform.python_version(), os.cpu_count(),
        platform.processor() or platform.machine()))
    print('oneDNN: %s (TF_ENABLE_ONEDNN_OPTS=%s)' % ('on' if onednn else 'off',
                                                   os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'unset')))
    print('batch %d, %d window(s) x %d steps after %d warm-up step(s); matmul %dx%d x %d per window'
          % (B, args.windows, args.steps, args.warmup, MATMUL_N, MATMUL_N, args.matmul_reps))

    ours = Ours(tf, batches)
    ours16 = Ours(tf, batches, bfloat16=True) if args.bf16 else None
    counted = graph_macs(ours.graph)
    print('FLOPs per image: %.1f M MACs -> forward %.3f GFLOP, forward + backward (x3) %.3f GFLOP'
          % (macs / 1e6, 2 * macs / 1e9, flops / 1e9))
    if counted != macs:
        print('warning: the graph holds %.1f M MACs per image, the formula %.1f M' % (counted / 1e6, macs / 1e6))
    km = Keras(keras, batches, B, ours.net.config['weight_decay'])
    print('Keras model: %d parameters (ours: %d); jit_compile=%s' % (
        km.model.count_params(),
        sum(int(np.prod(v.shape.as_list())) for v in ours.net.model_variables), km.model.jit_compile))

    t0 = time.perf_counter()
    if args.warmup:
        ours.train(args.warmup)
        km.train(args.warmup)  # traces the train function
        if ours16:
            ours16.train(args.warmup)
    ours.matmul(1)
    print('warm-up %.1f s' % (time.perf_counter() - t0))

    ours_ips, keras_ips, mm_gflops, bf16_ips = [], [], [], []
    mm_flop = 2.0 * MATMUL_N ** 3
    for w in range(args.windows):
        ours_ips.append(args.steps * B / ours.train(args.steps))
        keras_ips.append(args.steps * B / km.train(args.steps))
        mm_gflops.append(mm_flop / statistics.median(ours.matmul(args.matmul_reps)) / 1e9)
        if ours16:
            bf16_ips.append(args.steps * B / ours16.train(args.steps))
        print('window %d/%d: ours %.1f img/s, keras fit %.1f img/s (x%.2f), matmul %.1f GFLOP/s%s'
              % (w + 1, args.windows, ours_ips[-1], keras_ips[-1], ours_ips[-1] / keras_ips[-1], mm_gflops[-1],
                 ', ours bfloat16 %.1f img/s' % bf16_ips[-1] if ours16 else ''))

    o, k, m = (statistics.median(v) for v in (ours_ips, keras_ips, mm_gflops))
    ours_gflops = o * flops / 1e9
    print()
    print('median (min..max) over %d window(s):' % args.windows)
    print('  ours       %s images/s = %.1f GFLOP/s' % (_spread(ours_ips), ours_gflops))
    print('  keras fit  %s images/s' % _spread(keras_ips))
    print('  matmul     %s GFLOP/s' % _spread(mm_gflops))
    print('  ours / keras fit = %.2fx (target >= 1.2x); ours = %.0f%% of the matmul rate (target >= 70%%)'
          % (o / k, 100.0 * ours_gflops / m))
    if ours16:
        print('  ours bfloat16 %s images/s: %.2fx ours in float32' % (_spread(bf16_ips), statistics.median(bf16_ips) / o))
    print()
    print('| batch | oneDNN | ours img/s | Keras fit img/s | ours / Keras | ours GFLOP/s | matmul GFLOP/s '
          '| % of matmul |')
    print('|---:|:---:|---:|---:|---:|---:|---:|---:|')
    print('| %d | %s | %.1f | %.1f | %.2fx | %.1f | %.1f | %.0f%% |' % (
        B, 'on' if onednn else 'off', o, k, o / k, ours_gflops, m, 100.0 * ours_gflops / m))
    return 0


if __name__ == '__main__':
    sys.exit(main())
