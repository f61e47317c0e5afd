"""The three tasks, and the run's settings in one place: their defaults, help, checks and flags.

Public names:
  TASKS, SMILE, EMOTION, GENDER   task indexes as stored beside each sample (1, 2, 3)
  task_indexes(names)             task names ('smile', ...) -> their indexes, in TASKS order
  NUM_CLASSES, CLASS_NAMES, TASK_NAMES, LABEL_WIDTH
  IMAGE_SIZE                      faces are IMAGE_SIZE x IMAGE_SIZE grayscale
  SETTINGS                        (key, default, help) of every training / model setting
  DEFAULTS                        {key: default} of SETTINGS; every train.py flag overrides one
  CHOICES, RANGES, PATHS, OPTIONAL_PATHS   the values a setting may take: choices, a number's bounds, paths
  INVOCATION_KEYS, BEFORE_THE_KEY  keys config.json never keeps; what an older config.json meant by leaving one out
  resolve_config(cfg=None, **overrides) -> DEFAULTS with cfg and the overrides applied, checked (ValueError)
  resume_config(saved, overrides, where) -> a resumed run's config: saved + overrides, architecture kept
  saved_config(cfg)               what config.json keeps (not the one-command keys such as max_steps)
  from_saved(saved)               a config.json's content -> the resolved config it stands for
  ARCHITECTURE_KEYS               the keys a resumed run cannot change (its checkpoint's variables depend on them)
  add_flags(parser), overrides(args)   train.py's flags, generated from SETTINGS; the values they set
  flag_name(key)                  the flag of one setting ('--lr' for learning_rate)
  FLAG_NAMES, METAVARS, SHOWN_DEFAULTS, OFF_FLAGS   where a flag differs from --key-with-dashes and a plain value
"""
import math

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


# key, default, help (train.py's flag --key-with-dashes shows it with the default)
SETTINGS = (
    ('data_dir', 'data', 'data folder'),
    ('checkpoint_dir', 'checkpoints', 'checkpoint folder; a run resumes from the newest checkpoint in it'),
    ('epochs', 10, 'passes over the weighted mix of the three train sets'),
    ('batch_size', 128, 'faces per step, all tasks mixed'),
    ('optimizer', 'momentum', 'momentum is Nesterov with 0.9'),
    ('learning_rate', 0.01, 'initial learning rate'),
    ('lr_schedule', 'step', 'step: staircase decay; cosine: to zero over the run'),
    ('lr_decay_rate', 0.5, 'step schedule: multiply the rate by this ...'),
    ('lr_decay_epochs', 4, '... every this many epochs'),
    ('weight_decay', 5e-4, 'L2 factor on the weights'),
    ('keep_prob', 0.5, "dropout's keep probability in training"),
    ('augment', True, 'shift, flip and rotate the training faces'),
    ('aug_pad', 10, 'largest random shift of a training face, pixels'),
    ('random_erasing', 0.0, 'share of training faces with a random rectangle (2 to 25 percent of the face) '
                            'replaced by noise (Zhong et al.)'),
    ('tasks', ('smile', 'emotion', 'gender'), 'the heads to train: a single-task model has one'),
    ('task_weights', (1.0, 1.0, 1.0), 'copies of each train set per epoch, e.g. 5 1 1 to oversample GENKI-4K'),
    ('task_weighting', 'fixed', "how the heads' losses combine: fixed (a plain sum) or uncertainty (weights "
                                "learned as Kendall et al.'s log-variances)"),
    ('seed', 1234, "seed of each epoch's batch order and augmentation (the validation split has its own, fixed)"),
    ('validation_fraction', 0.1, 'share of the smile and gender train sets held out to judge epochs (emotion is '
                                 'judged on FER-2013 PublicTest; 0 judges all three on the public test split)'),
    ('ema_decay', 0.999, 'evaluate, keep and export a moving average of the weights with this decay; 0 = off'),
    ('label_smoothing', 0.0, 'emotion targets (1-e) one-hot + e/7'),
    ('gender_balance', 0.0, 'weight gender class c by n_c ** -this: 1 = class-balanced, 0 = plain'),
    ('gender_logit_bias', 0.0, 'added to the female logit when the model predicts (predict, evaluate, export), '
                               'not in training; the run prints the B of a class-balanced decision'),
    ('max_steps', 0, 'stop after this many global steps; for this command only, never saved in config.json'),
    ('keep_checkpoints', 3, "how many of the newest epoch checkpoints to keep (best/ is kept apart), e.g. every "
                            "epoch's for a later weight average"),
    ('bfloat16', False, "train convolutions and matmuls in bfloat16 (oneDNN's mixed precision): 2x faster on a "
                        "CPU with AMX, 1.5x faster to 0.6x as fast on AVX-512 BF16 ones without (measure: "
                        "benchmarks/bench_train.py --bf16), refused without AVX-512"),
    ('init_from', None, 'start a new run from these weights (a checkpoint folder or prefix, a weights.npz or the '
                        'folder holding one, such as pretrained/); ignored when --checkpoint-dir already holds a '
                        'checkpoint to resume'),
    ('distill_from', None, "a teacher model (paths as --init-from): each training face's target mixes its label "
                           "with the teacher's predictions, by --distill-weight"),
    ('distill_weight', 0.0, "the teacher's share of each target, (1 - W) one-hot + W teacher, at most 0.5"),
)
DEFAULTS = {key: default for key, default, _ in SETTINGS}

CHOICES = dict(optimizer=('momentum', 'adam'), lr_schedule=('step', 'cosine'), task_weighting=('fixed', 'uncertainty'),
               tasks=tuple(TASK_NAMES[t] for t in TASKS))
# key: (smallest, largest, smallest excluded?); None: no bound on that side
RANGES = dict(epochs=(1, None, False), batch_size=(1, None, False), keep_checkpoints=(1, None, False),
              max_steps=(0, None, False), aug_pad=(0, IMAGE_SIZE // 2, False), learning_rate=(0, None, False),
              lr_decay_rate=(0, None, True), lr_decay_epochs=(0, None, True), weight_decay=(0, None, False),
              keep_prob=(0, 1, True), validation_fraction=(0, 0.5, False), ema_decay=(0, 1, False),
              label_smoothing=(0, 1, False), gender_balance=(0, None, False),
              random_erasing=(0, 1, False), distill_weight=(0, 0.5, False))
PATHS = ('data_dir', 'checkpoint_dir')
OPTIONAL_PATHS = ('init_from', 'distill_from')
INVOCATION_KEYS = ('max_steps',)  # belong to one command, not to the run: never saved in config.json
ARCHITECTURE_KEYS = ('tasks', 'task_weighting')  # fix the variables a checkpoint holds: a resumed run keeps them
# What a config.json written before these keys existed meant by leaving them out.
BEFORE_THE_KEY = dict(validation_fraction=0.0, ema_decay=0.0)


# ----------------------------------------------------------------------------- merging and checking

def resolve_config(cfg=None, **overrides):
    """DEFAULTS, then cfg's entries, then the overrides; ValueError (one line) for an unknown key or a bad value."""
    resolved = dict(DEFAULTS)
    for source in (cfg or {}), overrides:
        unknown = set(source) - set(resolved)
        if unknown:
            raise ValueError('unknown config key(s): %s' % ', '.join(sorted(unknown)))
        resolved.update(source)
    for key in DEFAULTS:
        _check_value(key, resolved[key])
    _check_together(resolved)
    resolved['task_weights'] = [float(w) for w in resolved['task_weights']]
    resolved['tasks'] = [TASK_NAMES[t] for t in task_indexes(resolved['tasks'])]  # TASKS order
    return resolved


def resume_config(saved, overrides, where):
    """The config of a run resumed in `where`: its saved config with the overrides applied; ValueError if
    they change an ARCHITECTURE_KEYS entry (the checkpoint's variables depend on it)."""
    cfg = resolve_config(saved, **overrides)
    for key in ARCHITECTURE_KEYS:
        if cfg[key] != saved[key]:
            raise ValueError('%s was trained with %s %s; resuming it cannot change that to %s: use --fresh or '
                             'another --checkpoint-dir' % (where, key, _shown(saved[key]), _shown(cfg[key])))
    return cfg


def _shown(value):
    return ' '.join(value) if isinstance(value, list) else value


def saved_config(cfg):
    """What config.json keeps of a resolved config: all but the one-command keys such as max_steps."""
    return {k: v for k, v in cfg.items() if k not in INVOCATION_KEYS}


def from_saved(saved):
    """A config.json's content -> its resolved config. Older runs saved max_steps (a smoke run's cap must
    not stop every later run of the folder), and a run saved before a key existed trained without it."""
    if not isinstance(saved, dict):
        raise ValueError('expected a JSON object')
    saved = {k: v for k, v in saved.items() if k not in INVOCATION_KEYS}
    return resolve_config(dict(BEFORE_THE_KEY, **saved))


def _number(value, integer):
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        return False
    return math.isfinite(value)


def _expected(key, value):
    """What `key` must be, or None when value is fine."""
    default = DEFAULTS[key]
    if key == 'tasks':
        ok = (isinstance(value, (list, tuple)) and all(isinstance(n, str) and n in CHOICES[key] for n in value) and
              0 < len(value) == len(set(value)))
        return None if ok else 'a non-empty list of distinct names from %s' % ', '.join(CHOICES[key])
    if key in CHOICES:
        return None if value in CHOICES[key] else 'one of %s' % ', '.join(CHOICES[key])
    if key == 'task_weights':
        ok = (isinstance(value, (list, tuple)) and len(value) == len(TASKS) and
              all(_number(w, False) and w >= 0 for w in value) and any(value))
        return None if ok else '%d non-negative numbers, not all 0' % len(TASKS)
    if key in PATHS:
        return None if isinstance(value, str) and value != '' else 'a path'
    if key in OPTIONAL_PATHS:
        return None if value is None or (isinstance(value, str) and value != '') else 'a path or null'
    if isinstance(default, bool):
        return None if isinstance(value, bool) else 'true or false'
    return _expected_number(key, value, isinstance(default, int))


def _expected_number(key, value, integer):
    want = 'an integer' if integer else 'a number'
    if not _number(value, integer):
        return want
    if key not in RANGES:
        return None
    low, high, open_low = RANGES[key]
    if (value > low if open_low else value >= low) and (high is None or value <= high):
        return None
    return want + ' %s %s%s' % ('>' if open_low else '>=', low, '' if high is None else ' and <= %s' % high)


def _check_value(key, value):
    want = _expected(key, value)
    if want is not None:
        raise ValueError('%s must be %s, got %r' % (key, want, value))


def _check_together(cfg):
    if bool(cfg['distill_from']) != bool(cfg['distill_weight']):
        raise ValueError('distill_from and distill_weight go together (a teacher and its share above 0), got %r and %r'
                         % (cfg['distill_from'], cfg['distill_weight']))
    weights = dict(zip(CHOICES['tasks'], cfg['task_weights']))
    if not any(weights[name] for name in cfg['tasks']):
        raise ValueError('task_weights gives the tasks trained (%s) no samples: %r'
                         % (', '.join(cfg['tasks']), list(cfg['task_weights'])))


# ----------------------------------------------------------------------------- train.py's flags

# Where a flag differs from --key-with-dashes and a plain value of the default's type.
FLAG_NAMES = dict(learning_rate='--lr', bfloat16='--bf16')
METAVARS = dict(random_erasing='P', init_from='PATH', distill_from='PATH', distill_weight='W', gender_logit_bias='B',
                task_weights=tuple(name.upper() for name in CHOICES['tasks']))
SHOWN_DEFAULTS = dict(max_steps='no cap', bfloat16='float32', init_from='random initialisation',
                      distill_from='none')  # how a flag's help states a default that reads badly as a value
OFF_FLAGS = dict(augment=('--no-augment', 'train on the faces as they are'),
                 bfloat16=('--no-bf16', 'train in float32'))


def add_flags(parser):
    """One flag per SETTINGS entry, its help ending '(default: ...)'; each is None unless given (overrides())."""
    for key, default, text in SETTINGS:
        flag = flag_name(key)
        options = dict(dest=key, default=None, help='%s (default: %s)' % (text, _default_text(key).replace('%', '%%')))
        if isinstance(default, bool):
            parser.add_argument(flag, action='store_true', **options)
            off, off_help = OFF_FLAGS[key]
            parser.add_argument(off, dest=key, action='store_false', help=off_help)
            continue
        if isinstance(default, tuple):
            options['nargs'] = '+' if key in CHOICES else len(default)
        if key in CHOICES:
            options['choices'] = CHOICES[key]
        elif default is not None and not isinstance(default, str):
            options['type'] = type(default[0] if isinstance(default, tuple) else default)
        if key in METAVARS:
            options['metavar'] = METAVARS[key]
        parser.add_argument(flag, **options)


def flag_name(key):
    """The train.py flag that sets a setting: '--' + key with dashes, or its FLAG_NAMES entry."""
    return FLAG_NAMES.get(key, '--' + key.replace('_', '-'))


def _default_text(key):
    value = DEFAULTS[key]
    if key in SHOWN_DEFAULTS:
        return SHOWN_DEFAULTS[key]
    if isinstance(value, bool):
        return 'on' if value else 'off'
    if isinstance(value, tuple):
        return ' '.join(value if key in CHOICES else ('%g' % v for v in value))
    return str(value)


def overrides(args):
    """The settings the command line gave (add_flags' flags that are not None)."""
    return {key: value for key, value in vars(args).items() if key in DEFAULTS and value is not None}
