"""Start-up of a short command that needs TensorFlow: `with lean_imports(): import ...`.

`import keras` (TensorFlow with it) builds millions of Python objects: about 4 s on 2 idle cores, the
most of a `segmentation predict` run. Two of its costs are no part of a command's work:
- Keras probes optional integrations when it is imported: scikit-learn (`keras.wrappers`), pandas
  (frames in `fit`), matplotlib (`keras.visualization`) and IPython (`keras.saving`), about 1.4 s
  together here. Inside the block these probes, and only those made by Keras' own modules, find the
  packages absent, so those integrations stay off in this process. The project's own imports of the
  same packages, inside the block or after it, are untouched.
- The cyclic garbage collector walks the growing heap again and again while the modules load, and
  once more at interpreter exit (about 1.3 s). It is paused inside the block, and everything alive
  at its end is frozen (`gc.freeze`: kept out of every later collection; reference counting still
  frees it).
"""

from __future__ import annotations

import contextlib
import gc
import importlib.abc
import sys
from collections.abc import Iterator
from types import FrameType

KERAS_OPTIONAL = frozenset({"sklearn", "pandas", "matplotlib", "IPython"})  # top-level package names


@contextlib.contextmanager
def lean_imports() -> Iterator[None]:
    """Imports in the block skip Keras' optional integrations and run without the cyclic collector;
    what is alive at the end is frozen (see the module docstring)."""
    finder = _SkipKerasProbes()
    collecting = gc.isenabled()
    gc.disable()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        gc.freeze()
        if collecting:
            gc.enable()


class _SkipKerasProbes(importlib.abc.MetaPathFinder):
    """Answers "not installed" to Keras' own imports of `KERAS_OPTIONAL` packages; passes the rest on."""

    def find_spec(self, fullname, path, target=None):  # noqa: ANN001 (importlib's signature)
        if fullname.partition(".")[0] in KERAS_OPTIONAL and _importer(sys._getframe(1)).startswith("keras."):
            raise ModuleNotFoundError(f"No module named {fullname!r} (skipped for Keras)", name=fullname)
        return None


def _importer(frame: FrameType | None) -> str:
    """The name of the module whose import statement is running: the first frame outside importlib."""
    while frame is not None and frame.f_globals.get("__name__", "").startswith("importlib"):
        frame = frame.f_back
    return "" if frame is None else str(frame.f_globals.get("__name__", ""))
