"""The same trained weights at another image size, for fully convolutional models.

A convolutional autoencoder whose code stays spatial (``codec``, or ``conv`` with
``code_dim=null``) has no weight that depends on the image size: only the reshapes at the ends
and the output padding of the transposed convolutions do. Rebuilding the architecture for the
new size from the model's ``spec`` and loading the same state dict gives a model that takes
images of that size: a codec trained on 128x128 crops compresses 768x512 photographs, a denoiser
trained on crops cleans whole images. Models whose weights do depend on the size (a dense layer
into a flat code) are refused with a one-line error instead of being silently resized.
"""

from __future__ import annotations

from collections.abc import Sequence

from aevision.errors import AevisionError
from aevision.models.base import Autoencoder
from aevision.models.registry import build_model


def at_input_shape(model: Autoencoder, input_shape: Sequence[int]) -> Autoencoder:
    """``model``'s weights in an :class:`Autoencoder` built for ``input_shape`` (C, H, W)."""
    shape = tuple(int(s) for s in input_shape)
    if shape == model.input_shape:
        return model
    if shape[0] != model.input_shape[0]:
        raise AevisionError(f"model takes {model.input_shape[0]}-channel images, got {shape[0]} channels")
    spec = model.spec
    if "name" not in spec:
        raise AevisionError("this model has no spec to rebuild it from (build it with build_model)")
    other = build_model(spec["name"], shape, spec.get("options", {}), spec.get("regularizers", []),
                        spec.get("reconstruction", "mse"))
    state = model.state_dict()
    target = other.state_dict()
    bad = [k for k in target if k not in state or state[k].shape != target[k].shape]
    if bad or set(state) != set(target):
        size = "x".join(map(str, model.input_shape[1:]))
        raise AevisionError(
            f"model {spec['name']!r} cannot take {shape[1]}x{shape[2]} images: its weights depend on the "
            f"image size it was built for ({size}); use a fully convolutional model "
            f"('codec', or 'conv' with model.code_dim=null)"
        )
    other.load_state_dict(state)
    param = next(model.parameters(), None)
    if param is not None:
        other.to(param.device)
    return other.train(model.training)
