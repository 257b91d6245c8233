"""wakeguard.edge: the light runtime that runs on the Pi.

Imports nothing from ``wakeguard.model`` or ``wakeguard.tools`` and needs none of
TensorFlow, Keras, librosa or scikit-learn: numpy, soundfile and a LiteRT interpreter only.
"""

__version__ = "0.1.0"
