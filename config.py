"""Plain defaults in one place, the three tasks, and a quiet TensorFlow import.

Public names:
  TASKS, SMILE, EMOTION, GENDER   task indexes as stored beside each sample (1, 2, 3)
  task_indexes(names)             task names ('smile', ...) -> their indexes, in TASKS order
  NUM_CLASSES, CLASS_NAMES, TASK_NAMES, LABEL_WIDTH
  IMAGE_SIZE                      faces are IMAGE_SIZE x IMAGE_SIZE grayscale
  DEFAULTS                        training / model defaults; every CLI flag overrides one
  import_tf(onednn)               TensorFlow with its start-up chatter silenced
  session_config(bfloat16=False)  a ConfigProto that trains on a GPU when there is one (bfloat16 on an AMX CPU)
  cpu_flags(cpuinfo)              the CPU's feature flags as Linux lists them, or None where it cannot tell
  docstring_parser(doc, examples) an ArgumentParser whose help is a script's module docstring
  exit_on_interrupt(message)      Ctrl-C exits with 130 and one line instead of a traceback
"""
import argparse
import atexit
import contextlib
import os
import signal
import sys

IMAGE_SIZE = 48

# The handout's check cell asserts index in {1.0, 2.0, 3.0}.
SMILE, EMOTION, GENDER = 1, 2, 3
TASKS = (SMILE, EMOTION, GENDER)
TASK_NAMES = {SMILE: 'smile', EMOTION: 'emotion', GENDER: 'gender'}
NUM_CLASSES = {SMILE: 2, EMOTION: 7, GENDER: 2}
CLASS_NAMES = {
    SMILE: ('non_smile', 'smile'),
    EMOTION: ('angry', 'disgust', 'fear', 'happy', 'sad', 'surprise', 'neutral'),
    GENDER: ('female', 'male'),
}
LABEL_WIDTH = max(NUM_CLASSES.values())  # one-hot labels are 7 wide; smile/gender use the first 2

def task_indexes(names):
    """('gender', 'smile') -> (SMILE, GENDER): task names to indexes, in TASKS order; ValueError if unknown."""
    by_name = {name: task for task, name in TASK_NAMES.items()}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError('unknown task(s) %s: choose from %s' % (', '.join(map(repr, unknown)), ', '.join(by_name)))
    return tuple(t for t in TASKS if TASK_NAMES[t] in names)


DEFAULTS = dict(
    data_dir='data',
    checkpoint_dir='checkpoints',
    epochs=10,
    batch_size=128,
    optimizer='momentum',       # 'momentum' (Nesterov, 0.9) or 'adam'
    learning_rate=0.01,
    lr_schedule='step',         # 'step': staircase exponential decay; 'cosine': to zero over the run
    lr_decay_rate=0.5,          # step schedule: multiply by this ...
    lr_decay_epochs=4,          # ... every this many epochs
    weight_decay=5e-4,
    keep_prob=0.5,
    augment=True,
    aug_pad=10,                 # pad + random crop shift, pixels
    random_erasing=0.0,         # share of training faces with one random rectangle replaced by noise (Zhong et al.)
    tasks=('smile', 'emotion', 'gender'),  # the heads the network has (any non-empty subset)
    task_weights=(1.0, 1.0, 1.0),  # smile, emotion, gender: copies of each train set per epoch
    task_weighting='fixed',     # 'fixed': the heads' losses add up; 'uncertainty': learned weights (Kendall et al.)
    seed=1234,
    validation_fraction=0.1,    # smile / gender train share held out to judge epochs (emotion: PublicTest); 0: test
    ema_decay=0.999,            # evaluate, keep as best and ship a moving average of the weights; 0 = off
    label_smoothing=0.0,        # emotion head: train on (1 - e) * one-hot + e / 7
    gender_balance=0.0,         # gender loss weights class c by n_c ** -this (1 = class-balanced, 0 = plain)
    gender_logit_bias=0.0,      # added to the female logit at inference (model.balanced_gender_bias: a class-balanced decision)
    max_steps=0,                # stop after this many global steps (0 = no cap); never saved in config.json
    keep_checkpoints=3,
    bfloat16=False,             # training's convolutions and matmuls in bfloat16: 2x on a CPU with AMX, 1.5x to 0.6x without
    init_from=None,             # a fresh run starts from these weights (checkpoint folder/prefix or weights.npz)
    distill_from=None,          # a teacher model (as init_from): train on a mix of the labels and its predictions
    distill_weight=0.0,         # the teacher's share of each target: (1 - w) one-hot + w teacher (at most 0.5)
)


def import_tf(onednn=None):
    """Import TensorFlow quietly and return its tf.compat.v1 module.

    onednn: True/False sets TF_ENABLE_ONEDNN_OPTS unless the user already set it (it only
    takes effect if TensorFlow is not imported yet); None leaves the variable alone.
    """
    if onednn is not None:
        os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1' if onednn else '0')
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    if 'tensorflow' not in sys.modules:
        with _stderr_silenced():  # C++ logs printed before absl is initialised ignore the env var
            import tensorflow
            tensorflow.config.list_physical_devices('GPU')  # its CUDA probe logs an error when there is no GPU
    import tensorflow as tf
    tf.get_logger().setLevel('ERROR')
    return tf.compat.v1


@contextlib.contextmanager
def _stderr_silenced():
    try:
        saved = os.dup(2)
    except OSError:  # no real stderr (some notebook front ends)
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        sys.stderr.flush()
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def session_config(bfloat16=False):
    """Soft placement and on-demand GPU memory: the same graph runs on CPU or a Colab GPU.

    bfloat16: let oneDNN's grappler pass run the CPU's convolutions and matmuls in bfloat16
    (variables stay float32). Measured here: 2.0x training throughput on a CPU with AMX, 1.54x on
    an AMD EPYC with AVX-512 BF16 and no AMX; the same pass made training 0.62x as fast on another
    CPU with AVX-512 BF16 but no AMX.
    """
    tf = import_tf()
    cfg = tf.ConfigProto(allow_soft_placement=True)
    cfg.gpu_options.allow_growth = True
    if bfloat16:
        from tensorflow.core.protobuf import rewriter_config_pb2
        cfg.graph_options.rewrite_options.auto_mixed_precision_onednn_bfloat16 = rewriter_config_pb2.RewriterConfig.ON
    return cfg


def cpu_flags(cpuinfo='/proc/cpuinfo'):
    """The CPU's feature flags ('avx2', 'avx512f', 'amx_bf16', ...) from cpuinfo, or None if it has none to read."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith('flags'):
                    return set(line.split(':', 1)[1].split())
    except OSError:
        pass
    return None


def docstring_parser(doc, examples):
    """An ArgumentParser described by doc's first paragraph, with its next `examples` paragraphs as the epilog."""
    paragraphs = doc.split('\n\n')
    return argparse.ArgumentParser(description=paragraphs[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                   epilog='\n\n'.join(paragraphs[1:1 + examples]))


def exit_on_interrupt(message='interrupted'):
    """From now on Ctrl-C exits with 128 + SIGINT and `message` as the last line on stderr, no traceback.

    SystemExit runs finally blocks and context managers on its way out, so unfinished output is
    removed; a second Ctrl-C is ignored so it cannot cut that clean-up short. Entry points call it
    first thing, before the slow TensorFlow import.
    """
    def handler(signum, frame):
        signal.signal(signum, signal.SIG_IGN)
        atexit.register(print, message, file=sys.stderr)  # at exit: import_tf silences stderr while TF loads
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGINT, handler)
