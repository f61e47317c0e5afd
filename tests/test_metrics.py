"""metrics.py by hand: accuracy, balanced accuracy, confusion matrices and the paired bootstrap."""
import numpy as np
import pytest

import metrics


def test_metrics_on_a_hand_computed_example():
    labels = [0, 0, 0, 1, 1, 2]
    predictions = [0, 1, 0, 1, 1, 0]
    assert metrics.confusion_matrix(labels, predictions, 3).tolist() == [[2, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert metrics.accuracy(labels, predictions) == pytest.approx(4 / 6)
    assert metrics.per_class_accuracy(labels, predictions, 3) == pytest.approx([2 / 3, 1.0, 0.0])
    assert metrics.balanced_accuracy(labels, predictions, 3) == pytest.approx((2 / 3 + 1 + 0) / 3)


def test_balanced_accuracy_sees_through_a_majority_guess():
    labels = np.array([1] * 75 + [0] * 25)  # 75% male, like the gender test set
    always_male = np.ones(100, int)
    assert metrics.accuracy(labels, always_male) == 0.75
    assert metrics.balanced_accuracy(labels, always_male, 2) == 0.5


def test_a_class_without_samples_is_nan_and_left_out_of_the_balance():
    recalls = metrics.per_class_accuracy([0, 0, 2], [0, 1, 2], 3)
    assert recalls[0] == 0.5 and np.isnan(recalls[1]) and recalls[2] == 1.0
    assert metrics.balanced_accuracy([0, 0, 2], [0, 1, 2], 3) == 0.75
    assert metrics.confusion_matrix([], [], 2).tolist() == [[0, 0], [0, 0]]
    assert np.isnan(metrics.accuracy([], []))


def test_paired_bootstrap_against_hand_computed_cases():
    same = np.array([1, 0, 1, 1, 0, 1], bool)
    assert metrics.paired_bootstrap(same, same, 100) == (0.0, (0.0, 0.0))  # paired: no spread at all
    assert metrics.paired_bootstrap(np.ones(50, bool), np.zeros(50, bool), 100) == (1.0, (1.0, 1.0))
    # 1000 images, a right on 60 more than b: the difference 0.06, its standard error about
    # sqrt(0.06 / 1000) (discordant pairs all one way), so the 95% interval is about 0.06 +- 0.015
    a = np.zeros(1000, bool)
    a[:560] = True
    b = np.zeros(1000, bool)
    b[:500] = True
    diff, (low, high) = metrics.paired_bootstrap(a, b, 2000)
    assert diff == pytest.approx(0.06)
    assert low == pytest.approx(0.06 - 1.96 * np.sqrt(0.06 * 0.94 / 1000), abs=0.004)
    assert high == pytest.approx(0.06 + 1.96 * np.sqrt(0.06 * 0.94 / 1000), abs=0.004)
