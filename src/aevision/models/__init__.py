"""Models: architectures (dense, conv, dsae, ...) built from the registry into one Autoencoder type."""

from aevision.models import codec as _codec  # noqa: F401  (registers architectures)
from aevision.models import conv as _conv  # noqa: F401
from aevision.models import dense as _dense  # noqa: F401
from aevision.models import dsae as _dsae  # noqa: F401
from aevision.models import mae as _mae  # noqa: F401
from aevision.models import patches as _patches  # noqa: F401
from aevision.models import unet as _unet  # noqa: F401
from aevision.models import vae as _vae  # noqa: F401
from aevision.models.base import Autoencoder, LossContext, Parts
from aevision.models.io import load_model, save_model
from aevision.models.registry import MODELS, build_model

__all__ = ["MODELS", "Autoencoder", "LossContext", "Parts", "build_model", "load_model", "save_model"]
