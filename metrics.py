"""The statistics that score a model and decide what ships, in NumPy.

Balanced accuracy is the mean per-class accuracy (recall): a gender model that always says
"male" scores 0.75 accuracy on a 75% male test set but 0.5 balanced accuracy.

Public names:
  confusion_matrix(labels, predictions, num_classes)    (C, C) counts, rows true, columns predicted
  accuracy(labels, predictions)                         NaN without samples
  per_class_accuracy(labels, predictions, num_classes)  (C,) recalls, NaN for a class without samples
  balanced_accuracy(labels, predictions, num_classes)   mean of the per-class accuracies present
  paired_bootstrap(correct_a, correct_b, resamples, seed=0) -> (difference of the means, its 95% interval)
"""
import numpy as np


def confusion_matrix(labels, predictions, num_classes):
    labels, predictions = np.asarray(labels, np.int64), np.asarray(predictions, np.int64)
    return np.bincount(labels * num_classes + predictions, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def accuracy(labels, predictions):
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    return float(np.mean(labels == predictions)) if len(labels) else float('nan')


def per_class_accuracy(labels, predictions, num_classes):
    cm = confusion_matrix(labels, predictions, num_classes)
    support = cm.sum(axis=1)
    return np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)


def balanced_accuracy(labels, predictions, num_classes):
    recalls = per_class_accuracy(labels, predictions, num_classes)
    present = recalls[~np.isnan(recalls)]
    return float(present.mean()) if present.size else float('nan')


def paired_bootstrap(correct_a, correct_b, resamples, seed=0):
    """(mean(a) - mean(b), (2.5%, 97.5%) of that difference over test sets resampled with replacement):
    a and b are two models' per-face hits on the same faces, resampled together."""
    correct_a, correct_b = np.asarray(correct_a, np.float64), np.asarray(correct_b, np.float64)
    rng = np.random.RandomState(seed)
    diffs = np.empty(resamples)
    for i in range(resamples):
        idx = rng.randint(len(correct_a), size=len(correct_a))
        diffs[i] = correct_a[idx].mean() - correct_b[idx].mean()
    return float(correct_a.mean() - correct_b.mean()), tuple(float(q) for q in np.percentile(diffs, (2.5, 97.5)))
