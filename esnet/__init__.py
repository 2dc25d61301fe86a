"""esnet: ES-Net for re-identification, and the tools to see what it learns."""

__version__ = "0.1.0"
