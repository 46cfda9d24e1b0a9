"""Saving and loading trained models: ``model.safetensors`` + ``config.json``, never pickle.

The JSON holds what is needed to rebuild the architecture (registry name, options, regularizers,
input shape) plus provenance (the full run config, aevision's version); the safetensors file holds
the weights. Loading rebuilds the model from the registry and loads the weights strictly, so a
file that does not match its config is an error, not a half-loaded model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from aevision.config import DataConfig, from_dict
from aevision.data.splits import Carve
from aevision.errors import AevisionError
from aevision.io import read_json, read_safetensors, user_path, write_json, write_safetensors
from aevision.models.base import Autoencoder
from aevision.models.registry import build_model

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
FORMAT = 1


def save_model(model: Autoencoder, folder: str | os.PathLike[str],
               extra: dict[str, Any] | None = None) -> Path:
    """Write ``folder/model.safetensors`` and ``folder/config.json`` (each atomically)."""
    from aevision.provenance import __version__

    folder = Path(folder)
    config = {"format": FORMAT, "aevision_version": __version__, "model": model.spec, **(extra or {})}
    state = {k: v for k, v in model.state_dict().items()}
    write_safetensors(folder / WEIGHTS, state, metadata={"format": "aevision", "version": str(FORMAT)})
    write_json(folder / CONFIG, config)
    return folder


def model_files(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """(folder, weights file) of a saved model given as its run folder (holding
    ``model.safetensors`` and ``config.json``) or as the ``.safetensors`` file itself."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return path.parent, path
    return path, path / WEIGHTS


def read_saved_config(path: str | os.PathLike[str], what: str = "model") -> tuple[Path, Path, Any]:
    """(folder, weights file, the content of ``config.json``) of a saved model or segmenter; a
    missing folder or config is a one-line error naming ``what`` it should have been."""
    folder, weights = model_files(path)
    if not folder.exists():
        raise AevisionError(f"{folder}: no such {what} folder")
    return folder, weights, read_json(folder / CONFIG, f"{what} config")


def check_format(config: dict[str, Any], where: Path, newest: int = FORMAT) -> None:
    """A config written by a newer aevision than this one is an error, not a guess."""
    if config.get("format", newest) > newest:
        raise AevisionError(f"{where}: made by a newer aevision (format {config['format']}); "
                            f"upgrade aevision")


def saved_run(path: str | os.PathLike[str]) -> tuple[dict[str, Any], int]:
    """The run config recorded in a saved model's ``config.json`` (empty when there is none) and
    its seed (0 when it records none)."""
    folder, _ = model_files(path)
    saved = read_json(folder / CONFIG, "model config")
    run = saved.get("config") if isinstance(saved, dict) else None
    run = run if isinstance(run, dict) else {}
    return run, run.get("seed", 0) if isinstance(run.get("seed", 0), int) else 0


def trained_on(path: str | os.PathLike[str]) -> DataConfig | None:
    """The data config a saved model was pretrained on; None when its ``config.json`` records none."""
    data = saved_run(path)[0].get("data")
    return from_dict(DataConfig, data, "data") if isinstance(data, dict) else None


def pretraining_carve(model_path: str | os.PathLike[str] | None, dataset: str | None) -> Carve | None:
    """How the model's pretraining took its train and validation images from ``dataset`` (its
    config.json), so that a command's ``--split train`` and ``val`` are its own splits; None when
    there is no model folder, it was pretrained on other data, or its config does not say."""
    if not model_path or not dataset:
        return None
    try:
        cfg, seed = trained_on(model_path), saved_run(model_path)[1]
    except (AevisionError, OSError):
        return None
    if cfg is None or not same_dataset(cfg.name, dataset):
        return None
    return Carve(cfg.val_fraction, seed, cfg.limit, dict(cfg.options) or None)


def same_dataset(a: str, b: str) -> bool:
    """Whether two ``data.name`` values name the same data: equal, or the same kind of dataset over
    paths that resolve to the same file or folder (``folder:cif``, ``folder:./cif``, an absolute path)."""
    if a == b:
        return True
    (kind_a, _, path_a), (kind_b, _, path_b) = a.partition(":"), b.partition(":")
    if kind_a != kind_b or not path_a or not path_b:
        return False
    try:
        found_a, found_b = user_path(path_a), user_path(path_b)
        return found_a.exists() and found_b.exists() and found_a.resolve() == found_b.resolve()
    except (OSError, AevisionError):  # an unknown user's home: not the same
        return False


def load_model(path: str | os.PathLike[str], device: str = "cpu") -> Autoencoder:
    """Rebuild a saved model, in eval mode, ready to ``encode``.

    ``path`` is the run folder (holding ``model.safetensors`` and ``config.json``) or the
    ``.safetensors`` file itself.
    """
    folder, weights, config = read_saved_config(path)
    spec = config.get("model") if isinstance(config, dict) else None
    if not isinstance(spec, dict) or "name" not in spec or "input_shape" not in spec:
        raise AevisionError(f"{folder / CONFIG}: not an aevision model config (no 'model' section)")
    check_format(config, folder / CONFIG)
    model = build_model(
        spec["name"], spec["input_shape"], spec.get("options", {}),
        spec.get("regularizers", []), spec.get("reconstruction", "mse"),
    )
    load_weights_strict(model, weights, folder / CONFIG)
    return model.to(device).eval()


def load_weights_strict(module: nn.Module, weights: Path, config: Path) -> None:
    """Load ``weights`` into ``module`` (rebuilt from ``config``): every tensor, right shapes, or a
    one-line error; never a half-loaded model."""
    state = read_safetensors(weights, "model weights")
    missing, unexpected = _diff(module.state_dict(), state)
    if missing or unexpected:
        raise AevisionError(
            f"{weights}: weights do not match {config} "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    for key, value in module.state_dict().items():
        if state[key].shape != value.shape:
            raise AevisionError(
                f"{weights}: tensor {key} has shape {tuple(state[key].shape)}, "
                f"config says {tuple(value.shape)}"
            )
    module.load_state_dict(state, strict=True)


def _diff(expected: dict[str, Any], found: dict[str, Any]) -> tuple[list[str], list[str]]:
    return sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
