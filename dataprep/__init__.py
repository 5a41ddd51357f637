"""dataprep: images to Caffe-compatible training stores, from the shell."""

__version__ = "0.1.0"
