"""tg_rapidalign.extras: optional packages fail with the install line that fixes them."""
import pytest

from tg_rapidalign import extras


def test_require_imports_a_present_module():
    assert extras.require("math", "arithmetic").sqrt(4.0) == 2.0


def test_require_names_the_feature_and_the_extra():
    extras.EXTRAS["surely_not_installed_pkg"] = "plot"
    try:
        pattern = r"plotting needs .*surely_not_installed_pkg.*tg_rapidalign\[plot\]"
        with pytest.raises(ImportError, match=pattern):
            extras.require("surely_not_installed_pkg.sub", "plotting")
    finally:
        del extras.EXTRAS["surely_not_installed_pkg"]


def test_has():
    assert extras.has("math") and not extras.has("surely_not_installed_pkg")


def test_progress_disabled_returns_the_iterable_itself():
    items = [1, 2, 3]
    assert extras.progress(items, enabled=False) is items
    assert list(extras.progress(items, enabled=True, disable=True)) == items
