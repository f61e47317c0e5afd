"""The import graph runs one way: each project module imports only modules listed before it in LAYERS."""
import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Library modules first, bottom up, then the commands (train.py --demo uses prepare_data).
LAYERS = ['config', 'tf_setup', 'files', 'data_utils', 'data_provider', 'layers', 'metrics', 'checkpoints',
          'training', 'model', 'litert_model', 'cli', 'faces', 'tracking', 'demo_faces',
          'prepare_data', 'train', 'evaluate', 'predict', 'export', 'serve']


def project_imports(path):
    """The project modules a file imports, at its top or inside a function."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split('.')[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split('.')[0])
    return names & set(LAYERS)


def test_every_top_level_module_has_a_layer():
    modules = {name[:-3] for name in os.listdir(ROOT) if name.endswith('.py')}
    assert modules == set(LAYERS)


@pytest.mark.parametrize('module', LAYERS)
def test_a_module_imports_only_the_layers_below_it(module):
    below = set(LAYERS[:LAYERS.index(module)])
    assert project_imports(os.path.join(ROOT, module + '.py')) - below == set()


def test_the_check_sees_an_upward_import(tmp_path):
    path = tmp_path / 'config.py'
    path.write_text('def f():\n    from model import Multitask_BKNet\n')
    assert project_imports(str(path)) == {'model'}


def test_importing_the_modules_loads_no_tensorflow_and_decides_no_onednn():
    """TensorFlow loads when first used, so a command's cli.start can still choose oneDNN after its imports;
    LiteRT's runtime too, when a .tflite file is first opened."""
    code = ('import os, sys; import %s; print("tensorflow" in sys.modules, "TF_ENABLE_ONEDNN_OPTS" in os.environ, '
            '"ai_edge_litert" in sys.modules)' % ', '.join(LAYERS))
    env = {k: v for k, v in os.environ.items() if k != 'TF_ENABLE_ONEDNN_OPTS'}
    result = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ['False', 'False', 'False']
