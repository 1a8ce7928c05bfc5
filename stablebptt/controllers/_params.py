"""Flat parameter vectors with named per-layer views in Keras layout (shared by the controllers)."""

import functools
import math

import numpy as np


class FlatParameters:
    """Mixin for controllers that define ``layer_shapes()``: ``[(name, shape), ...]`` in Keras order."""

    @functools.cached_property
    def param_layout(self):
        """``[(name, offset, shape), ...]`` of each array in the flat parameters, Keras order;
        worked out once (the controllers are frozen dataclasses): the engine's per-batch work
        reads it."""
        arrays, offset = [], 0
        for name, shape in self.layer_shapes():
            arrays.append((name, offset, shape))
            offset += math.prod(shape)
        return arrays

    @functools.cached_property
    def n_params(self):
        return sum(math.prod(shape) for _, _, shape in self.param_layout)

    def views(self, theta):
        """Per-layer views into the flat parameters, Keras layout, as ``{name: array}``."""
        return {name: theta[offset:offset + math.prod(shape)].reshape(shape)
                for name, offset, shape in self.param_layout}

    def flatten(self, arrays, dtype=np.float32):
        """The flat parameter vector from ``{name: array}`` in Keras layout (inverse of ``views``)."""
        missing = [name for name, _ in self.layer_shapes() if name not in arrays]
        if missing:
            raise ValueError(f"missing parameter arrays: {', '.join(missing)}")
        return np.concatenate([np.asarray(arrays[name], dtype=dtype).reshape(-1)
                               for name, _ in self.layer_shapes()])


def glorot_uniform(rng, shape, fan_in, fan_out):
    """Keras' default kernel initialiser: uniform in +-sqrt(6 / (fan_in + fan_out))."""
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape)
