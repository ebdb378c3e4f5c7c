"""``models.site_imports``: an installed distribution whose name is also a folder of this
checkout (``kernels``) is imported from site-packages even with the checkout's root first on
``sys.path``, as under pytest and ``python -m`` from a checkout."""

from __future__ import annotations

import sys

from lowbit.models.site_imports import CHECKOUT, import_distribution


def test_the_installed_distribution_wins_over_the_checkout_folder(tmp_path, monkeypatch) -> None:
    site = tmp_path / "site"
    (site / "kernels").mkdir(parents=True)
    (site / "kernels" / "__init__.py").write_text('ORIGIN = "site"\n')
    assert (CHECKOUT / "kernels" / "__init__.py").is_file()  # the folder that would shadow it
    monkeypatch.setattr(sys, "path", [str(CHECKOUT), str(site), *sys.path])
    monkeypatch.delitem(sys.modules, "kernels", raising=False)
    import kernels  # noqa: F401 - the checkout's folder, as transformers would get it

    assert getattr(sys.modules["kernels"], "ORIGIN", None) is None
    import_distribution("kernels")
    assert sys.modules["kernels"].ORIGIN == "site"
    assert sys.path[0] == str(CHECKOUT)  # restored
    monkeypatch.delitem(sys.modules, "kernels")
