"""imagesim: a layered image and container simulator on the ``unionfs`` engine."""

__version__ = "0.1.0"
