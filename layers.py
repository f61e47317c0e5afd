"""Hand-written layers on low-level TensorFlow ops (graph mode, tf.compat.v1).

Public functions:
  weight_variable(name, shape, stddev=None)   a weight, registered for weight decay
  batch_norm(x, phase_train, name)            batch statistics while training, moving averages otherwise
  conv_bn_relu(x, filters, phase_train, name) 3x3 SAME convolution -> batch norm -> ReLU
  max_pool(x)                                 2x2 max pool, stride 2
  fc_bn_relu_dropout(x, units, phase_train, keep_prob, name)
  fc(x, units, name, stddev=0.01)             the final linear layer of a head: logits

Weight decay is not added here: every weight goes into the WEIGHTS collection and the model's
loss adds the decay over that collection in one place. Biases and batch-norm parameters stay out.
"""
from tf_setup import tf

BN_DECAY = 0.9  # short runs (the demo: ~200 steps) need moving averages that settle fast
BN_EPSILON = 1e-3


def weight_variable(name, shape, stddev=None):
    """He-normal initialised weight (or truncated normal with `stddev`), added to WEIGHTS."""
    if stddev is None:
        init = tf.variance_scaling_initializer(scale=2.0, mode='fan_in', distribution='truncated_normal')
    else:
        init = tf.truncated_normal_initializer(stddev=stddev)
    var = tf.get_variable(name, shape, tf.float32, initializer=init)
    tf.add_to_collection(tf.GraphKeys.WEIGHTS, var)
    return var


def batch_norm(x, phase_train, name='bn'):
    """Fused batch norm over the last axis of a 4-D (NHWC) or 2-D input.

    While phase_train is True it normalises with the batch statistics and puts the moving-average
    updates in UPDATE_OPS (run them with the train op); otherwise it uses the moving averages,
    so a sample's output does not depend on the rest of its batch.
    """
    flat = x.shape.ndims == 2
    if flat:
        x = tf.reshape(x, [-1, 1, 1, x.shape[-1]])
    channels = x.shape[-1]
    with tf.variable_scope(name):
        beta = tf.get_variable('beta', [channels], initializer=tf.zeros_initializer())
        gamma = tf.get_variable('gamma', [channels], initializer=tf.ones_initializer())
        moving_mean = tf.get_variable('moving_mean', [channels], initializer=tf.zeros_initializer(),
                                      trainable=False)
        moving_var = tf.get_variable('moving_variance', [channels], initializer=tf.ones_initializer(),
                                     trainable=False)

        def with_batch_stats():
            return tf.nn.fused_batch_norm(x, gamma, beta, epsilon=BN_EPSILON, is_training=True)

        def with_moving_stats():
            y, _, _ = tf.nn.fused_batch_norm(x, gamma, beta, mean=moving_mean, variance=moving_var,
                                             epsilon=BN_EPSILON, is_training=False)
            return y, tf.identity(moving_mean), tf.identity(moving_var)

        y, mean, var = tf.cond(phase_train, with_batch_stats, with_moving_stats)
        # At inference mean/var are the moving values themselves, so these updates change nothing.
        for moving, value in ((moving_mean, mean), (moving_var, var)):
            tf.add_to_collection(tf.GraphKeys.UPDATE_OPS,
                                 tf.assign_sub(moving, (1.0 - BN_DECAY) * (moving - value)))
    if flat:
        y = tf.reshape(y, [-1, channels])
    return y


def conv_bn_relu(x, filters, phase_train, name):
    with tf.variable_scope(name):
        w = weight_variable('weights', [3, 3, x.shape[-1], filters])
        y = tf.nn.conv2d(x, w, strides=[1, 1, 1, 1], padding='SAME')
        return tf.nn.relu(batch_norm(y, phase_train))


def max_pool(x):
    return tf.nn.max_pool2d(x, ksize=2, strides=2, padding='SAME')


def fc_bn_relu_dropout(x, units, phase_train, keep_prob, name):
    # Batch norm here is what lets the heads train at all: without it they sat at chance on
    # real data for two epochs (../shared/notes/training-calibration.md).
    with tf.variable_scope(name):
        w = weight_variable('weights', [x.shape[-1], units])
        y = tf.nn.relu(batch_norm(tf.matmul(x, w), phase_train))
        return tf.nn.dropout(y, rate=1.0 - keep_prob)


def fc(x, units, name, stddev=0.01):
    with tf.variable_scope(name):
        w = weight_variable('weights', [x.shape[-1], units], stddev=stddev)
        b = tf.get_variable('biases', [units], initializer=tf.zeros_initializer())
        return tf.matmul(x, w) + b
