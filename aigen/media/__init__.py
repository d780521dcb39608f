"""Media layer: procedural art, H.264 encoding and probing; submodules import numpy/av/PIL lazily so the CLI stays fast."""
