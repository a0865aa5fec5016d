"""Deprecated: moved to :mod:`securefl.demo.fl`.

Every public name still resolves here, with a ``DeprecationWarning``, until the next release.
"""

from securefl.fl._moved import moved

__getattr__, __dir__ = moved(__name__, "securefl.demo.fl")
