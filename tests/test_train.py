"""Training end to end: train.py's CLI, resume, interruption, divergence, and a demo run that learns."""
import glob
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import checkpoints
import config
import data_provider
import model
import tf_setup
import training
from config import TASKS

tf = tf_setup.import_tf()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENTRY_POINTS = ['train.py', 'evaluate.py', 'predict.py', 'export.py', 'prepare_data.py', 'benchmarks/bench_data.py',
                'benchmarks/bench_detect.py', 'benchmarks/bench_multitask.py', 'benchmarks/bench_recipe.py',
                'benchmarks/bench_train.py', 'benchmarks/bench_litert.py',
                'serve.py', 'benchmarks/bench_serve.py']


def _run_train(*args, **kwargs):
    return subprocess.run([sys.executable, 'train.py'] + list(args), cwd=ROOT, capture_output=True, text=True,
                          timeout=600, **kwargs)


def _progress(ckpt_dir):
    """(global step, [epochs done, steps into the epoch]) of the newest checkpoint."""
    reader = tf.train.NewCheckpointReader(tf.train.latest_checkpoint(ckpt_dir))
    return int(reader.get_tensor('global_step')), reader.get_tensor('progress').tolist()


@pytest.mark.slow
def test_demo_smoke_run_end_to_end(tmp_path):
    data_dir, ckpt_dir = str(tmp_path / 'data'), str(tmp_path / 'ckpt')
    result = _run_train('--demo', '--data-dir', data_dir, '--checkpoint-dir', ckpt_dir, '--max-steps', '3')
    assert result.returncode == 0, result.stderr
    assert 'Generating the demo data set' in result.stdout
    assert 'Created model with fresh parameters.' in result.stdout
    assert 'Stopped at step 3 (max_steps)' in result.stdout
    assert _progress(ckpt_dir) == (3, [0, 3])
    with open(os.path.join(ckpt_dir, checkpoints.CONFIG_FILE)) as f:
        saved = json.load(f)
    assert (saved['data_dir'], saved['batch_size']) == (data_dir, 64)
    assert 'max_steps' not in saved  # the cap was for that command: a later plain run trains on


@pytest.mark.slow
def test_a_smoke_runs_cap_does_not_stop_the_next_run(demo_dir, tmp_path, capsys):
    import train
    ckpt_dir = str(tmp_path)
    common = ['--data-dir', demo_dir, '--checkpoint-dir', ckpt_dir, '--quiet']
    # a quarter of each train set per epoch: whole epochs of ~17 steps
    assert train.main(common + ['--max-steps', '2', '--batch-size', '64', '--epochs', '1', '--no-augment',
                                '--task-weights', '0.25', '0.25', '0.25']) == 0
    assert train.main(common) == 0  # no flags: the saved config, no cap
    saved = checkpoints.load_config(ckpt_dir)
    steps_per_epoch = data_provider.Dataset('train', 64, demo_dir, validation_fraction=saved['validation_fraction'],
                                            task_weights=saved['task_weights'], verbose=False).steps_per_epoch()
    assert _progress(ckpt_dir) == (steps_per_epoch, [1, 0])
    assert (saved['batch_size'], saved['epochs'], saved['augment'], saved['task_weights']) == (64, 1, False, [0.25] * 3)
    assert 'Reading model parameters from %s' % os.path.join(ckpt_dir, 'model.ckpt-2') in capsys.readouterr().out
    # resumed again with a new flag: the saved config, that flag overriding it
    assert train.main(common + ['--epochs', '2', '--max-steps', str(steps_per_epoch + 1)]) == 0
    saved = checkpoints.load_config(ckpt_dir)
    assert (saved['batch_size'], saved['epochs'], saved['augment']) == (64, 2, False)
    assert _progress(ckpt_dir) == (steps_per_epoch + 1, [1, 1])


@pytest.mark.slow
def test_missing_data_is_one_line_naming_the_file(tmp_path):
    result = _run_train('--data-dir', str(tmp_path / 'nowhere'), '--checkpoint-dir', str(tmp_path / 'ckpt'))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: ')
    assert os.path.join('nowhere', 'smile_data', 'train.npy') in lines[0] and 'prepare_data.py' in lines[0]


def test_flags_set_the_config_they_name():
    import train
    args = train.parse_args(['--epochs', '14', '--lr', '0.02', '--lr-schedule', 'cosine', '--aug-pad', '6',
                             '--task-weights', '3', '1', '0.5', '--optimizer', 'adam', '--no-augment',
                             '--random-erasing', '0.25', '--bf16'])
    assert train.config_overrides(args) == dict(epochs=14, learning_rate=0.02, lr_schedule='cosine', aug_pad=6,
                                                task_weights=[3.0, 1.0, 0.5], optimizer='adam', augment=False,
                                                random_erasing=0.25, bfloat16=True)
    assert train.config_overrides(train.parse_args(['--no-bf16'])) == dict(bfloat16=False)
    assert train.config_overrides(train.parse_args(['--gender-logit-bias', '-0.25'])) == dict(gender_logit_bias=-0.25)
    demo = train.config_overrides(train.parse_args(['--demo', '--epochs', '2']))
    assert demo == dict(data_dir=train.DEMO_DATA_DIR, checkpoint_dir=train.DEMO_CHECKPOINT_DIR, epochs=2,
                        batch_size=train.DEMO_BATCH_SIZE, augment=False)


def test_every_flag_takes_its_default_written_out_on_the_command_line():
    """Each setting's default, typed as a user types it, parses and passes the config's checks: a flag whose
    parser and check disagree (--lr-decay-epochs 4 once parsed 4.0, which the check refused) cannot be used."""
    import train
    shown = {'tasks': ['smile', 'emotion', 'gender'], 'task_weights': ['1', '1', '1'], 'data_dir': ['elsewhere'],
             'init_from': ['pretrained'], 'distill_from': ['pretrained'], 'distill_weight': ['0.5']}
    for key, default, _ in config.SETTINGS:
        if isinstance(default, bool):
            continue  # --x / --no-x: test_flags_set_the_config_they_name
        words = shown.get(key, [str(default)])
        overrides = train.config_overrides(train.parse_args([config.flag_name(key)] + words))
        if key == 'distill_from':
            overrides['distill_weight'] = 0.5  # the two go together
        if key == 'distill_weight':
            overrides['distill_from'] = 'pretrained'
        resolved = config.resolve_config(**overrides)
        assert str(resolved[key]) == str(overrides[key]) or resolved[key] == list(overrides[key]), key


def test_help_states_every_value_flags_default(capsys):
    import train
    with pytest.raises(SystemExit) as exit_info:
        train.parse_args(['--help'])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    # One block per option; an option that takes a value shows a metavar (EPOCHS, {step,cosine}, P).
    blocks = re.split(r'\n(?=  -)', help_text.split('options:')[1])
    takes_value = [b for b in blocks if re.match(r'\s+--[\w-]+ [A-Z{]', b)]
    assert len(takes_value) >= 20
    for block in takes_value:
        assert '(default: ' in ' '.join(block.split()), block
    assert '(default: %s)' % config.DEFAULTS['learning_rate'] in help_text


@pytest.mark.parametrize('script', ENTRY_POINTS)
def test_every_entry_points_help_prints(script):
    # argparse %-formats help strings: a stray percent sign turns --help into a traceback.
    result = subprocess.run([sys.executable, script, '--help'], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith('usage: ') and result.stderr == ''



# Run in a subprocess before a test's own code: parser_of(script) is the ArgumentParser that script's main()
# builds, caught as it parses (the script runs as `python script` would run it, up to that point).
CATCH_PARSER = textwrap.dedent("""
    import argparse, contextlib, io, json, os, runpy, sys

    class Parsed(Exception):
        pass

    def parser_of(script):
        caught = []
        def catch(parser, *args, **kwargs):
            caught.append(parser)
            raise Parsed
        parse_args, argparse.ArgumentParser.parse_args = argparse.ArgumentParser.parse_args, catch
        sys.argv = [script]
        sys.path.insert(0, os.path.dirname(os.path.abspath(script)))  # as `python script` sees its folder
        try:
            runpy.run_path(script, run_name='__main__')
        except Parsed:
            pass
        finally:
            argparse.ArgumentParser.parse_args = parse_args
        assert len(caught) == 1, script
        return caught[0]
""")


def _with_parsers(code, *args):
    """-> what code prints last, as JSON, after CATCH_PARSER; args go to its sys.argv[1:]."""
    result = subprocess.run([sys.executable, '-c', CATCH_PARSER + textwrap.dedent(code)] + list(args), cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_every_value_flag_with_a_default_states_it():
    """A flag that takes a value and has a default says it in its help, as pytorch/examples' flags do."""
    silent = _with_parsers("""
        silent = []
        for script in sys.argv[1:]:
            silent += ['%s %s' % (script, a.option_strings[-1]) for a in parser_of(script)._actions
                       if a.option_strings and a.nargs != 0 and a.default not in (None, argparse.SUPPRESS)
                       and '(default: ' not in (a.help or '')]
        print(json.dumps(silent))
    """, *ENTRY_POINTS)
    assert silent == []


def test_every_documented_command_parses():
    """The `python script ...` commands of README.md and docs/*.md (comments cut, shell variables filled in)
    are accepted by their script's parser: a renamed or removed flag cannot linger in the documentation."""
    readme = ''
    for path in [os.path.join(ROOT, 'README.md')] + sorted(glob.glob(os.path.join(ROOT, 'docs', '*.md'))):
        with open(path) as f:
            readme += f.read() + '\n'
    variables = dict(re.findall(r'^(\w+)="([^"]*)"$', readme, re.M), task='smile')
    commands = []
    pattern = r'(?:^|&& |; do |`)!?python ((?:benchmarks/)?\w+\.py)\b([^#`\n]*?)(?:;|\s*#|`|$)'  # blocks and inline
    for script, args in re.findall(pattern, readme, re.M):
        args = re.sub(r'\$(\w+)', lambda m: variables[m.group(1)], args)
        commands.append([script] + shlex.split(args))
    assert len(commands) >= 70 and {c[0] for c in commands} == set(ENTRY_POINTS)
    refused = _with_parsers("""
        refused, parsers = [], {}
        for script, *args in json.loads(sys.argv[1]):
            if script not in parsers:  # setdefault would rerun the script for every command
                parsers[script] = parser_of(script)
            parser = parsers[script]
            with contextlib.redirect_stderr(io.StringIO()) as err, contextlib.redirect_stdout(io.StringIO()):
                try:
                    parser.parse_args(args)
                except SystemExit as exit_:
                    if exit_.code:  # 0: -h printed the help
                        refused.append(' '.join([script] + args) + ': ' + err.getvalue().strip().splitlines()[-1])
        print(json.dumps(refused))
    """, json.dumps(commands))
    assert refused == []


def _train(demo_dir, ckpt_dir, **overrides):
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as session:
        net = model.Multitask_BKNet(session, data_dir=demo_dir, checkpoint_dir=ckpt_dir, batch_size=64,
                                    verbose=False, **overrides)
        return net.train()


@pytest.mark.slow
def test_resume_continues_at_the_saved_step(demo_dir, tmp_path, capsys):
    ckpt_dir = str(tmp_path)
    _train(demo_dir, ckpt_dir, max_steps=4, keep_checkpoints=1)
    assert _progress(ckpt_dir) == (4, [0, 4])
    _train(demo_dir, ckpt_dir, max_steps=7, keep_checkpoints=1)
    out = capsys.readouterr().out
    assert 'Reading model parameters from %s' % os.path.join(ckpt_dir, 'model.ckpt-4') in out
    assert _progress(ckpt_dir) == (7, [0, 7])
    assert sorted(f for f in os.listdir(ckpt_dir) if f.endswith('.index')) == ['model.ckpt-7.index']  # 4 rotated out


@pytest.mark.slow
def test_init_from_starts_a_new_run_from_other_weights(demo_dir, demo_checkpoint, tmp_path, capsys):
    """--init-from copies the weights (not the step or optimizer); resuming that run ignores it."""
    ckpt_dir = str(tmp_path)
    _train(demo_dir, ckpt_dir, init_from=demo_checkpoint, learning_rate=0.0, max_steps=1)
    source = tf.train.NewCheckpointReader(tf.train.latest_checkpoint(demo_checkpoint))
    started = tf.train.NewCheckpointReader(tf.train.latest_checkpoint(ckpt_dir))
    weights = [n for n in source.get_variable_to_shape_map() if n.startswith(('trunk/', 'head_'))
               and n.endswith(('/weights', '/biases', '/beta', '/gamma'))]
    assert len(weights) > 40
    for name in weights:  # a zero learning rate leaves them as they were copied
        np.testing.assert_array_equal(started.get_tensor(name), source.get_tensor(name), err_msg=name)
    assert _progress(ckpt_dir) == (1, [0, 1])
    assert int(source.get_tensor('global_step')) > 1
    assert checkpoints.load_config(ckpt_dir)['init_from'] == demo_checkpoint
    _train(demo_dir, ckpt_dir, init_from=demo_checkpoint, max_steps=2)
    out = capsys.readouterr().out
    assert out.count('Initialized model weights from %s' % tf.train.latest_checkpoint(demo_checkpoint)) == 1
    assert 'Reading model parameters from %s' % os.path.join(ckpt_dir, 'model.ckpt-1') in out
    assert _progress(ckpt_dir) == (2, [0, 2])


@pytest.mark.slow
def test_diverging_loss_stops_without_saving(demo_dir, tmp_path):
    ckpt_dir = str(tmp_path)
    _train(demo_dir, ckpt_dir, max_steps=2)
    with pytest.raises(training.TrainingDiverged, match=r'loss became (nan|inf) at step \d+.*model\.ckpt-2'):
        _train(demo_dir, ckpt_dir, learning_rate=1e30, max_steps=50)
    assert _progress(ckpt_dir) == (2, [0, 2])


def _start_train(*args):
    return subprocess.Popen([sys.executable, '-u', 'train.py'] + list(args), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _wait_for_line(proc, prefix, timeout):
    """Lines read until one starts with prefix; a reader thread, so a silent process cannot hang the test."""
    found, lines = threading.Event(), []

    def read():
        for line in proc.stdout:
            lines.append(line)
            if line.startswith(prefix):
                found.set()
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert found.wait(timeout), 'no line starting with %r in %d s:\n%s' % (prefix, timeout, ''.join(lines))
    return reader, lines


@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGINT])
@pytest.mark.slow
def test_a_signal_mid_epoch_saves_then_exits_non_zero(demo_dir, tmp_path, sig):
    ckpt_dir = str(tmp_path / 'ckpt')
    proc = _start_train('--data-dir', demo_dir, '--checkpoint-dir', ckpt_dir, '--batch-size', '8', '--epochs', '1')
    try:
        reader, lines = _wait_for_line(proc, 'Epoch:', timeout=300)
        time.sleep(4)  # some steps into the epoch (one is ~50 ms; the epoch takes ~500)
        proc.send_signal(sig)
        proc.wait(timeout=120)
        reader.join(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = ''.join(lines)
    assert proc.returncode == 128 + sig, out
    step, progress = _progress(ckpt_dir)
    assert step > 0 and 'Stopped at step %d (%s); saved' % (step, sig.name) in out
    assert progress == [0, step]


def test_ctrl_c_during_start_up_is_one_line_and_writes_nothing(tmp_path):
    ckpt_dir = tmp_path / 'ckpt'
    proc = subprocess.Popen([sys.executable, 'train.py', '--demo', '--data-dir', str(tmp_path / 'data'),
                             '--checkpoint-dir', str(ckpt_dir)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)  # inside the TensorFlow import, which takes several seconds
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert 'Interrupted before training started; nothing was saved' in err and 'Traceback' not in err
    assert not ckpt_dir.exists()


@pytest.mark.parametrize('flags, expected', [
    (['--batch-size', '0'], 'error: batch_size must be an integer >= 1, got 0'),
    (['--keep-prob', '1.5'], 'error: keep_prob must be a number > 0 and <= 1, got 1.5'),
])
def test_bad_flag_values_are_one_line(demo_dir, tmp_path, capsys, flags, expected):
    import train
    assert train.main(['--data-dir', demo_dir, '--checkpoint-dir', str(tmp_path / 'ckpt')] + flags) == 2
    assert capsys.readouterr().err.strip() == expected
    assert not (tmp_path / 'ckpt').exists()


@pytest.mark.slow
def test_bad_init_from_is_one_line_and_leaves_no_run_folder(demo_dir, tmp_path, capsys):
    import train
    text = tmp_path / 'weights.npz'
    text.write_text('not weights\n')
    for given, expected in ((str(tmp_path / 'absent'), 'checkpoint not found'), (str(text), 'not an .npz archive')):
        assert train.main(['--data-dir', demo_dir, '--checkpoint-dir', str(tmp_path / 'ckpt'), '--init-from', given,
                           '--max-steps', '1', '--quiet']) == 2
        assert capsys.readouterr().err.strip().startswith('error: %s: %s' % (given, expected))
        assert not (tmp_path / 'ckpt').exists()


@pytest.mark.slow
def test_a_bad_teacher_is_one_line_and_leaves_no_run_folder(demo_dir, tmp_path, capsys):
    import train
    emotion_only = str(tmp_path / 'emotion_only')
    _train(demo_dir, emotion_only, tasks=['emotion'], max_steps=1)
    for given, expected in ((str(tmp_path / 'absent'), 'checkpoint not found'),
                            (emotion_only, 'the teacher has no smile or gender head')):
        assert train.main(['--data-dir', demo_dir, '--checkpoint-dir', str(tmp_path / 'ckpt'), '--distill-from', given,
                           '--distill-weight', '0.3', '--max-steps', '1', '--quiet']) == 2
        assert capsys.readouterr().err.strip().startswith('error: %s: %s' % (given, expected))
        assert not (tmp_path / 'ckpt').exists()


def test_cpu_flags_reads_linux_cpuinfo(tmp_path):
    cpuinfo = tmp_path / 'cpuinfo'
    cpuinfo.write_text('processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx avx2 fma\n\n'
                       'processor\t: 1\nflags\t\t: fpu sse2 avx avx2 fma\n')
    assert tf_setup.cpu_flags(str(cpuinfo)) == {'fpu', 'sse2', 'avx', 'avx2', 'fma'}
    assert tf_setup.cpu_flags(str(tmp_path / 'absent')) is None


def test_bf16_is_refused_in_one_line_on_a_cpu_without_avx512(demo_dir, tmp_path, capsys, monkeypatch):
    import train
    monkeypatch.setattr(tf_setup, 'cpu_flags', lambda: {'sse2', 'avx', 'avx2', 'fma'})
    # --max-steps 1: were it not refused, the run would end at once and fail below, not crawl for an hour
    assert train.main(['--data-dir', demo_dir, '--checkpoint-dir', str(tmp_path / 'ckpt'), '--bf16',
                       '--max-steps', '1']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: --bf16 needs a CPU with AVX-512'), err
    assert not (tmp_path / 'ckpt').exists()
    monkeypatch.setattr(tf_setup, 'cpu_flags', lambda: {'avx2', 'avx512f', 'avx512_bf16'})
    assert train._bfloat16_refusal() is None
    monkeypatch.setattr(tf_setup, 'cpu_flags', lambda: None)  # not Linux: nothing to go by
    assert train._bfloat16_refusal() is None


@pytest.mark.slow
def test_a_nan_loss_from_the_cli_is_one_line_and_exit_1(demo_dir, tmp_path, capsys):
    import train
    ckpt_dir = str(tmp_path)
    code = train.main(['--data-dir', demo_dir, '--checkpoint-dir', ckpt_dir, '--lr', '1e30', '--max-steps', '50',
                       '--quiet'])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith('error: loss became '), err
    assert checkpoints.find_checkpoints(ckpt_dir) == []


@pytest.mark.parametrize('task, bad', [(config.EMOTION, -1), (config.SMILE, 5)])
def test_out_of_range_labels_stop_training_before_anything_is_written(demo_dir, tmp_path, capsys, task, bad):
    import data_utils
    import train
    data_dir = str(tmp_path / 'data')
    shutil.copytree(demo_dir, data_dir)
    path = data_utils.split_path(data_dir, task, 'train')
    records = np.load(path)
    records['label'][[3, 8]] = bad
    np.save(path, records)
    ckpt_dir = tmp_path / 'ckpt'
    assert train.main(['--data-dir', data_dir, '--checkpoint-dir', str(ckpt_dir), '--quiet']) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('error: %s: 2 %s label(s) out of range 0..%d, e.g. %d'
                          % (path, config.TASK_NAMES[task], config.NUM_CLASSES[task] - 1, bad)), err
    assert not ckpt_dir.exists()


@pytest.mark.slow
def test_each_epoch_prints_validation_and_best_keeps_the_best_epoch(demo_dir, tmp_path, capsys):
    """best/ holds the epoch of the best mean validation accuracy, even when a resumed run's later epoch is worse."""
    ckpt_dir = str(tmp_path)
    for epochs, learning_rate in ((3, 0.05), (4, 3.0)):  # 3 epochs, then one more at a rate that wrecks the network
        with tf.Graph().as_default() as graph, tf.Session(graph=graph) as session:
            net = model.Multitask_BKNet(session, data_dir=demo_dir, checkpoint_dir=ckpt_dir, batch_size=64,
                                        epochs=epochs, augment=False, learning_rate=learning_rate, keep_checkpoints=1,
                                        task_weights=(0.25, 0.25, 0.25))  # short epochs: ~17 steps
            net.train()
    out = capsys.readouterr().out
    printed = [[float(x) for x in re.findall(r'_acc: ([0-9.]+)', line)]
               for line in out.splitlines() if line.startswith('validation ')]
    assert len(printed) == 4 and all(len(p) == 3 for p in printed), out
    best_epoch = int(np.argmax([np.mean(p) for p in printed])) + 1
    assert best_epoch < 4, out  # the last epoch is not the best, so keeping the last would fail below
    with open(os.path.join(ckpt_dir, 'best', 'best.json')) as f:
        best = json.load(f)
    assert best['epoch'] == best_epoch and best['data'] == 'validation'
    assert [round(best['accuracy'][n], 4) for n in ('smile', 'emotion', 'gender')] == printed[best_epoch - 1]
    # best/ holds exactly that epoch's checkpoint, and its weights are the ones evaluated then
    steps = int(re.search(r'model\.ckpt-(\d+)', out).group(1))  # the first epoch's end
    assert [os.path.basename(p) for p in checkpoints.find_checkpoints(os.path.join(ckpt_dir, 'best'))] == [
        'model.ckpt-%d' % (steps * best_epoch)]
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as session:
        net, _ = model.load_model(session, os.path.join(ckpt_dir, 'best'))
        result = net.evaluate(data_provider.Dataset('validation', 256, demo_dir, verbose=False))
    assert [round(result[t]['correct'] / result[t]['count'], 4) for t in TASKS] == printed[best_epoch - 1]
    assert len(os.listdir(os.path.join(ckpt_dir, 'logs'))) == 2  # TensorBoard events, one file for each run


@pytest.mark.slow
def test_init_from_the_shipped_model(demo_dir, tmp_path):
    if not os.path.isfile(os.path.join(checkpoints.PRETRAINED_DIR, checkpoints.WEIGHTS_FILE)):
        pytest.skip('this checkout ships no pretrained/weights.npz')
    ckpt_dir = str(tmp_path)
    _train(demo_dir, ckpt_dir, init_from=checkpoints.PRETRAINED_DIR, learning_rate=0.0, max_steps=1)
    started = tf.train.load_checkpoint(checkpoints.find_checkpoints(ckpt_dir)[0])
    with np.load(os.path.join(checkpoints.PRETRAINED_DIR, checkpoints.WEIGHTS_FILE)) as shipped:
        names = [n for n in shipped.files if not n.endswith(('moving_mean', 'moving_variance'))]
        assert len(names) > 40
        for name in names:  # lr 0: trainable weights exactly as shipped (float16 -> float32)
            np.testing.assert_array_equal(started.get_tensor(name), shipped[name].astype(np.float32), err_msg=name)


def test_demo_training_beats_chance_on_every_task(demo_dir, demo_checkpoint):
    """The shared demo run (3 epochs) is clearly above chance (0.5, 0.14, 0.5) on held-out faces."""
    test_set = data_provider.Dataset('public_test', 256, demo_dir, verbose=False)
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as session:
        net, _ = model.load_model(session, demo_checkpoint)
        result = net.evaluate(test_set)
    accuracy = {t: result[t]['correct'] / result[t]['count'] for t in TASKS}
    assert accuracy[config.SMILE] > 0.8 and accuracy[config.GENDER] > 0.8, accuracy
    assert accuracy[config.EMOTION] > 0.4, accuracy


def test_a_second_run_in_a_folder_being_trained_in_is_one_line_naming_the_process(demo_dir, tmp_path, capsys):
    """While a run holds its folder, another train.py there stops in one line and writes nothing; killed
    with SIGKILL, the holder leaves no stale lock (the OS lets go of it)."""
    import train
    ckpt_dir = str(tmp_path / 'run')
    holder = subprocess.Popen([sys.executable, '-c', 'import sys, time, training\n'
                               'with training.RunFolder(sys.argv[1]):\n    time.sleep(300)', ckpt_dir], cwd=ROOT)
    lock = os.path.join(ckpt_dir, checkpoints.LOCK_FILE)
    try:
        deadline = time.time() + 120
        while not (os.path.isfile(lock) and open(lock).read().strip()) and time.time() < deadline:
            time.sleep(0.1)
        assert open(lock).read().strip() == str(holder.pid)
        assert train.main(['--data-dir', demo_dir, '--checkpoint-dir', ckpt_dir, '--max-steps', '1', '--quiet']) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == ['error: %s: process %d is training in this folder; wait for it to end or choose another '
                       '--checkpoint-dir' % (ckpt_dir, holder.pid)]
        assert os.listdir(ckpt_dir) == [checkpoints.LOCK_FILE]
    finally:
        holder.kill()
        holder.wait(timeout=60)
    with training.RunFolder(ckpt_dir):  # kill -9 left no lock behind
        assert open(lock).read().strip() == str(os.getpid())
