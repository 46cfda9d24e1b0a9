"""``aevision benchmark``: models x datasets x protocols x label budgets from one YAML file."""

from aevision.benchmark.config import (
    PRESETS,
    BenchmarkConfig,
    Budget,
    load_benchmark,
    parse_budget,
    parse_budgets,
)
from aevision.benchmark.runner import BenchmarkResult, pretrain_models, run_benchmark

__all__ = [
    "PRESETS",
    "BenchmarkConfig",
    "BenchmarkResult",
    "Budget",
    "load_benchmark",
    "parse_budget",
    "parse_budgets",
    "pretrain_models",
    "run_benchmark",
]
