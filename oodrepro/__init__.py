"""oodrepro: OOD detection and model-watermarking methods on shared data, backbones and metrics.

Every computation the workflow runs lives in this package, so it can be imported,
tested and reused without Snakemake.
"""

__version__ = "0.1.0"
