"""Exporting trained networks to ONNX or TorchScript, with parity checks on real images.

    from aevision.tasks.export import export_model
    export_model("runs/ae", "exported/", fmt="onnx")   # encoder.onnx, decoder.onnx, export.json
"""

from aevision.tasks.export.model_export import ExportResult, export_model

__all__ = ["ExportResult", "export_model"]
