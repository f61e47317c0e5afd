"""TensorFlow for this project: imported quietly, when first used, after the command has decided oneDNN.

Public names:
  tf                              tf.compat.v1, imported on first use: importing a module that uses it loads nothing
  import_tf(onednn=None)          import TensorFlow now (quietly) and return tf.compat.v1
  choose_onednn(on)               oneDNN on or off for this process, unless the user set TF_ENABLE_ONEDNN_OPTS
  session_config(bfloat16=False)  a ConfigProto that trains on a GPU when there is one (bfloat16 on an AMX CPU)
  cpu_flags(cpuinfo)              the CPU's feature flags as Linux lists them, or None where it cannot tell
  device_name()                   'GPU (...)' or 'CPU (2 cores, oneDNN on)': what training runs on
  stderr_silenced()               a context that sends file descriptor 2 to /dev/null: C++ libraries' logs
"""
import contextlib
import os
import sys

_v1 = None  # tf.compat.v1 once imported


def import_tf(onednn=None):
    """Import TensorFlow quietly and return its tf.compat.v1 module.

    onednn: True/False sets TF_ENABLE_ONEDNN_OPTS unless the user already set it (it only takes
    effect if TensorFlow is not imported yet: commands decide it first, in cli.start); None leaves it alone.
    """
    global _v1
    if onednn is not None:
        choose_onednn(onednn)
    if _v1 is None:
        os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
        if 'tensorflow' not in sys.modules:
            with stderr_silenced():  # C++ logs printed before absl is initialised ignore the env var
                import tensorflow
                tensorflow.config.list_physical_devices('GPU')  # its CUDA probe logs an error when there is no GPU
        import tensorflow
        tensorflow.get_logger().setLevel('ERROR')
        _v1 = tensorflow.compat.v1
    return _v1


def choose_onednn(on):
    """Set TF_ENABLE_ONEDNN_OPTS unless the user did: TensorFlow reads it once, when it loads."""
    os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1' if on else '0')


class _TensorFlowOnFirstUse(object):
    """Stands for tf.compat.v1 and imports it at the first attribute asked for."""

    def __getattr__(self, name):
        return getattr(import_tf(), name)


tf = _TensorFlowOnFirstUse()


@contextlib.contextmanager
def stderr_silenced():
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


def device_name():
    gpus = tf.config.list_physical_devices('GPU')
    if gpus:
        return 'GPU (%s)' % ', '.join(g.name for g in gpus)
    from tensorflow.python.util import _pywrap_util_port  # what TensorFlow chose: unset means on, on Linux x86
    return 'CPU (%d cores, oneDNN %s)' % (os.cpu_count(), 'on' if _pywrap_util_port.IsMklEnabled() else 'off')
