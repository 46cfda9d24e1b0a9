"""Turning quantized latents into bytes and back: probability tables, a range coder, a container.

``tables`` holds the discrete distributions an entropy model hands over, ``rangecoder`` drives
constriction's range coder with them, ``container`` is the file format (a pure, defensive
``parse``). Nothing here knows about neural networks.
"""

from aevision.coding.container import Header, pack, parse
from aevision.coding.rangecoder import SymbolReader, SymbolWriter
from aevision.coding.tables import ProbabilityTables

__all__ = ["Header", "ProbabilityTables", "SymbolReader", "SymbolWriter", "pack", "parse"]
