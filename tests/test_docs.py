"""Every Python snippet of the README and the docs runs as written, in order, in a fresh folder."""

import glob
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "**", "*.md"),
                                                              recursive=True))


def snippets(path):
    return re.findall(r"^```python\n(.*?)^```", open(path, encoding="utf-8").read(), re.S | re.M)


def test_the_readme_has_snippets():
    assert len(snippets(PAGES[0])) >= 3


@pytest.mark.parametrize("page", PAGES, ids=lambda p: os.path.relpath(p, ROOT))
def test_snippets_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__snippet__"}
    for number, code in enumerate(snippets(page), 1):
        try:
            exec(compile(code, f"{os.path.basename(page)} snippet {number}", "exec"), namespace)
        except Exception as error:  # the page and the snippet, not only the line
            raise AssertionError(f"{page} snippet {number} fails: {error!r}\n{code}") from error
