"""Export a trained Multitask BKNet as a SavedModel for TensorFlow 2 serving.

  python export.py --out exported/bknet                       the newest checkpoint of pretrained/ or checkpoints/
  python export.py --checkpoint checkpoints/demo --out exported/demo --force   replace an existing export
  python export.py --checkpoint checkpoints/real --weights --out pretrained   what the repo ships: weights.npz + config.json
  python export.py --checkpoint checkpoints/real5 --average-with pretrained --weights --out soup   the mean of two models' weights
  python export.py --tflite float32 float16 int8 --data-dir data/real --out exported   .tflite files for LiteRT

The SavedModel holds the very graph model.py builds (inference mode: batch norm with its moving
averages, no dropout) with a uint8 face input normalised inside it, so no model code is copied.
Its one signature, serving_default, takes faces: uint8 [N, 48, 48] (grayscale crops as
faces.preprocess_face makes them) and returns smile [N, 2], emotion [N, 7] and gender [N, 2]
probabilities (a model trained with --tasks: those of its heads), classes in config.CLASS_NAMES
order (also in assets.extra/class_names.json). With
--tta-views 2 or 18 they are the mean over that many test-time views of each face (its mirror image,
and shifts of -2, 0, +2 px: data_provider.tta_views), computed inside the graph at that many times the cost:

  import tensorflow as tf
  serve = tf.saved_model.load('exported/bknet').signatures['serving_default']
  probs = serve(faces=tf.constant(faces_uint8))     # {'smile': ..., 'emotion': ..., 'gender': ...}

--weights writes instead the inference weights alone (no optimizer state) as float16 weights.npz
with the run's config.json: half the size of float32, and what pretrained/ holds. With
--average-with A B ..., the weights written are the mean of --checkpoint's and those models' (a
uniform "model soup": the same network, say two training cycles of one lineage).

--tflite float32 float16 int8 (any of them) writes out/bknet_PRECISION.tflite (and out/config.json
when out has none): the SavedModel's graph converted by TensorFlow Lite's converter, same input and
outputs, run by LiteRT (litert_model.py) without TensorFlow. float16 stores the weights in half the
bytes; int8 is full-integer post-training quantization, its activation ranges calibrated on
CALIBRATION_FACES faces of each task, never of a test split: the validation part of smile and gender
train (Dataset('validation')) and, since FER-2013's validation split is PublicTest, one of the test
splits evaluate.py reports, faces spread over FER-2013 train. Their data folder is --data-dir
(default: the checkpoint config's data_dir). Each file is written whole or not at all, and an
existing one is only replaced with --force. The command prints each file's size.

Either export is built in a hidden folder beside --out (.tmp-export-*) and moved into place when
complete; an existing --out (with --weights: a weights.npz or config.json in it) is only replaced
with --force. A replaced SavedModel folder is kept as .tmp-old-NAME until the new one is in place (the
next export beside it puts it back if the new one never arrived); with --weights, the two files are
listed in .unfinished.json while they are moved (files.publishing), so a stop between them leaves
a pair that predict/evaluate refuse in one line, never old weights read with a new config. Ctrl-C
stops with one line and exit code 130 and removes the unfinished export; the folders of an export
killed half-way are removed by the next export beside them, but never those of one still running.

Public names:
  ServingNet        Multitask_BKNet with the extra uint8 `faces` placeholder feeding its input
  ExportError       the export folder cannot be written, or exists without --force (one-line message)
  export(checkpoint, out, force=False, views=1) -> the checkpoint file exported
  export_weights(checkpoint, out, force=False, average_with=()) -> the checkpoint file exported (weights
                    averaged with those of average_with's models)
  export_tflite(checkpoint, out, precisions, force=False, data_dir=None, views=1)
                    -> (the checkpoint file exported, {precision: .tflite file written}, {task: calibration faces})
  calibration_faces(data_dir, tasks) -> {task: uint8 faces} that calibrate an int8 export
  TFLITE_PRECISIONS, TFLITE_FILE, CALIBRATION_FACES   float32 float16 int8, 'bknet_%s.tflite', 300
"""
import contextlib
import json
import os
import sys

import cli

if __name__ == '__main__':  # from the first slow import on, Ctrl-C is one line and exit code 130
    cli.start()

import numpy as np

import checkpoints
import config
import data_provider
import data_utils
import evaluate
import files
import model
import tf_setup
from config import CLASS_NAMES, EMOTION, IMAGE_SIZE, TASK_NAMES
from tf_setup import tf

SIGNATURE = 'serving_default'
INPUT = 'faces'
TEMP_PREFIX = files.TEMP_PREFIX + 'export-'  # the folder an export is built in, beside --out
TFLITE_PRECISIONS = ('float32', 'float16', 'int8')
TFLITE_FILE = 'bknet_%s.tflite'
# Of each task: the converter runs the float model on them one at a time (~10 s for all three).
CALIBRATION_FACES = 300


class ExportError(Exception):
    """The export folder cannot be written, or exists without --force (one-line message)."""


class ServingNet(model.Multitask_BKNet):
    """The network fed by a uint8 `faces` placeholder; with views > 1 its `averaged` outputs are the mean
    over data_provider.tta_views(views) of each face, all views in one batch."""

    def __init__(self, session, config=None, views=1, **kwargs):
        self.views = data_provider.tta_views(views)
        super().__init__(session, config, **kwargs)
        n = tf.shape(self.faces)[0]
        self.averaged = self.probabilities if len(self.views) == 1 else {
            t: tf.reduce_mean(tf.reshape(p, [len(self.views), n, p.shape[-1]]), axis=0)
            for t, p in self.probabilities.items()}

    def _define_input(self):
        super()._define_input()
        self.keep_prob = 1.0  # a number, not a placeholder: tf.nn.dropout then adds no (random) ops to the graph
        self.faces = tf.placeholder(tf.uint8, [None, IMAGE_SIZE, IMAGE_SIZE], name=INPUT)
        # data_utils.normalize in graph ops; the float placeholder stays in the graph, unused
        faces = (tf.cast(self.faces, tf.float32) - 128.0) / 255.0
        views = []
        for mirrored, dy, dx in self.views:  # data_provider.shift_faces as gathers: the border pixels repeated
            view = faces[:, :, ::-1] if mirrored else faces
            if dy or dx:
                view = tf.gather(tf.gather(view, data_provider.shift_index(IMAGE_SIZE, dy), axis=1),
                                 data_provider.shift_index(IMAGE_SIZE, dx), axis=2)
            views.append(view)
        self.input_images = tf.concat(views, axis=0)[..., None]


def export(checkpoint, out, force=False, views=1):
    """Write the SavedModel of checkpoint to the folder out; returns the checkpoint file read.
    views > 1: its outputs average that many test-time views of each face (data_provider.tta_views)."""
    if os.path.exists(out) and not force:
        raise ExportError('%s already exists; pass --force to replace it' % out)
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as session:
        net, path = model.load_model(session, checkpoint, net_class=ServingNet, views=views)
        # The step counters are not restored for inference, but every variable is saved.
        session.run(tf.variables_initializer([v for v in tf.global_variables() if v not in net.model_variables]))
        signature = tf.saved_model.predict_signature_def(
            inputs={INPUT: net.faces}, outputs={TASK_NAMES[t]: net.averaged[t] for t in net.tasks})
        with _build_folder(out) as tmp:
            built = os.path.join(tmp, 'saved_model')
            builder = tf.saved_model.Builder(built)
            builder.add_meta_graph_and_variables(session, [tf.saved_model.tag_constants.SERVING],
                                                 signature_def_map={SIGNATURE: signature}, clear_devices=True,
                                                 strip_default_attrs=True)
            builder.save()
            os.makedirs(os.path.join(built, 'assets.extra'))
            with open(os.path.join(built, 'assets.extra', 'class_names.json'), 'w') as f:
                json.dump({TASK_NAMES[t]: list(CLASS_NAMES[t]) for t in net.tasks}, f, indent=2)
            if os.path.exists(out) and not force:
                raise ExportError('%s already exists; pass --force to replace it' % out)
            files.replace_folder(built, out)
    return path


def export_weights(checkpoint, out, force=False, average_with=()):
    """Write checkpoint's inference weights (float16 .npz) and config to the folder out.

    average_with: more models of the same architecture whose weights are averaged with
    checkpoint's, each counting once (a uniform "model soup", Wortsman et al., ICML 2022); the
    config is checkpoint's."""
    names = (checkpoints.WEIGHTS_FILE, checkpoints.CONFIG_FILE)
    existing = [os.path.join(out, n) for n in names if os.path.exists(os.path.join(out, n))]
    if existing and not force:
        raise ExportError('%s already exists; pass --force to replace it' % existing[0])
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as session:
        net, path = model.load_model(session, checkpoint)
        weights = net.inference_weights()
        for other in average_with:
            with tf.Graph().as_default() as other_graph, tf.Session(graph=other_graph) as other_session:
                other_net, other_path = model.load_model(other_session, other)
                other_weights = other_net.inference_weights()
            if {k: v.shape for k, v in other_weights.items()} != {k: v.shape for k, v in weights.items()}:
                raise ExportError('%s cannot be averaged with %s: their networks differ (tasks %s against %s)'
                                  % (other_path, path, ' '.join(other_net.config['tasks']), ' '.join(net.config['tasks'])))
            for name in weights:
                weights[name] = weights[name] + other_weights[name]
        weights = {name: value / (1 + len(average_with)) for name, value in weights.items()}
        with _build_folder(out) as tmp:
            checkpoints.save_weights(os.path.join(tmp, checkpoints.WEIGHTS_FILE), weights)
            # Users keep their own data in data/, whatever folder the model was trained from.
            checkpoints.write_config(tmp, dict(net.config, data_dir=config.DEFAULTS['data_dir'], checkpoint_dir=out))
            os.makedirs(out, exist_ok=True)
            with files.publishing(out, [os.path.join(out, name) for name in names]):
                for name in names:
                    os.replace(os.path.join(tmp, name), os.path.join(out, name))
    return path


def export_tflite(checkpoint, out, precisions, force=False, data_dir=None, views=1):
    """Write checkpoint as out/bknet_{precision}.tflite for each of precisions (one SavedModel, converted
    each way), and its config as out/config.json if out has none. -> (the checkpoint file exported,
    {precision: the .tflite file}, {task: calibration faces} (with int8; else empty))."""
    targets = {p: os.path.join(out, TFLITE_FILE % p) for p in precisions}
    existing = [target for target in targets.values() if os.path.exists(target)]
    if existing and not force:
        raise ExportError('%s already exists; pass --force to replace it' % existing[0])
    cfg = checkpoints.load_config(checkpoints.find_weights(checkpoint))
    calibration = {}
    if 'int8' in targets:  # before the slow part: missing data is said at once
        calibration = calibration_faces(data_dir or cfg['data_dir'], config.task_indexes(cfg['tasks']))
    with _build_folder(out) as tmp:
        saved_model = os.path.join(tmp, 'saved_model')
        path = export(checkpoint, saved_model, views=views)
        faces = np.concatenate(list(calibration.values())) if calibration else None
        converted = {p: _convert(saved_model, p, faces) for p in targets}  # every one, before any is written
        os.makedirs(out, exist_ok=True)
        for precision, target in targets.items():
            with files.atomic_write(target) as f:
                f.write(converted[precision])
        if not os.path.exists(os.path.join(out, checkpoints.CONFIG_FILE)):
            checkpoints.write_config(out, dict(cfg, data_dir=config.DEFAULTS['data_dir'], checkpoint_dir=out))
    return path, targets, {t: len(faces) for t, faces in calibration.items()}


def calibration_faces(data_dir, tasks, per_task=CALIBRATION_FACES):
    """{task: per_task uint8 faces spread evenly over its calibration set} (see the module docstring);
    ExportError naming the missing file when the data is not there."""
    try:
        sets = {t: images for (t, _), (images, _) in evaluate.load_validation_sets(
            data_dir, tasks=[t for t in tasks if t in data_utils.VALIDATION_TASKS]).items()}
        if EMOTION in tasks:
            sets[EMOTION] = data_utils.load_split(data_utils.split_path(data_dir, EMOTION, 'train'), mmap=True)[0]
    except data_utils.DataError as err:
        raise ExportError('int8 needs validation faces to calibrate on (--data-dir): %s' % err) from None
    return {t: np.array(sets[t][np.linspace(0, len(sets[t]) - 1, min(per_task, len(sets[t]))).astype(int)])
            for t in tasks}


def _convert(saved_model, precision, calibration=None):
    """The .tflite bytes of a SavedModel folder: float32 as it is, float16 weights, or int8 (full integer,
    calibrated on the uint8 faces given)."""
    import tensorflow  # loaded by export() already; tf.lite's converter is a TF2 API (tf_setup.tf is tf.compat.v1)
    converter = tensorflow.lite.TFLiteConverter.from_saved_model(saved_model, signature_keys=[SIGNATURE])
    if precision != 'float32':
        converter.optimizations = [tensorflow.lite.Optimize.DEFAULT]
    if precision == 'float16':
        converter.target_spec.supported_types = [tensorflow.float16]
    if precision == 'int8':
        converter.representative_dataset = lambda: ([face[None]] for face in calibration)
        converter.target_spec.supported_ops = [tensorflow.lite.OpsSet.TFLITE_BUILTINS_INT8]
    with tf_setup.stderr_silenced():  # the converter's C++ logs its settings there; a failure raises with its reason
        return converter.convert()


@contextlib.contextmanager
def _build_folder(out):
    """A temporary folder beside out to build the export in, removed afterwards whatever happens
    (an error, Ctrl-C); OSError inside, or TensorFlow's when it writes the SavedModel (a full disk),
    becomes an ExportError naming the file."""
    try:
        with files.staging_folder(os.path.dirname(os.path.abspath(out)), TEMP_PREFIX) as tmp:
            try:
                yield tmp
            except OSError as err:
                raise ExportError('%s: cannot write the export (%s)' % (err.filename or out, err.strerror or err)) from None
            except tf.errors.OpError as err:
                raise ExportError('%s: cannot write the export (%s)' % (out, err.message.strip().splitlines()[0])) from None
    except OSError as err:
        raise ExportError('%s: cannot create the export folder (%s)' % (out, err.strerror or err)) from None


def parse_args(argv=None):
    p = cli.docstring_parser(__doc__, 3)
    cli.add_checkpoint_argument(p)
    written = '%s and %s' % (checkpoints.WEIGHTS_FILE, checkpoints.CONFIG_FILE)
    p.add_argument('--out', required=True,
                   help='the SavedModel folder to write (with --weights: the folder to write the files into)')
    p.add_argument('--force', action='store_true', help='replace --out if it exists (with --weights: its %s)' % written)
    p.add_argument('--weights', action='store_true', help='write the float16 %s instead' % written)
    p.add_argument('--average-with', nargs='+', default=[], metavar='CHECKPOINT',
                   help='with --weights: write the mean of the weights of --checkpoint and these models (the same '
                        'network, e.g. two cycles of one run); the config is --checkpoint\'s (default: none)')
    p.add_argument('--tta-views', type=int, choices=(1, 2, 18), default=1,
                   help='the SavedModel averages this many test-time views of each face (default: 1)')
    p.add_argument('--tflite', nargs='+', choices=TFLITE_PRECISIONS, metavar='PRECISION',
                   help='write LiteRT models instead, --out/%s (and --out/%s if missing), for each PRECISION: '
                        'float32, float16 (half the size) or int8 (a quarter, calibrated on --data-dir)'
                        % (TFLITE_FILE % 'PRECISION', checkpoints.CONFIG_FILE))
    p.add_argument('--data-dir', help="--tflite int8: the data folder whose validation faces calibrate it (default: "
                                      "the checkpoint config's data_dir)")
    args = p.parse_args(argv)
    if args.tflite and args.weights:
        p.error('--tflite and --weights write different files: choose one')
    return args


def _write_tflite(args):
    """--tflite: the .tflite files written, then one line each: its size and, for int8, the calibration faces."""
    path, written, calibration = export_tflite(args.checkpoint, args.out, list(dict.fromkeys(args.tflite)),
                                               args.force, args.data_dir, args.tta_views)
    faces = ('; calibrated on %d faces, none of a test split (%s)' % (sum(calibration.values()), ', '.join(
        '%s %d' % (TASK_NAMES[t], n) for t, n in calibration.items())) if calibration else '')
    for precision, target in written.items():
        print('exported %s to %s: %s, %.2f MB%s' % (path, target, precision, os.path.getsize(target) / 1e6,
                                                    faces if precision == 'int8' else ''))
    return 0


def main(argv=None):
    args = parse_args(argv)
    parent = os.path.dirname(os.path.abspath(args.out))
    leftovers = [os.path.join(parent, name) for name in files.remove_leftovers(parent, TEMP_PREFIX)]
    if leftovers:
        print('removed %d folder(s) left by an interrupted export: %s' % (len(leftovers), ', '.join(leftovers)))
    try:
        if args.average_with and not args.weights:
            raise ExportError('--average-with needs --weights')
        if args.tflite:
            return _write_tflite(args)
        if args.weights:
            path = export_weights(args.checkpoint, args.out, args.force, args.average_with)
            print('wrote the weights of %s to %s' % (' + '.join([path] + args.average_with) + (
                  ' (their mean)' if args.average_with else ''), os.path.join(args.out, checkpoints.WEIGHTS_FILE)))
            return 0
        path = export(args.checkpoint, args.out, args.force, args.tta_views)
    except (checkpoints.CheckpointError, ExportError) as err:
        return cli.error(err)
    heads = checkpoints.load_config(path)['tasks']  # read once: a --tasks model exports only its heads
    print('exported %s to %s: signature %s, input %s uint8 [N, %d, %d], outputs %s'
          % (path, args.out, SIGNATURE, INPUT, IMAGE_SIZE, IMAGE_SIZE,
             ', '.join('%s [N, %d]' % (name, len(CLASS_NAMES[t])) for t, name in TASK_NAMES.items() if name in heads)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
