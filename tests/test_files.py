"""files.py: a write that fails leaves the old file and no temp file; leftovers are found by their prefix."""
import json
import os

import pytest

import files


def test_atomic_write_replaces_the_file_only_when_the_block_ends(tmp_path):
    path = str(tmp_path / 'report.json')
    files.write_json(path, {'old': 1})
    with pytest.raises(RuntimeError):
        with files.atomic_write(path, 'w') as f:
            f.write('{"half": ')
            raise RuntimeError('killed mid-write')
    assert files.read_json(path) == {'old': 1} and os.listdir(tmp_path) == ['report.json']
    files.write_json(path, {'new': 2})
    with open(path) as f:
        assert json.load(f) == {'new': 2}
    assert os.listdir(tmp_path) == ['report.json']
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o666 & ~_umask())  # not mkstemp's private 0600


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_staging_folder_is_gone_after_its_block_whatever_happens(tmp_path):
    with files.staging_folder(str(tmp_path / 'out'), files.TEMP_PREFIX + 'export-') as tmp:
        open(os.path.join(tmp, 'a'), 'w').close()
        assert os.path.basename(tmp).startswith('.tmp-export-')
    with pytest.raises(KeyboardInterrupt):
        with files.staging_folder(str(tmp_path / 'out')) as tmp:
            raise KeyboardInterrupt
    assert os.listdir(tmp_path / 'out') == []


def test_remove_leftovers_takes_only_names_with_the_prefix_or_matched(tmp_path):
    for name in ('.tmp-a1-config.json', 'config.json', 'model.ckpt-3_temp', 'notes.tmp'):
        open(tmp_path / name, 'w').close()
    (tmp_path / '.tmp-export-x1').mkdir()
    (tmp_path / '.tmp-export-x1' / 'saved_model.pb').write_text('half')
    assert files.remove_leftovers(str(tmp_path), files.TEMP_PREFIX + 'export-') == ['.tmp-export-x1']
    removed = files.remove_leftovers(str(tmp_path), also=lambda name: name.endswith('_temp'))
    assert removed == ['.tmp-a1-config.json', 'model.ckpt-3_temp']
    assert sorted(os.listdir(tmp_path)) == ['config.json', 'notes.tmp']
    assert files.remove_leftovers(str(tmp_path / 'absent')) == []
