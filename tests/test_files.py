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


def test_a_clean_up_never_takes_what_a_live_writer_holds(tmp_path):
    """Another process's clean-up (here: the same call, which the OS lock treats alike) leaves a write under way alone."""
    with files.atomic_write(str(tmp_path / 'a.json'), 'w') as f:
        f.write('{}')
        with files.staging_folder(str(tmp_path), files.TEMP_PREFIX + 'export-') as folder:
            assert files.remove_leftovers(str(tmp_path)) == []
            assert os.path.isdir(folder) and len(os.listdir(tmp_path)) == 2
    assert os.listdir(tmp_path) == ['a.json']


REPLACE = """
import sys
sys.path.insert(0, {root!r})
import files
files.replace_folder({built!r}, {out!r})
"""


@pytest.mark.parametrize('renames', [1, 2])
def test_a_folder_replace_killed_between_or_after_its_renames_loses_nothing(tmp_path, capsys, renames):
    from conftest import ROOT, run_killed
    out, built = tmp_path / 'export', tmp_path / '.tmp-export-x1' / 'saved_model'
    out.mkdir()
    (out / 'saved_model.pb').write_text('old')
    built.mkdir(parents=True)
    (built / 'saved_model.pb').write_text('new')
    script = tmp_path / 'replace.py'
    script.write_text(REPLACE.format(root=ROOT, built=str(built), out=str(out)))
    run_killed(str(script), 'rename', renames, 'any')  # SIGKILL after the old folder moved aside (1), or both (2)
    assert sorted(os.listdir(tmp_path)) == sorted(['.tmp-export-x1', 'replace.py'] +
                                                  (['.tmp-old-export'] if renames == 1 else ['.tmp-old-export', 'export']))
    removed = files.remove_leftovers(str(tmp_path), files.TEMP_PREFIX + 'export-')
    assert removed == (['.tmp-export-x1'] if renames == 1 else ['.tmp-export-x1', '.tmp-old-export'])
    assert ('put back %s from %s' % (out, tmp_path / '.tmp-old-export') in capsys.readouterr().out) == (renames == 1)
    assert (out / 'saved_model.pb').read_text() == ('old' if renames == 1 else 'new')
    assert sorted(os.listdir(tmp_path)) == ['export', 'replace.py']


def test_a_replace_under_way_is_not_undone_by_a_clean_up(tmp_path):
    import fcntl
    (tmp_path / '.tmp-old-export').mkdir()  # another process has moved the old folder aside and holds it
    fd = os.open(str(tmp_path / '.tmp-old-export'), os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert files.remove_leftovers(str(tmp_path)) == [] and os.listdir(tmp_path) == ['.tmp-old-export']
    finally:
        os.close(fd)


def test_a_set_published_half_way_stays_listed_until_published_whole(tmp_path):
    a, b, c = (str(tmp_path / name) for name in ('a.json', 'b.png', 'c.png'))
    with pytest.raises(KeyboardInterrupt):
        with files.publishing(str(tmp_path), [a, b]):
            files.write_json(a, 1)
            raise KeyboardInterrupt  # stopped before b.png
    expected = ('%s: the run that was replacing it and the files written with it stopped half-way (listed in %s), '
                'so it may not match them' % (a, tmp_path / files.UNFINISHED))
    assert files.unfinished(a) == expected and files.unfinished(b) and files.unfinished(c) is None
    assert files.read_json(str(tmp_path / files.UNFINISHED)) == ['a.json', 'b.png']
    with files.publishing(str(tmp_path), [b, c]):  # a later set with other files: only its own come off the list
        pass
    assert files.read_json(str(tmp_path / files.UNFINISHED)) == ['a.json'] and files.unfinished(b) is None
    with files.publishing(str(tmp_path), [a]):
        pass
    assert os.listdir(tmp_path) == ['a.json'] and files.unfinished(a) is None


HOLD = """
import sys, time
sys.path.insert(0, {root!r})
import files
with files.atomic_write({path!r}) as f:
    print('writing', flush=True)
    time.sleep(60)
"""


def test_a_clean_up_in_another_process_leaves_a_live_write_alone(tmp_path):
    import subprocess
    import sys

    from conftest import ROOT
    writer = subprocess.Popen([sys.executable, '-c', HOLD.format(root=ROOT, path=str(tmp_path / 'a.npy'))],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline() == 'writing\n'
        assert files.remove_leftovers(str(tmp_path)) == [] and len(os.listdir(tmp_path)) == 1
    finally:
        writer.kill()
        writer.wait(timeout=30)
    temp = os.listdir(tmp_path)
    assert files.remove_leftovers(str(tmp_path)) == temp and os.listdir(tmp_path) == []  # its writer is dead now


def test_a_folder_replace_that_fails_on_its_second_rename_puts_the_old_folder_back_at_once(tmp_path, monkeypatch):
    out, built = tmp_path / 'export', tmp_path / '.tmp-export-x1'
    out.mkdir()
    (out / 'saved_model.pb').write_text('old')
    built.mkdir()
    real, calls = os.rename, []

    def second_fails(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(28, 'No space left on device')
        real(src, dst)
    monkeypatch.setattr(files.os, 'rename', second_fails)
    with pytest.raises(OSError):
        files.replace_folder(str(built), str(out))
    monkeypatch.undo()
    assert (out / 'saved_model.pb').read_text() == 'old' and sorted(os.listdir(tmp_path)) == ['.tmp-export-x1', 'export']
