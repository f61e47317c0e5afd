"""The notebooks: committed without outputs, the student one generated from the solution, all run headless.

The run tests write everything (demo data, checkpoints, reports) into pytest's temp folders: each
notebook's `parameters` cell is replaced by one pointing there (nbclient does no papermill injection).
practice.ipynb (the solution) generates its own demo data, passes every check cell and trains 30
steps (~1-1.5 min); practice_student.ipynb, with its blanks, fails every check cell with its own
one-line message (~20 s). beyond.ipynb reads the shared demo data set and a copy of the shared
3-epoch demo checkpoint (conftest), ~15 s once those exist. The checks themselves are also run
in-process on wrong versions of the solution's functions, each of which they must reject.
"""
import ast
import glob
import importlib.util
import json
import os
import re
import shutil
import sys

import ipykernel  # noqa: F401  (the kernel the notebooks run in: requirements.txt lists all three)
import nbclient
import nbformat
import numpy as np
import pytest

import tf_setup

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK_DIR = os.path.join(ROOT, 'notebooks')
PRACTICE = os.path.join(NOTEBOOK_DIR, 'practice.ipynb')
STUDENT = os.path.join(NOTEBOOK_DIR, 'practice_student.ipynb')
BEYOND = os.path.join(NOTEBOOK_DIR, 'beyond.ipynb')
NOTEBOOKS = sorted(glob.glob(os.path.join(NOTEBOOK_DIR, '*.ipynb')))
PRACTICE_PARAMETERS = {'DATA_DIR', 'USE_DEMO_IF_MISSING', 'CHECKPOINT_DIR', 'EPOCHS', 'MAX_STEPS', 'BATCH_SIZE'}
# The handout's functions, each a solution cell followed by the check cell that grades it.
GRADED = ('get_one_hot_vector', 'convert_data_format', 'gen', '_define_input', '_build_model', '_define_loss',
          'train', 'evaluate_test_sets')
KERNEL_NAME = 'bknet-test-python3'
CELL_TIMEOUT = 600  # seconds; the whole practice notebook takes ~1-2 min on 2 cores


def load_make_student():
    spec = importlib.util.spec_from_file_location('make_student', os.path.join(NOTEBOOK_DIR, 'make_student.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_student = load_make_student()


def read(path):
    return nbformat.read(path, as_version=4)


def parameters_cell(nb):
    cells = [c for c in nb.cells if 'parameters' in c.metadata.get('tags', [])]
    assert len(cells) == 1, 'expected exactly one cell tagged "parameters", found %d' % len(cells)
    return cells[0]


def assigned_names(source):
    return {t.id for node in ast.parse(source).body if isinstance(node, ast.Assign)
            for t in node.targets if isinstance(t, ast.Name)}


def inject_parameters(nb, **params):
    """Replace the parameters cell's source by `NAME = value` lines (what papermill would add)."""
    cell = parameters_cell(nb)
    assert set(params) == assigned_names(cell.source), 'the notebook parameters changed: update this test'
    cell.source = '\n'.join('%s = %r' % item for item in sorted(params.items()))


def cell_text(cell):
    """All text a code cell printed (streams and text results)."""
    parts = []
    for out in cell.get('outputs', []):
        if out.output_type == 'stream':
            parts.append(out.text)
        elif out.output_type in ('execute_result', 'display_data'):
            parts.append(out.get('data', {}).get('text/plain', ''))
    return ''.join(parts)


def errors(cell):
    return [out for out in cell.get('outputs', []) if out.output_type == 'error']


def find_cell(nb, snippet):
    cells = [c for c in nb.cells if c.cell_type == 'code' and snippet in c.source]
    assert len(cells) == 1, 'expected one code cell containing %r, found %d' % (snippet, len(cells))
    return cells[0]


def cell_by_id(nb, cell_id):
    cells = [c for c in nb.cells if c.get('id') == cell_id]
    assert len(cells) == 1, 'expected one cell with id %r, found %d' % (cell_id, len(cells))
    return cells[0]


def grade_cells(nb):
    return [c for c in nb.cells if c.metadata.get('nbgrader', {}).get('grade')]


def check_id(name):
    """The id (and nbgrader grade_id) of the cell checking the handout's function `name`."""
    return 'check_' + name.lstrip('_')


@pytest.fixture
def kernel(tmp_path, monkeypatch):
    """A kernelspec that runs ipykernel in this very interpreter, found through JUPYTER_PATH.

    The installed 'python3' spec says just `python`, which may be another interpreter on PATH
    (or be missing in CI); this one cannot be.
    """
    spec_dir = tmp_path / 'jupyter' / 'kernels' / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    (spec_dir / 'kernel.json').write_text(json.dumps({
        'argv': [sys.executable, '-m', 'ipykernel_launcher', '-f', '{connection_file}'],
        'display_name': 'Python 3 (test)', 'language': 'python'}))
    monkeypatch.setenv('JUPYTER_PATH', str(tmp_path / 'jupyter'))
    monkeypatch.setenv('IPYTHONDIR', str(tmp_path / 'ipython'))  # no history / profile in the user's home
    return KERNEL_NAME


def client_for(nb, kernel, allow_errors=False):
    # cwd = the repo root, as the notebook's first cell makes it when started in notebooks/
    return nbclient.NotebookClient(nb, kernel_name=kernel, timeout=CELL_TIMEOUT, allow_errors=allow_errors,
                                   resources={'metadata': {'path': ROOT}})


# ----------------------------------------------------------------------------- committed state

@pytest.mark.parametrize('path', NOTEBOOKS, ids=[os.path.basename(p) for p in NOTEBOOKS])
def test_committed_notebook_is_clean(path):
    nb = read(path)
    nbformat.validate(nb)
    assert nb.metadata.get('kernelspec', {}).get('name') == 'python3'
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == 'code':
            assert cell.outputs == [], 'cell %d of %s has outputs: clear them before committing' % (i, path)
            assert cell.execution_count is None, 'cell %d of %s has an execution count' % (i, path)


@pytest.mark.parametrize('path', [PRACTICE, STUDENT], ids=['solution', 'student'])
def test_practice_notebooks_follow_the_handout(path):
    assert path in NOTEBOOKS
    nb = read(path)
    assert assigned_names(parameters_cell(nb).source) == PRACTICE_PARAMETERS
    text = '\n'.join(c.source for c in nb.cells if c.cell_type == 'markdown')
    for heading in ('## Phần 1: Dataset and Data provider', '## Phần 2: Định nghĩa mô hình và huấn luyện',
                    '## Bài tập về nhà'):
        assert heading in text
    # Colab: the first code cell clones the repository from its one URL parameter, then installs.
    setup = next(c for c in nb.cells if c.cell_type == 'code')
    assert 'REPO_URL' in assigned_names(setup.source.replace('%pip', '#').replace('!git', '#'))
    assert re.search(r'^ *!git clone .*\{REPO_URL\}', setup.source, re.M)
    assert '%pip install -q -r requirements.txt' in setup.source


def test_each_handout_function_has_a_solution_cell_then_its_check():
    solution, student = read(PRACTICE), read(STUDENT)
    ids = [c.get('id') for c in solution.cells]
    for name in GRADED:
        blank = cell_by_id(student, name)
        meta = blank.metadata['nbgrader']
        assert (meta['solution'], meta['grade'], meta['grade_id'], meta['schema_version']) == (True, False, name, 3)
        assert re.search(r'^def %s\(' % name, blank.source, re.M), 'the signature stays for the student'
        assert re.search(r'^    # YOUR CODE HERE\n    raise NotImplementedError\(\)$', blank.source, re.M)
        assert make_student.BEGIN in cell_by_id(solution, name).source
        # The next code cell after the function (past the read-only cell plugging it in) grades it.
        following = [c for c in solution.cells[ids.index(name) + 1:] if c.cell_type == 'code']
        check = next(c for c in following if not c.metadata.get('nbgrader', {}).get('locked') or
                     c.metadata['nbgrader'].get('grade'))
        meta = check.metadata['nbgrader']
        assert (meta['grade'], meta['locked'], meta['solution'], meta['grade_id']) == (True, True, False,
                                                                                        check_id(name))
        assert "with checking('%s()'):" % name in check.source and meta['points'] > 0
    assert len(grade_cells(solution)) == len(GRADED)


def test_student_notebook_is_generated_from_the_solution():
    # What `python notebooks/make_student.py` writes, byte for byte (nbformat.write adds the last newline).
    expected = nbformat.writes(make_student.student_version(read(PRACTICE))) + '\n'
    with open(STUDENT, encoding='utf-8') as f:
        assert f.read() == expected, 'practice_student.ipynb is stale: run python notebooks/make_student.py'
    student = read(STUDENT)
    for cell in student.cells:
        assert make_student.BEGIN not in cell.source and make_student.END not in cell.source, cell.id
        meta = cell.metadata.get('nbgrader', {})
        if meta.get('grade') or meta.get('locked'):
            assert cell.metadata['editable'] is False and cell.metadata['deletable'] is False, cell.id


def _notebook(*cells):
    nb = nbformat.v4.new_notebook()
    for i, (source, nbgrader) in enumerate(cells):
        cell = nbformat.v4.new_code_cell(source, id='c%d' % i)
        if nbgrader:
            cell.metadata['nbgrader'] = dict(nbgrader, schema_version=3)
        cell.outputs = [nbformat.v4.new_output('stream', text='old output\n')]
        cell.execution_count = 3
        nb.cells.append(cell)
    return nb


SOLUTION_CELL = dict(solution=True, grade=False, locked=False, grade_id='f')
CHECK_CELL = dict(solution=False, grade=True, locked=True, grade_id='check_f', points=2)


def test_student_version_replaces_each_solution_region_by_the_stub():
    source = ('def f(x):\n    """Doc."""\n    y = 1\n    ### BEGIN SOLUTION\n    y += x\n    return y\n'
              '    ### END SOLUTION\n\n\n### BEGIN SOLUTION\nz = 2\n### END SOLUTION\nprint(f(z))')
    nb = _notebook((source, SOLUTION_CELL), ('assert f(1) == 2', CHECK_CELL), ('print(1)', None),
                   ('g = 3', dict(SOLUTION_CELL, grade_id='g')))
    student = make_student.student_version(nb)
    assert student.cells[0].source == ('def f(x):\n    """Doc."""\n    y = 1\n    # YOUR CODE HERE\n'
                                       '    raise NotImplementedError()\n\n\n# YOUR CODE HERE\n'
                                       'raise NotImplementedError()\nprint(f(z))')
    assert [c.source for c in student.cells[1:]] == ['assert f(1) == 2', 'print(1)',
                                                     '# YOUR CODE HERE\nraise NotImplementedError()']
    assert all(c.outputs == [] and c.execution_count is None for c in student.cells)
    assert student.cells[0].metadata['deletable'] is False and 'editable' not in student.cells[0].metadata
    assert (student.cells[1].metadata['deletable'], student.cells[1].metadata['editable']) == (False, False)
    assert 'deletable' not in student.cells[2].metadata
    assert nb.cells[0].source == source and nb.cells[0].outputs, 'the solution notebook is left as it was'


@pytest.mark.parametrize('cells, message', [
    ([('### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION', SOLUTION_CELL)], 'inside another'),
    ([('### BEGIN SOLUTION\nx = 1', SOLUTION_CELL)], 'has no END SOLUTION'),
    ([('x = 1\n### END SOLUTION', SOLUTION_CELL)], 'without a BEGIN SOLUTION'),
    ([('### BEGIN SOLUTION\nx = 1\n### END SOLUTION', None)], 'not marked as a solution'),
    ([('x = 1', SOLUTION_CELL), ('y = 1', dict(SOLUTION_CELL))], "grade_id 'f' is missing, invalid or used twice"),
    ([('x = 1', dict(CHECK_CELL, grade_id='bad id'))], "grade_id 'bad id'"),
    ([('x = 1', {k: v for k, v in CHECK_CELL.items() if k != 'points'})], 'needs its points'),
])
def test_student_version_refuses_regions_and_metadata_that_do_not_add_up(cells, message):
    with pytest.raises(make_student.StudentVersionError, match=re.escape(message)):
        make_student.student_version(_notebook(*cells))


def test_make_student_writes_the_notebook_and_reports_bad_input_in_one_line(tmp_path, capsys):
    assert (make_student.SOLUTION, make_student.STUDENT) == (PRACTICE, STUDENT)  # the defaults
    solution, out = tmp_path / 'solution.ipynb', tmp_path / 'student.ipynb'
    nbformat.write(_notebook(('### BEGIN SOLUTION\nx = 1\n### END SOLUTION', SOLUTION_CELL)), str(solution))
    make_student.main(['--source', str(solution), '--out', str(out)])
    assert capsys.readouterr().out == 'wrote %s\n' % out
    written = out.read_text(encoding='utf-8')
    assert written == nbformat.writes(make_student.student_version(read(str(solution)))) + '\n'
    broken = tmp_path / 'broken.ipynb'
    broken.write_text('{"cells": [')
    unterminated = tmp_path / 'unterminated.ipynb'
    nbformat.write(_notebook(('### BEGIN SOLUTION', SOLUTION_CELL)), str(unterminated))
    for source, message in ((broken, ''), (tmp_path / 'missing.ipynb', ''),
                            (unterminated, 'cell 0 (f): BEGIN SOLUTION has no END SOLUTION')):
        with pytest.raises(SystemExit) as info:
            make_student.main(['--source', str(source), '--out', str(out)])
        assert str(info.value).startswith('%s: %s' % (source, message)) and '\n' not in str(info.value)
    assert out.read_text(encoding='utf-8') == written, 'the good output is kept'
    assert sorted(os.listdir(tmp_path)) == ['broken.ipynb', 'solution.ipynb', 'student.ipynb', 'unterminated.ipynb']


# ----------------------------------------------------------------------------- the checks, in-process

# (cell, text of the solution, its wrong replacement, the check's message must contain)
WRONG = [
    ('get_one_hot_vector', 'np.zeros(num_classes, dtype=np.float32)', 'np.zeros(num_classes)',
     'get_one_hot_vector(): kết quả có kiểu float64, cần float32'),
    ('convert_data_format', '(image.astype(np.float32) - 128.0) / 255.0', 'image.astype(np.float32) / 255.0',
     'convert_data_format(): all_data[0] (smile): ảnh chưa được normalize đúng'),
    ('convert_data_format', 'float(task)', 'float(task - 1)',  # the handout's prose: indexes 0, 1, 2
     'convert_data_format(): all_data[0]: index = 0.0, cần là 1.0, 2.0 hoặc 3.0'),
    ('gen', 'np.random.permutation(len(self.all_data))', 'np.arange(len(self.all_data))',
     'gen(): hai epoch cho cùng một thứ tự'),
    ('gen', 'range(0, len(order), self.batch_size)', 'range(0, len(order) - self.batch_size + 1, self.batch_size)',
     'gen(): một epoch có 0 batch, cần 1'),  # the demo's 950 test faces in batches of 1000: no partial batch
    ('_define_input', "tf.placeholder_with_default(False, [], name='phase_train')",
     "tf.placeholder(tf.bool, [], name='phase_train')", '_define_input(): self.phase_train cần giá trị mặc định'),
    ('_build_model', "'head_' + TASK_NAMES[task]", "'head%d' % task", '_build_model(): thiếu biến head_'),
    ('_build_model', "'conv%d_%d' % (block, i)", "'conv%d' % block",  # TensorFlow refuses a variable made twice
     '_build_model(): lỗi khi chạy ở _build_model(), dòng '),
    ('_define_loss', 'tf.maximum(self.task_count[task], 1.0)', 'self.task_count[task]',
     '_define_loss(): task_loss[GENDER] trên batch không có mẫu gender = nan, cần 0.00000'),
    ('_define_loss', 'tf.reduce_sum(xent * mask)', 'tf.reduce_sum(xent)',
     '_define_loss(): task_loss[SMILE] trên batch có cả 3 task = '),
    ('train', 'if found:', 'if not "resumed":',
     'train(): chạy lại train() khi đã đạt max_steps cần đọc lại checkpoint mới nhất'),
]
CHECKED_CELLS = ('check_tools',) + GRADED + ('student_dataset', 'student_bknet')


@pytest.mark.parametrize('name, right, wrong, message', WRONG, ids=['%s-%d' % (w[0], i) for i, w in enumerate(WRONG)])
@pytest.mark.slow
def test_check_cells_reject_wrong_code_with_one_line(demo_dir, tmp_path, monkeypatch, name, right, wrong, message):
    monkeypatch.chdir(ROOT)
    nb = read(PRACTICE)
    # The notebook's cells in a namespace of their own, named __main__ as in a kernel, then one function spoiled.
    namespace = {'__name__': '__main__', 'DATA_DIR': demo_dir, 'CHECKPOINT_DIR': str(tmp_path)}
    for cell_id in CHECKED_CELLS:
        exec(cell_by_id(nb, cell_id).source, namespace)
    given, solution = cell_by_id(nb, name).source.split(make_student.BEGIN)
    assert solution.count(right) == 1, 'the solution changed: update this case'
    exec(given + make_student.BEGIN + solution.replace(right, wrong), namespace)
    check = cell_by_id(nb, check_id(name)).source
    with pytest.raises(namespace['CheckFailed']) as info:
        exec(check, namespace)
    assert str(info.value).startswith(message) and '\n' not in str(info.value), str(info.value)
    assert info.value._render_traceback_() == ['✘ ' + str(info.value)]  # what the notebook shows: no traceback


# ----------------------------------------------------------------------------- headless runs

@pytest.mark.slow
def test_student_notebook_fails_each_check_with_its_own_message(tmp_path, kernel):
    data_dir = str(tmp_path / 'data')  # empty: the notebook generates the demo set here
    nb = read(STUDENT)
    inject_parameters(nb, DATA_DIR=data_dir, USE_DEMO_IF_MISSING=True, CHECKPOINT_DIR=str(tmp_path / 'ckpt'),
                      EPOCHS=1, MAX_STEPS=5, BATCH_SIZE=32)
    client_for(nb, kernel, allow_errors=True).execute()

    assert 'generating the synthetic demo data set' in cell_text(cell_by_id(nb, 'data'))
    messages = []
    for name in GRADED:
        cell = cell_by_id(nb, check_id(name))
        (error,) = errors(cell)
        assert error.ename == 'CheckFailed', (cell.id, error.ename, error.evalue)
        assert error.traceback == ['✘ ' + error.evalue], 'one line, no traceback: %s' % error.traceback
        assert error.evalue == '%s(): chưa viết xong (còn raise NotImplementedError)' % name
        messages.append(error.evalue)
    assert len(messages) == len(set(messages)) == len(GRADED)
    # The training cell needs the blanks; every other cell runs.
    (error,) = errors(cell_by_id(nb, 'run'))
    assert error.ename == 'NotImplementedError'
    failed = {c.id for c in nb.cells if c.cell_type == 'code' and errors(c)}
    assert failed == {c.id for c in grade_cells(nb)} | {'run'}
    assert 'Epoch  1  batch_data = ' in cell_text(cell_by_id(nb, 'generator'))


@pytest.mark.slow
def test_practice_notebook_passes_its_checks_and_trains_on_demo_data(tmp_path, kernel):
    import data_utils
    from config import EMOTION, GENDER, SMILE

    data_dir = str(tmp_path / 'data')  # empty: the notebook generates the demo set here
    ckpt_dir = str(tmp_path / 'checkpoints')
    steps = 30
    nb = read(PRACTICE)
    inject_parameters(nb, DATA_DIR=data_dir, USE_DEMO_IF_MISSING=True, CHECKPOINT_DIR=ckpt_dir,
                      EPOCHS=1, MAX_STEPS=steps, BATCH_SIZE=32)
    client = client_for(nb, kernel)
    train_cell = cell_by_id(nb, 'run')
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)  # raises CellExecutionError on the first failing cell
        first_training = cell_text(train_cell)
        client.execute_cell(train_cell, nb.cells.index(train_cell))  # re-running the cell resumes
        second_training = cell_text(train_cell)

    assert os.path.isfile(data_utils.split_path(data_dir, SMILE, 'train'))
    for name in GRADED:
        assert '✔ %s(): đạt\n' % name in cell_text(cell_by_id(nb, check_id(name)))

    # Phần 1: the handout's printed lines: all_data's length, gen()'s batches of 1000.
    total = sum(data_utils.count_split(data_utils.split_path(data_dir, t, s))
                for t, s in ((SMILE, 'test'), (EMOTION, 'public_test'), (GENDER, 'test')))
    assert 'len(dataset.all_data) = %d\n' % total in cell_text(cell_by_id(nb, 'check_convert_data_format'))
    sizes = [1000] * (total // 1000) + ([total % 1000] if total % 1000 else [])
    expected = ''.join('%d %d %d %d\n' % (i, n, n, n) for i, n in enumerate(sizes, 1))
    assert cell_text(cell_by_id(nb, 'check_gen')).startswith(expected)

    # Phần 2: the four block shapes, a fresh start, the step cap; then a resume when re-run.
    for shape in ('(None, 24, 24, 32)', '(None, 12, 12, 64)', '(None, 6, 6, 128)', '(None, 3, 3, 256)'):
        assert shape in first_training
    assert 'Created model with fresh parameters.' in first_training
    assert 'Stopped at step %d (max_steps)' % steps in first_training
    assert 'Reading model parameters from %s' % os.path.join(ckpt_dir, 'model.ckpt-%d' % steps) in second_training

    # Bài tập về nhà: the accuracy lines, recomputed here from the checkpoint and the test files.
    homework = cell_text(cell_by_id(nb, 'check_evaluate_test_sets'))
    assert 'Restored %s' % os.path.join(ckpt_dir, 'model.ckpt-%d' % steps) in homework
    import model
    tf = tf_setup.import_tf()
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as session:
        net = model.Multitask_BKNet(session, training=False, verbose=False)
        net.restore(ckpt_dir)
        for name, task, split in (('smile test', SMILE, 'test'), ('emotion public test', EMOTION, 'public_test'),
                                  ('emotion private test', EMOTION, 'private_test'), ('gender test', GENDER, 'test')):
            match = re.search(r'^%s +accuracy: ([0-9.]+) \((\d+) images\)$' % name, homework, re.M)
            assert match, 'no accuracy line for %s in:\n%s' % (name, homework)
            records = np.load(data_utils.split_path(data_dir, task, split))  # plain: image, label fields
            labels = records['label']
            accuracy = np.mean(net.predict(records['image'])[task].argmax(1) == labels)  # same checkpoint, here
            assert (float(match.group(1)), int(match.group(2))) == (pytest.approx(accuracy, abs=6e-5), len(labels))


@pytest.mark.slow
def test_beyond_notebook_runs_on_demo_checkpoint(tmp_path, kernel, demo_dir, demo_checkpoint):
    assert BEYOND in NOTEBOOKS
    ckpt_dir = str(tmp_path / 'checkpoint')
    shutil.copytree(demo_checkpoint, ckpt_dir)  # the notebook writes its evaluation report beside it
    # A checkpoint saved under an absolute folder names its files by absolute path in the
    # `checkpoint` state file: point the copy's state at the copy (a no-op for relative names).
    state = os.path.join(ckpt_dir, 'checkpoint')
    with open(state) as f:
        text = f.read()
    with open(state, 'w') as f:
        f.write(text.replace(os.path.join(demo_checkpoint, ''), ''))
    nb = read(BEYOND)
    inject_parameters(nb, DATA_DIR=demo_dir, CHECKPOINT_DIR=ckpt_dir, PHOTO=None)
    client_for(nb, kernel).execute()

    def images(cell):
        return sum('image/png' in out.get('data', {}) for out in cell.outputs)

    assert re.search(r'^Restored %s' % re.escape(os.path.join(ckpt_dir, 'model.ckpt-')) + r'\d+$',
                     cell_text(find_cell(nb, 'predict.Predictor(')), re.M)
    photo = find_cell(nb, 'predictor(picture)')
    assert re.search(r'^[1-9]\d* face\(s\) found$', cell_text(photo), re.M)  # Haar finds most demo faces
    assert 'box x=' in cell_text(photo) and images(photo) == 1
    confusion = find_cell(nb, 'evaluate.evaluate(')
    for name in ('smile test', 'emotion public_test', 'emotion private_test', 'gender test'):
        assert re.search(r'^%s +\d+ +[0-9.]+ +[0-9.]+ ' % name, cell_text(confusion), re.M), name
    assert images(confusion) == 3
    assert os.path.isfile(os.path.join(ckpt_dir, 'evaluation.json'))
    curves = find_cell(nb, 'read_curves')
    match = re.search(r'^(\d+) tags, (\d+) points each', cell_text(curves), re.M)
    # learning rate + 3 tasks x (train loss, train accuracy, validation, validation of the raw weights); 3 epochs
    assert match and int(match.group(1)) == 13 and int(match.group(2)) == 3
    assert images(curves) == 1
    comparison = find_cell(nb, 'MULTITASK_RESULTS')  # the README's multitask table, read from its JSON
    with open(os.path.join(ROOT, 'results', 'multitask.json')) as f:
        results = json.load(f)['runs']
    for label, run in (('single-task x3', 'single'), ('multitask, fixed', 'all_fixed'),
                       ('multitask, learned', 'all_uncertainty')):
        accuracy = results[run]['accuracy']
        assert '%-20s smile %.1f%%  emotion %.1f%%  gender %.1f%%' % (
            label, 100 * accuracy['smile'], 100 * accuracy['emotion'], 100 * accuracy['gender']) in cell_text(comparison)
    assert images(comparison) == 1
