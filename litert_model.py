"""Run an exported .tflite model (export.py --tflite) with LiteRT, the way a restored checkpoint runs.

LiteRT (the ai-edge-litert package, TensorFlow Lite's runtime) runs the file with XNNPACK on the
machine's cores, without TensorFlow: a LiteRTModel has the tasks and the predict() of a
Multitask_BKNet restored in a session, so predict.py, evaluate.py and anything built on
predict.Predictor take either. Which one a checkpoint gets is its engine: 'litert' for a .tflite
file, 'tf' for everything else (a run folder, a checkpoint prefix, a weights .npz).

Public names:
  ENGINES, TFLITE_SUFFIX          ('tf', 'litert') and '.tflite'
  choose_engine(checkpoint, engine=None)   -> 'tf' or 'litert' (None: by the file's suffix);
                                  CheckpointError when the two disagree
  LiteRTModel(path, threads=None) .tasks, .config, .path, .predict(images, batch_size=256, views=1);
                                  CheckpointError naming the file if LiteRT cannot read it
  load_model(session, checkpoint, engine=None) -> (net, the file read): model.load_model's, or a
                                  LiteRTModel (session unused, may be None)
  session_for(checkpoint, engine=None)   a context: a TensorFlow graph and session to restore the
                                  checkpoint in (tf_setup.session_config()); None for a .tflite file
"""
import contextlib
import os
import threading

import numpy as np

import checkpoints
import config
import data_provider
import model
import tf_setup
from config import IMAGE_SIZE, NUM_CLASSES, TASK_NAMES, TASKS
from tf_setup import tf

ENGINES = ('tf', 'litert')
TFLITE_SUFFIX = '.tflite'
SIGNATURE = 'serving_default'  # export.SIGNATURE: the one signature the .tflite file keeps
INPUT = 'faces'  # export.INPUT


def choose_engine(checkpoint, engine=None):
    """'litert' for a .tflite file, 'tf' for anything else; engine, when given, must agree."""
    found = 'litert' if str(checkpoint).endswith(TFLITE_SUFFIX) else 'tf'
    if engine is not None and engine != found:
        raise checkpoints.CheckpointError(
            '%s: --engine %s runs %s' % (checkpoint, engine, 'a .tflite file (export.py --tflite makes one)'
                                         if engine == 'litert' else 'a checkpoint, not a .tflite file'))
    return found


class LiteRTModel(object):
    """A .tflite file of export.py --tflite, run by LiteRT's interpreter with XNNPACK on `threads` cores."""

    def __init__(self, path, threads=None):
        from ai_edge_litert.interpreter import Interpreter  # here: importing this module loads no runtime

        if not os.path.isfile(path):
            raise checkpoints.CheckpointError('%s: file not found' % path)
        try:
            # LiteRT logs a line on stderr when it applies XNNPACK (the first allocation)
            with tf_setup.stderr_silenced():
                self._interpreter = Interpreter(model_path=path, num_threads=threads or os.cpu_count())
                self._interpreter.allocate_tensors()
            runner = self._interpreter.get_signature_runner(SIGNATURE)
        except (ValueError, RuntimeError) as err:
            raise checkpoints.CheckpointError('%s: not a readable .tflite model of export.py (%s)'
                                              % (path, str(err).strip().splitlines()[0])) from None
        inputs = runner.get_input_details()
        # tensor indexes, not the runner: it resizes and re-plans the tensors at every call (twice the time)
        self._outputs = {name: d['index'] for name, d in runner.get_output_details().items()}
        if list(inputs) != [INPUT] or not set(self._outputs) <= set(TASK_NAMES.values()):
            raise checkpoints.CheckpointError('%s: not a model of export.py (inputs %s, outputs %s)'
                                              % (path, ', '.join(inputs), ', '.join(self._outputs)))
        self._input, self._shape = inputs[INPUT]['index'], None
        self._lock = threading.Lock()  # one interpreter runs one batch at a time
        self.path = path
        self.tasks = tuple(t for t in TASKS if TASK_NAMES[t] in self._outputs)
        # The config.json export.py writes beside the file (its data_dir is evaluate.py's default).
        beside = os.path.join(os.path.dirname(path), checkpoints.CONFIG_FILE)
        self.config = (checkpoints.load_config(path) if os.path.isfile(beside) else
                       dict(config.DEFAULTS, tasks=[TASK_NAMES[t] for t in self.tasks]))

    def predict(self, images, batch_size=256, views=1):
        """Multitask_BKNet.predict's answer for uint8 faces [N, 48, 48]: {task: probabilities [N, classes]},
        averaged over `views` test-time views (data_provider.tta_views), batch_size faces a call."""
        images = np.asarray(images)
        if images.dtype != np.uint8:
            raise TypeError('%s takes uint8 faces, got %s' % (self.path, images.dtype))
        images = images.reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
        total = {t: np.zeros((len(images), NUM_CLASSES[t]), np.float64) for t in self.tasks}
        views = data_provider.tta_views(views)
        for flip, dy, dx in views:
            view = np.ascontiguousarray(data_provider.shift_faces(images[:, :, ::-1] if flip else images, dy, dx))
            for start in range(0, len(view), batch_size):
                probs = self._run(view[start:start + batch_size])
                for task in self.tasks:
                    total[task][start:start + batch_size] += probs[TASK_NAMES[task]]
        return {t: (p / len(views)).astype(np.float32) for t, p in total.items()}

    def _run(self, faces):
        """{output name: probabilities} of one batch; the tensors are re-planned only when its size changes."""
        with self._lock:
            if self._shape != faces.shape:
                self._interpreter.resize_tensor_input(self._input, faces.shape)
                self._interpreter.allocate_tensors()
                self._shape = faces.shape
            self._interpreter.set_tensor(self._input, faces)
            self._interpreter.invoke()
            return {name: self._interpreter.get_tensor(index) for name, index in self._outputs.items()}


def load_model(session, checkpoint, engine=None):
    """(net, the file read) of checkpoint: a LiteRTModel for a .tflite file, else model.load_model(session, ...)."""
    if choose_engine(checkpoint, engine) == 'litert':
        return LiteRTModel(checkpoint), checkpoint
    return model.load_model(session, checkpoint)


@contextlib.contextmanager
def session_for(checkpoint, engine=None):
    """A graph and session (tf_setup.session_config()) to restore checkpoint in; None for a .tflite
    file, which needs neither: TensorFlow is not even imported for it."""
    if choose_engine(checkpoint, engine) == 'litert':
        yield None
        return
    with tf.Graph().as_default() as graph, tf.Session(graph=graph, config=tf_setup.session_config()) as session:
        yield session
