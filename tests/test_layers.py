"""Batch norm (layers.batch_norm) in both phases against a NumPy reference, for conv and FC inputs."""
import numpy as np
import pytest

import layers
import tf_setup

tf = tf_setup.import_tf()

SHAPES = {'conv': (6, 5, 4, 3), 'fc': (10, 3)}  # NHWC and (N, C): statistics per channel, the last axis


def _numpy_batch_norm(x, gamma, beta, mean, var):
    return gamma * (x - mean) / np.sqrt(var + layers.BN_EPSILON) + beta


class _BatchNormGraph(object):
    """layers.batch_norm on a placeholder, with gamma, beta and the moving statistics set to given values."""

    def __init__(self, session, shape, gamma, beta, moving_mean, moving_var):
        self.sess = session
        self.x = tf.placeholder(tf.float32, [None] + list(shape[1:]))
        self.phase_train = tf.placeholder_with_default(False, [])
        self.y = layers.batch_norm(self.x, self.phase_train, name='bn')
        self.updates = tf.get_collection(tf.GraphKeys.UPDATE_OPS)
        variables = {v.op.name.split('/')[-1]: v for v in tf.global_variables()}
        self.moving = [variables['moving_mean'], variables['moving_variance']]
        session.run(tf.global_variables_initializer())
        for name, value in (('gamma', gamma), ('beta', beta), ('moving_mean', moving_mean),
                            ('moving_variance', moving_var)):
            variables[name].load(value, session)

    def step(self, x, training):
        """One forward pass that also runs the moving-average updates, as the train op does."""
        y, _ = self.sess.run([self.y, self.updates], {self.x: x, self.phase_train: training})
        return y

    def moving_stats(self):
        return self.sess.run(self.moving)


@pytest.fixture(params=sorted(SHAPES))
def case(request):
    rng = np.random.RandomState(list(SHAPES).index(request.param))
    shape = SHAPES[request.param]
    channels = shape[-1]
    params = dict(gamma=rng.uniform(0.5, 2.0, channels), beta=rng.normal(0, 1, channels),
                  moving_mean=rng.normal(0, 1, channels), moving_var=rng.uniform(0.5, 3.0, channels))
    params = {k: v.astype(np.float32) for k, v in params.items()}
    # Each channel its own offset and scale, so a statistic over the wrong axes gives other numbers.
    batches = [(rng.normal(0, 1, shape) * rng.uniform(0.5, 4, channels) + rng.normal(0, 3, channels))
               .astype(np.float32) for _ in range(2)]
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as session:
        yield _BatchNormGraph(session, shape, **params), params, batches


def test_training_normalises_with_batch_statistics_and_updates_moving_averages(case):
    bn, p, batches = case
    mean, var = p['moving_mean'].astype(np.float64), p['moving_var'].astype(np.float64)
    for x in batches:  # two steps, so the second update starts from an updated average
        axes = tuple(range(x.ndim - 1))  # every axis but the channels: (N, H, W) or (N,)
        n = np.prod([x.shape[a] for a in axes])
        batch_mean = x.astype(np.float64).mean(axes)
        batch_var = x.astype(np.float64).var(axes)  # biased: the normalisation divides by n
        y = bn.step(x, training=True)
        np.testing.assert_allclose(y, _numpy_batch_norm(x, p['gamma'], p['beta'], batch_mean, batch_var),
                                   rtol=1e-5, atol=1e-5)
        # The moving variance tracks the unbiased batch variance (Bessel's n / (n - 1)), as Keras does.
        mean = layers.BN_DECAY * mean + (1 - layers.BN_DECAY) * batch_mean
        var = layers.BN_DECAY * var + (1 - layers.BN_DECAY) * batch_var * n / (n - 1)
        got_mean, got_var = bn.moving_stats()
        np.testing.assert_allclose(got_mean, mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got_var, var, rtol=1e-5, atol=1e-6)


def test_inference_uses_the_moving_statistics_and_leaves_them_alone(case):
    bn, p, batches = case
    x = batches[0]
    y = bn.step(x, training=False)
    np.testing.assert_allclose(y, _numpy_batch_norm(x, p['gamma'], p['beta'], p['moving_mean'], p['moving_var']),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bn.step(x[:1], training=False), y[:1], rtol=1e-6, atol=1e-6)  # per sample
    got_mean, got_var = bn.moving_stats()
    np.testing.assert_array_equal(got_mean, p['moving_mean'])
    np.testing.assert_array_equal(got_var, p['moving_var'])
