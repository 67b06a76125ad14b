"""`common.startup.lean_imports`: Keras' own probes of optional packages fail inside the block, every
other import works, and the garbage collector is back as it was afterwards."""

from __future__ import annotations

import gc
import sys

import pytest

from common import startup

PROBED = "lean_imports_probe_package"  # stands in for sklearn, pandas, ...: never imported elsewhere


def import_from(module_name: str) -> None:
    """Runs `import PROBED` as an import statement of the module `module_name`."""
    exec(f"import {PROBED}", {"__name__": module_name})


@pytest.fixture
def probe_package(tmp_path, monkeypatch):
    (tmp_path / PROBED).mkdir()
    (tmp_path / PROBED / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(startup, "KERAS_OPTIONAL", frozenset({PROBED}))
    yield
    sys.modules.pop(PROBED, None)


def test_keras_probes_find_the_package_absent_inside_the_block_only(probe_package):
    with startup.lean_imports():
        assert not gc.isenabled()
        with pytest.raises(ModuleNotFoundError, match="skipped for Keras"):
            import_from("keras.src.wrappers.fixes")
        assert PROBED not in sys.modules
        import_from("data_prep.io")  # the project's own import of the same package works
        assert PROBED in sys.modules
    sys.modules.pop(PROBED)
    import_from("keras.src.wrappers.fixes")  # after the block Keras imports it too
    assert PROBED in sys.modules
    assert gc.isenabled() and not any(isinstance(f, startup._SkipKerasProbes) for f in sys.meta_path)


def test_the_collector_stays_off_when_it_was_off():
    gc.disable()
    try:
        with startup.lean_imports():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
