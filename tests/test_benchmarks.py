"""The README's benchmark commands run: each in its cheapest form, on the demo data."""
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args):
    result = subprocess.run([sys.executable] + list(args), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_bench_data_reports_throughput_and_memory(demo_dir):
    out = _run('benchmarks/bench_data.py', '--data-dir', demo_dir, '--epochs', '1', '--aug-epochs', '1')
    assert 'train set: 4500 samples (smile 1200, emotion 2100, gender 1200), batch 128' in out
    rows = re.findall(r'^gen\(\), (?:no augmentation|augment \(pad 10\)) +(\d+) +[\d.]+ +(\d+)', out, re.M)
    assert [int(n) for n, _ in rows] == [36, 36] and all(int(rate) > 0 for _, rate in rows)
    assert re.search(r'^data arrays \(nbytes\) +9\.9 MB', out, re.M)  # 4500 x (2304 + 8 + 4) bytes


@pytest.mark.slow
def test_bench_train_quick_run_prints_the_table():
    out = _run('benchmarks/bench_train.py', '--quick')
    assert re.search(r'^\| *128 *\| *on *\|( *[\d.]+x? *\|){5} *\d+% *\|$', out, re.M), out
