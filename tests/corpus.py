"""The test corpus: the exporter's varied sentences."""

from bertserve.export.corpus import sentences

__all__ = ["sentences"]
