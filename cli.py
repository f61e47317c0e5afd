"""What the command-line scripts share: their start, their parser, the --checkpoint flag and the error line.

Public names:
  start(onednn=None, message='interrupted')   a script's first call: Ctrl-C exits in one line from now on,
                                  and the script decides oneDNN before TensorFlow loads
  exit_on_interrupt(message)      Ctrl-C exits with 130 and one line instead of a traceback
  docstring_parser(doc, examples) an ArgumentParser whose help is a script's module docstring
  add_checkpoint_argument(parser) the --checkpoint flag of evaluate.py, predict.py and export.py
  error(message, code=2)          print 'error: message' on stderr and return code (a main's return value)
"""
import argparse
import atexit
import signal
import sys

import config
import tf_setup


def start(onednn=None, message='interrupted'):
    """Call it under `if __name__ == '__main__':` before the slow imports: from then on Ctrl-C exits
    with one line, and onednn (True/False) is this command's choice for TensorFlow (see tf_setup.import_tf)."""
    exit_on_interrupt(message)
    if onednn is not None:
        tf_setup.choose_onednn(onednn)


def exit_on_interrupt(message='interrupted'):
    """From now on Ctrl-C exits with 128 + SIGINT and `message` as the last line on stderr, no traceback.

    SystemExit runs finally blocks and context managers on its way out, so unfinished output is
    removed; a second Ctrl-C is ignored so it cannot cut that clean-up short.
    """
    def handler(signum, frame):
        signal.signal(signum, signal.SIG_IGN)
        atexit.register(print, message, file=sys.stderr)  # at exit: import_tf silences stderr while TF loads
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGINT, handler)


def docstring_parser(doc, examples):
    """An ArgumentParser described by doc's first paragraph, with its next `examples` paragraphs as the epilog."""
    paragraphs = doc.split('\n\n')
    return argparse.ArgumentParser(description=paragraphs[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                   epilog='\n\n'.join(paragraphs[1:1 + examples]))


def add_checkpoint_argument(parser):
    """The --checkpoint flag that evaluate.py, predict.py and export.py share."""
    import checkpoints  # here: importing cli stays light (NumPy and all), as it comes before start()
    parser.add_argument('--checkpoint', default=checkpoints.default_checkpoint(),
                        help='checkpoint prefix, folder (its newest checkpoint or %s), weights .npz or, for evaluate.py '
                        'and predict.py, a .tflite file of export.py --tflite (default: '
                        'pretrained/ if the repo has it, else %s)' % (checkpoints.WEIGHTS_FILE,
                                                                      config.DEFAULTS['checkpoint_dir']))


def error(message, code=2):
    """Print the one line a script ends with when it cannot go on; -> code, for main() to return."""
    print('error: %s' % message, file=sys.stderr)
    return code
