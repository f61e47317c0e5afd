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
import copy
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
HOMEWORK = ('check_evaluate_test_sets',)
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
    # The first code cell: Colab fetches the project (a clone when REPO_URL is set, else an uploaded .zip),
    # installs it, and oneDNN is turned off before TensorFlow loads; the markdown says how to run it elsewhere.
    setup = next(c for c in nb.cells if c.cell_type == 'code')
    assert assigned_names(setup_functions(setup)) >= {'REPO_URL', 'PROJECT_DIR'}
    assert '%pip install -q -r requirements.txt' in setup.source
    assert setup.source.rstrip().endswith('tf_setup.choose_onednn(False)  # before TensorFlow loads; an error in '
                                          'your graph then cannot abort the kernel')
    assert 'pip install -r requirements.txt notebook\njupyter notebook notebooks/practice_student.ipynb' in text


def setup_functions(cell):
    """The first cell's source as plain Python (IPython turns %pip into a call)."""
    from IPython.core.inputtransformer2 import TransformerManager
    return TransformerManager().transform_cell(cell.source)


def fetch_project():
    """The first cell's fetch_project(project_dir, repo_url), defined on its own."""
    tree = ast.parse(setup_functions(next(c for c in read(STUDENT).cells if c.cell_type == 'code')))
    (function,) = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == 'fetch_project']
    namespace = {'os': os}
    exec(compile(ast.Module([function], []), 'setup', 'exec'), namespace)
    return namespace['fetch_project']


@pytest.mark.parametrize('top', ['multitask-bknet-main/', ''], ids=['github-zip', 'flat-zip'])
def test_colab_setup_unpacks_an_uploaded_zip_of_the_project(tmp_path, top):
    import zipfile
    with zipfile.ZipFile(str(tmp_path / 'project.zip'), 'w') as archive:  # as uploaded to /content
        archive.writestr(top + 'model.py', '# the model\n')
        archive.writestr(top + 'notebooks/practice.ipynb', '{}')
    fetch_project()(str(tmp_path / 'multitask_bknet'), '')
    assert (tmp_path / 'multitask_bknet' / 'model.py').read_text() == '# the model\n'
    assert (tmp_path / 'multitask_bknet' / 'notebooks' / 'practice.ipynb').is_file()


def test_colab_setup_refuses_a_zip_without_the_project(tmp_path):
    import zipfile
    with zipfile.ZipFile(str(tmp_path / 'photos.zip'), 'w') as archive:
        archive.writestr('cat.jpg', 'x')
    with pytest.raises(RuntimeError, match=r'photos\.zip không chứa project \(không thấy model\.py\)$'):
        fetch_project()(str(tmp_path / 'multitask_bknet'), '')
    assert not (tmp_path / 'multitask_bknet').exists()


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


# ----------------------------------------------------------------------------- the student's kernel
# One kernel runs the student notebook as handed out (every check fails: nothing is written yet), then
# with the solution's functions written in (every check passes, the model trains and resumes, the
# homework is graded), then each answer of WRONG below in turn: that answer's cell, its check, and the
# solution's cell again, so that the answers do not meet. One kernel start, one TensorFlow import.

class Kernel(object):
    """A running kernel of a notebook: its cells, or cells of ours, executed one at a time; errors kept as outputs."""

    def __init__(self, nb, client):
        self.nb, self.client = nb, client

    def run(self, cell_id):
        cell = cell_by_id(self.nb, cell_id)
        self.client.execute_cell(cell, self.nb.cells.index(cell))
        return copy.deepcopy(cell)

    def run_source(self, source):
        cell = nbformat.v4.new_code_cell(source)
        self.nb.cells.append(cell)
        self.client.execute_cell(cell, len(self.nb.cells) - 1)
        return cell


def install_kernel(folder, patch):
    """A kernelspec that runs ipykernel in this very interpreter, found through JUPYTER_PATH.

    The installed 'python3' spec says just `python`, which may be another interpreter on PATH
    (or be missing in CI); this one cannot be. The kernel starts without TF_ENABLE_ONEDNN_OPTS, as
    on a student's machine: the notebook's first cell decides it.
    """
    spec_dir = folder / 'jupyter' / 'kernels' / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    (spec_dir / 'kernel.json').write_text(json.dumps({
        'argv': [sys.executable, '-m', 'ipykernel_launcher', '-f', '{connection_file}'],
        'display_name': 'Python 3 (test)', 'language': 'python'}))
    patch.setenv('JUPYTER_PATH', str(folder / 'jupyter'))
    patch.setenv('IPYTHONDIR', str(folder / 'ipython'))  # no history / profile in the user's home
    patch.delenv('TF_ENABLE_ONEDNN_OPTS', raising=False)
    return KERNEL_NAME


@pytest.fixture
def kernel(tmp_path, monkeypatch):
    return install_kernel(tmp_path, monkeypatch)


@pytest.fixture(scope='module')
def student(tmp_path_factory, demo_checkpoint):
    """The kernel after the three runs; .blank and .solved: each code cell as it ran then (by id);
    .data_dir, .checkpoint_dir, .steps: the parameters; .training: the training cell's two runs.

    The notebook's 30 steps teach the network little (smile stays at chance), so the homework is
    graded on the shared demo checkpoint (3 epochs): CHECKPOINT_DIR points there for that check.
    """
    folder = tmp_path_factory.mktemp('student')
    steps = 30
    nb = read(STUDENT)
    data_dir, ckpt_dir = str(folder / 'data'), str(folder / 'checkpoints')  # data: empty, the notebook makes it
    inject_parameters(nb, DATA_DIR=data_dir, USE_DEMO_IF_MISSING=True, CHECKPOINT_DIR=ckpt_dir,
                      EPOCHS=1, MAX_STEPS=steps, BATCH_SIZE=32)
    solution = read(PRACTICE)
    with pytest.MonkeyPatch.context() as patch:
        client = client_for(nb, install_kernel(folder, patch), allow_errors=True)
        with client.setup_kernel():
            kernel = Kernel(nb, client)
            code = [c.id for c in nb.cells if c.cell_type == 'code']
            kernel.blank = {cell_id: kernel.run(cell_id) for cell_id in code}
            for name in GRADED:  # the student writes every function
                kernel.run_source(cell_by_id(solution, name).source)
            kernel.solved = {cell_id: kernel.run(cell_id) for cell_id in code if cell_id not in GRADED + HOMEWORK}
            kernel.training = kernel.solved['run'], kernel.run('run')  # re-running the cell resumes
            kernel.run_source('CHECKPOINT_DIR = %r' % demo_checkpoint)
            kernel.solved.update((cell_id, kernel.run(cell_id)) for cell_id in HOMEWORK)
            kernel.run_source('CHECKPOINT_DIR = %r' % ckpt_dir)
            kernel.trained = demo_checkpoint
            kernel.solution, kernel.data_dir, kernel.checkpoint_dir, kernel.steps = solution, data_dir, ckpt_dir, steps
            yield kernel


def the_error(cell):
    """The one error a cell ended with, shown as one ✘ line and no traceback; -> its message."""
    (error,) = errors(cell)
    assert error.ename == 'CheckFailed', (cell.id, error.ename, error.evalue)
    assert error.traceback == ['✘ ' + error.evalue], 'one line, no traceback: %s' % error.traceback
    assert '\n' not in error.evalue
    return error.evalue


@pytest.mark.slow
def test_student_notebook_fails_each_check_with_its_own_message(student):
    assert 'generating the synthetic demo data set' in cell_text(student.blank['data'])
    messages = []
    for name in GRADED:
        message = the_error(student.blank[check_id(name)])
        assert message == '%s(): chưa viết xong (còn raise NotImplementedError)' % name
        messages.append(message)
    assert len(messages) == len(set(messages)) == len(GRADED)
    # The training cell needs the blanks too, and says so in one line; every other cell runs.
    assert the_error(student.blank['run']) == 'huấn luyện: hàm _define_input() chưa viết xong (còn raise ' \
                                              'NotImplementedError)'
    failed = {cell_id for cell_id, cell in student.blank.items() if errors(cell)}
    assert failed == {c.id for c in grade_cells(student.nb)} | {'run'}
    assert 'Epoch  1  batch_data = ' in cell_text(student.blank['generator'])
    # The first cell turned oneDNN off before TensorFlow loaded (the kernel started without the variable).
    assert 'on CPU (2 cores, oneDNN off)' in cell_text(student.blank['check_tools']).replace(
        '(%d cores' % os.cpu_count(), '(2 cores')


@pytest.mark.slow
def test_solution_passes_every_check_and_trains_on_demo_data(student):
    import data_utils
    from config import EMOTION, GENDER, SMILE

    data_dir, ckpt_dir, steps = student.data_dir, student.checkpoint_dir, student.steps
    for name in GRADED:
        assert not errors(student.solved[check_id(name)])
        assert '✔ %s(): đạt\n' % name in cell_text(student.solved[check_id(name)])
    assert not [cell_id for cell_id, cell in student.solved.items() if errors(cell)]

    # Phần 1: the handout's printed lines: all_data's length, gen()'s batches (256 for the demo's 950 faces).
    total = sum(data_utils.count_split(data_utils.split_path(data_dir, t, s))
                for t, s in ((SMILE, 'test'), (EMOTION, 'public_test'), (GENDER, 'test')))
    assert 'len(dataset.all_data) = %d\n' % total in cell_text(student.solved['check_convert_data_format'])
    batch = 1000 if total >= 3000 else 256
    sizes = [batch] * (total // batch) + ([total % batch] if total % batch else [])
    expected = ''.join('%d %d %d %d\n' % (i, n, n, n) for i, n in enumerate(sizes, 1))
    assert len(sizes) > 1 and cell_text(student.solved['check_gen']).startswith(expected)

    # Phần 2: the four block shapes, a fresh start, the step cap; then a resume when re-run.
    first_training, second_training = (cell_text(cell) for cell in student.training)
    for shape in ('(None, 24, 24, 32)', '(None, 12, 12, 64)', '(None, 6, 6, 128)', '(None, 3, 3, 256)'):
        assert shape in first_training
    assert 'Created model with fresh parameters.' in first_training
    assert 'Stopped at step %d (max_steps)' % steps in first_training
    assert 'Reading model parameters from %s' % os.path.join(ckpt_dir, 'model.ckpt-%d' % steps) in second_training

    # Bài tập về nhà: the accuracy lines, recomputed here from the checkpoint and the test files.
    homework = cell_text(student.solved['check_evaluate_test_sets'])
    assert re.search(r'^Restored %s\d+$' % re.escape(os.path.join(student.trained, 'model.ckpt-')), homework, re.M)
    import model
    tf = tf_setup.import_tf()
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as session:
        net = model.Multitask_BKNet(session, training=False, verbose=False)
        net.restore(student.trained)
        for name, task, split in (('smile test', SMILE, 'test'), ('emotion public test', EMOTION, 'public_test'),
                                  ('emotion private test', EMOTION, 'private_test'), ('gender test', GENDER, 'test')):
            match = re.search(r'^%s +accuracy: ([0-9.]+) \((\d+) images; the most common class: ([0-9.]+)\)$'
                              % name, homework, re.M)
            assert match, 'no accuracy line for %s in:\n%s' % (name, homework)
            records = np.load(data_utils.split_path(data_dir, task, split))  # plain: image, label fields
            labels = records['label']
            accuracy = np.mean(net.predict(records['image'])[task].argmax(1) == labels)  # same checkpoint, here
            assert (float(match.group(1)), int(match.group(2))) == (pytest.approx(accuracy, abs=6e-5), len(labels))
            assert float(match.group(3)) == pytest.approx(np.bincount(labels).max() / len(labels), abs=6e-5)


# (cell, [(text of the solution, its replacement), ...], what the check's one line starts with: None = it passes)
TRAIN_OWN_OPTIMIZER = [  # a step of its own: batch norm's moving statistics never move
    ('step = int(self.sess.run(self.global_step))',
     'own_step = tf.train.GradientDescentOptimizer(cfg["learning_rate"]).minimize(\n'
     '            self.total_loss, global_step=self.global_step)\n'
     '        step = int(self.sess.run(self.global_step))'),
    ('[self.train_op, self.task_loss', '[own_step, self.task_loss')]
WRONG = [
    ('get_one_hot_vector', [('np.zeros(num_classes, dtype=np.float32)', 'np.zeros(num_classes)')],
     'get_one_hot_vector(): kết quả có kiểu float64, cần float32'),
    ('convert_data_format', [('(image.astype(np.float32) - 128.0) / 255.0', 'image.astype(np.float32) / 255.0')],
     'convert_data_format(): all_data[0] (smile): ảnh chưa được normalize đúng'),
    ('convert_data_format', [('float(task)', 'float(task - 1)')],  # the handout's old prose: indexes 0, 1, 2
     'convert_data_format(): all_data[0]: index = 0.0, cần là 1.0, 2.0 hoặc 3.0'),
    ('gen', [('np.random.permutation(len(self.all_data))', 'np.arange(len(self.all_data))')],
     'gen(): hai epoch cho cùng một thứ tự'),
    ('gen', [('range(0, len(order), self.batch_size)', 'range(0, len(order) - self.batch_size + 1, self.batch_size)')],
     'gen(): một epoch có 3 batch, cần 4'),  # the demo's 950 test faces in batches of 256: no partial batch
    ('gen', [('self.batch_size', '1000')],  # batch_size ignored: the demo's whole test set in one batch
     'gen(): batch 1 có 950 mẫu, cần 256 (batch_size)'),
    ('_define_input', [("tf.placeholder_with_default(False, [], name='phase_train')",
                        "tf.placeholder(tf.bool, [], name='phase_train')")],
     '_define_input(): self.phase_train cần giá trị mặc định'),
    ('_build_model', [("'head_' + TASK_NAMES[task]", "'head%d' % task")], '_build_model(): thiếu biến head_'),
    ('_build_model', [("'conv%d_%d' % (block, i)", "'conv%d' % block")],  # TensorFlow refuses a variable made twice
     '_build_model(): lỗi khi chạy ở _build_model(), dòng '),
    ('_define_loss', [('tf.maximum(self.task_count[task], 1.0)', 'self.task_count[task]')],
     '_define_loss(): task_loss[GENDER] trên batch không có mẫu gender = nan, cần 0.00000'),
    ('_define_loss', [('tf.reduce_sum(xent * mask)', 'tf.reduce_sum(xent)')],
     '_define_loss(): task_loss[SMILE] trên batch có cả 3 task = '),
    # Labels not cut to the task's classes: with oneDNN on, TensorFlow aborts the kernel on this graph.
    ('_define_loss', [('labels = self.input_labels[:, :NUM_CLASSES[task]]', 'labels = self.input_labels')],
     '_define_loss(): lỗi khi chạy graph: logits and labels must be broadcastable: logits_size=[12,2] '
     'labels_size=[12,7]; nhãn của mỗi task: self.input_labels[:, :NUM_CLASSES[task]]'),
    ('_define_loss', [('labels = self.input_labels[:, :NUM_CLASSES[task]]', 'labels = self.input_labels'),
                      ('softmax_cross_entropy_with_logits_v2', 'softmax_cross_entropy_with_logits')],  # the old v1 op
     '_define_loss(): lỗi khi chạy graph: logits and labels must be broadcastable'),
    ('train', [('if found:', 'if not "resumed":')],
     'train(): chạy lại train() khi đã đạt max_steps cần đọc lại checkpoint mới nhất'),
    ('train', TRAIN_OWN_OPTIMIZER, 'train(): không chạy self.train_op'),
    ('train', [("self.phase_train: True, self.keep_prob: cfg['keep_prob'],\n                        ", '')],
     'train(): self.sess.run(self.train_op, feed_dict) cần feed self.phase_train = True (True khi huấn luyện), '
     'có: không feed'),
    ('train', [(",\n                        self.learning_rate: cfg['learning_rate']}", '}')],  # TensorFlow's cause
     "train(): lỗi khi chạy ở train(), dòng 40: InvalidArgumentError: You must feed a value for placeholder "
     "tensor 'learning_rate' with dtype float"),
    ('train', [('    with self.sess.graph.as_default():\n', '    if True:\n')],
     "train(): tạo op 'init' ngoài graph của mô hình: đặt phần thân của nó trong "
     "`with self.sess.graph.as_default():`"),
]


def wrong_answer(solution, name, replacements):
    """The solution's cell for `name` with its solution part changed (each replaced text must be there)."""
    given, answer = cell_by_id(solution, name).source.split(make_student.BEGIN)
    for right, wrong in replacements:
        assert right in answer, 'the solution changed: update this case (%r)' % right
        answer = answer.replace(right, wrong)
    return given + make_student.BEGIN + answer


def answer_check(student, name, source, before=''):
    """Run the answer's cell, then (after `before`) its check; the solution's cell again -> the check cell."""
    kernel_errors = []
    try:
        for cell in (student.run_source(source), student.run_source(before)):
            kernel_errors += [e.evalue for e in errors(cell)]
        assert not kernel_errors, kernel_errors
        return student.run(check_id(name))
    finally:
        student.run_source(cell_by_id(student.solution, name).source)


@pytest.mark.parametrize('name, replacements, message', WRONG, ids=['%s-%d' % (w[0], i) for i, w in enumerate(WRONG)])
@pytest.mark.slow
def test_check_cells_reject_wrong_answers_with_one_line(student, name, replacements, message):
    check = answer_check(student, name, wrong_answer(student.solution, name, replacements))
    assert the_error(check).startswith(message)
    assert cell_text(student.run_source('print(6 * 7)')) == '42\n', 'the kernel goes on'


@pytest.mark.slow
def test_training_cell_shows_an_error_of_yours_in_one_line(student):
    # No `with self.sess.graph.as_default():` in train(): the check says so (above); the training cell,
    # resuming the checkpoint the notebook saved, in one line where TensorFlow's own traceback is 60.
    # (Starting afresh it would be TypeError: Argument `fetch` = None, for the initializer.)
    source = wrong_answer(student.solution, 'train', [('    with self.sess.graph.as_default():\n', '    if True:\n')])
    try:
        for cell in (student.run_source(source), student.run('student_bknet')):
            assert not errors(cell)
        message = the_error(student.run('run'))
    finally:
        student.run_source(cell_by_id(student.solution, 'train').source)
        student.run('student_bknet')
    assert message.startswith('huấn luyện: lỗi khi chạy ở train(), dòng 26: ValueError: Can only save/restore '
                              'ResourceVariables when executing eagerly'), message


@pytest.mark.slow
def test_homework_check_accepts_the_raw_weights_and_the_moving_average(student):
    # The TensorFlow 1.x idiom reads the raw weights; the solution's .restore() the average (config ema_decay).
    raw = wrong_answer(student.solution, 'evaluate_test_sets', [(
        "print('Restored', trained_model.restore(checkpoint_dir))",
        "tf.train.Saver().restore(session, tf.train.latest_checkpoint(checkpoint_dir))")])
    try:
        check = answer_check(student, 'evaluate_test_sets', raw, before='CHECKPOINT_DIR = %r' % student.trained)
    finally:
        student.run_source('CHECKPOINT_DIR = %r' % student.checkpoint_dir)
    assert not errors(check), errors(check)
    assert cell_text(check).endswith('✔ evaluate_test_sets(): đạt\n')
    # ... and the solution's, the average: the notebook's own run (test above) passed with it.
    assert cell_text(student.solved['check_evaluate_test_sets']).endswith('✔ evaluate_test_sets(): đạt\n')


@pytest.mark.slow
def test_homework_check_rejects_an_accuracy_of_other_weights(student):
    smile_head = wrong_answer(student.solution, 'evaluate_test_sets', [  # every test set read by the smile head
        ('.predict(images)[task]', '.predict(images)[SMILE]')])
    try:
        check = answer_check(student, 'evaluate_test_sets', smile_head,
                             before='CHECKPOINT_DIR = %r' % student.trained)
    finally:
        student.run_source('CHECKPOINT_DIR = %r' % student.checkpoint_dir)
    assert re.match(r'evaluate_test_sets\(\): emotion public test: độ chính xác 0\.\d+, cần [01]\.\d+ \(trọng số gốc\) hoặc '
                    r'[01]\.\d+ \(trung bình trượt\) của %s' % re.escape(os.path.join(student.trained, 'model.ckpt-')),
                    the_error(check)), the_error(check)


@pytest.mark.slow
def test_homework_check_rejects_a_model_that_learned_nothing(student, tmp_path):
    # What a train() with an optimizer of its own leaves (the issue measured 0.50 / 0.16 / 0.16 / 0.51):
    # here the network as initialised, saved as a checkpoint: every answer is at chance.
    untrained = str(tmp_path)
    setup = ('with tf.Session(graph=tf.Graph()) as sess:\n'
             '    untrained = model.Multitask_BKNet(sess, training=False, verbose=False)\n'
             '    sess.run(tf.global_variables_initializer())\n'
             '    untrained.saver.save(sess, os.path.join(%r, "model.ckpt"), global_step=0)\n'
             'CHECKPOINT_DIR = %r' % (untrained, untrained))
    try:
        check = answer_check(student, 'evaluate_test_sets', cell_by_id(student.solution, 'evaluate_test_sets').source,
                             before=setup)
    finally:
        student.run_source('CHECKPOINT_DIR = %r' % student.checkpoint_dir)
    # An untrained network is near chance everywhere, but by how much varies with its initialisation: the
    # check names the first test set it does not beat by 5 points.
    assert re.match(r'evaluate_test_sets\(\): (smile test|emotion public test|emotion private test|gender test): '
                    r'độ chính xác 0\.\d+ không hơn lớp phổ biến nhất \(0\.\d+\) 5 điểm: mô hình chưa học được gì',
                    the_error(check)), the_error(check)


# ----------------------------------------------------------------------------- beyond.ipynb

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
