"""Export a trained Multitask BKNet as a SavedModel for TensorFlow 2 serving.

  python export.py --out exported/bknet                       the newest checkpoint of pretrained/ or checkpoints/
  python export.py --checkpoint checkpoints/demo --out exported/demo --force   replace an existing export
  python export.py --checkpoint checkpoints/real --weights --out pretrained   what the repo ships: weights.npz + config.json

The SavedModel holds the very graph model.py builds (inference mode: batch norm with its moving
averages, no dropout) with a uint8 face input normalised inside it, so no model code is copied.
Its one signature, serving_default, takes faces: uint8 [N, 48, 48] (grayscale crops as
prepare_data.preprocess_face makes them) and returns smile [N, 2], emotion [N, 7] and gender [N, 2]
probabilities, classes in config.CLASS_NAMES order (also in assets.extra/class_names.json):

  import tensorflow as tf
  serve = tf.saved_model.load('exported/bknet').signatures['serving_default']
  probs = serve(faces=tf.constant(faces_uint8))     # {'smile': ..., 'emotion': ..., 'gender': ...}

The export is built in a temporary folder beside --out and renamed into place when complete;
an existing --out is only replaced with --force.

--weights writes instead the inference weights alone (no optimizer state) as float16 weights.npz
with the run's config.json: half the size of float32, and what pretrained/ holds.

Public names:
  ServingNet        Multitask_BKNet with the extra uint8 `faces` placeholder feeding its input
  export(checkpoint, out, force=False) -> the checkpoint file exported
  export_weights(checkpoint, out, force=False) -> the checkpoint file exported
"""
import json
import os
import shutil
import sys
import tempfile

import config
from config import CLASS_NAMES, IMAGE_SIZE, TASK_NAMES, TASKS

tf = config.import_tf()

import model  # noqa: E402

SIGNATURE = 'serving_default'
INPUT = 'faces'


class ExportError(Exception):
    """The export folder cannot be written (one-line message)."""


class ServingNet(model.Multitask_BKNet):

    def _define_input(self):
        super()._define_input()
        self.faces = tf.placeholder(tf.uint8, [None, IMAGE_SIZE, IMAGE_SIZE], name=INPUT)
        # data_utils.normalize in graph ops; the float placeholder stays in the graph, unused
        self.input_images = (tf.cast(self.faces[..., None], tf.float32) - 128.0) / 255.0


def export(checkpoint, out, force=False):
    """Write the SavedModel of checkpoint to the folder out; returns the checkpoint file read."""
    if os.path.exists(out) and not force:
        raise ExportError('%s already exists; pass --force to replace it' % out)
    parent = os.path.dirname(os.path.abspath(out))
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as session:
        net, path = model.load_model(session, checkpoint, net_class=ServingNet)
        # The step counters are not restored for inference, but every variable is saved.
        session.run(tf.variables_initializer([v for v in tf.global_variables() if v not in net.model_variables]))
        signature = tf.saved_model.predict_signature_def(
            inputs={INPUT: net.faces}, outputs={TASK_NAMES[t]: net.probabilities[t] for t in TASKS})
        try:
            os.makedirs(parent, exist_ok=True)
            tmp = tempfile.mkdtemp(dir=parent, prefix='.tmp-export-')
        except OSError as err:
            raise ExportError('%s: cannot create the export folder (%s)' % (out, err.strerror or err))
        try:
            built = os.path.join(tmp, 'saved_model')
            builder = tf.saved_model.Builder(built)
            builder.add_meta_graph_and_variables(session, [tf.saved_model.tag_constants.SERVING],
                                                 signature_def_map={SIGNATURE: signature}, clear_devices=True,
                                                 strip_default_attrs=True)
            builder.save()
            os.makedirs(os.path.join(built, 'assets.extra'))
            with open(os.path.join(built, 'assets.extra', 'class_names.json'), 'w') as f:
                json.dump({TASK_NAMES[t]: list(CLASS_NAMES[t]) for t in TASKS}, f, indent=2)
            if os.path.exists(out):
                if not force:
                    raise ExportError('%s already exists; pass --force to replace it' % out)
                os.rename(out, os.path.join(tmp, 'replaced'))
            os.rename(built, out)
        except OSError as err:
            raise ExportError('%s: cannot write the export (%s)' % (err.filename or out, err.strerror or err))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def export_weights(checkpoint, out, force=False):
    """Write checkpoint's inference weights (float16 .npz) and config to the folder out."""
    weights = os.path.join(out, model.WEIGHTS_FILE)
    if os.path.exists(weights) and not force:
        raise ExportError('%s already exists; pass --force to replace it' % weights)
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as session:
        net, path = model.load_model(session, checkpoint)
        try:
            os.makedirs(out, exist_ok=True)
            net.save_weights(weights)
            # Users keep their own data in data/, whatever folder the model was trained from.
            model.write_json(os.path.join(out, model.CONFIG_FILE),
                              dict(net.config, data_dir=config.DEFAULTS['data_dir'], checkpoint_dir=out))
        except OSError as err:
            raise ExportError('%s: cannot write the weights (%s)' % (err.filename or out, err.strerror or err))
    return path


def main(argv=None):
    p = config.docstring_parser(__doc__, 3)
    model.add_checkpoint_argument(p)
    p.add_argument('--out', required=True, help='the SavedModel folder to write')
    p.add_argument('--force', action='store_true', help='replace --out if it exists')
    p.add_argument('--weights', action='store_true', help='write float16 weights.npz + config.json instead')
    args = p.parse_args(argv)
    try:
        if args.weights:
            path = export_weights(args.checkpoint, args.out, args.force)
            print('wrote the weights of %s to %s' % (path, os.path.join(args.out, model.WEIGHTS_FILE)))
            return 0
        path = export(args.checkpoint, args.out, args.force)
    except (model.CheckpointError, ExportError) as err:
        print('error: %s' % err, file=sys.stderr)
        return 2
    print('exported %s to %s: signature %s, input %s uint8 [N, %d, %d], outputs %s'
          % (path, args.out, SIGNATURE, INPUT, IMAGE_SIZE, IMAGE_SIZE,
             ', '.join('%s [N, %d]' % (TASK_NAMES[t], len(CLASS_NAMES[t])) for t in TASKS)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
