"""The house rules of the source tree: the README's Layout section names the modules that exist, and no
library module grows past the size at which it is split (STYLE.md: split a module once it passes ~500 lines;
the hard limit is 520)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 520
FILE_COLUMN = 64  # the Layout block's files stand left of this column, what they do right of it


def test_no_library_module_over_the_limit():
    sizes = {p.relative_to(ROOT): len(p.read_text().splitlines()) for d in ("codecnn", "hm_bridge") for p in
             (ROOT / d).rglob("*.py")}  # fmt: skip
    assert len(sizes) > 20
    over = {str(p): n for p, n in sizes.items() if n > MAX_LINES}
    assert not over, f"split these modules where their parts meet (at most {MAX_LINES} lines): {over}"


def test_readme_layout_names_modules_that_exist():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"^## Layout\n.*?^```\n(.*?)^```", readme, re.S | re.M).group(1)
    folder, named = None, []
    for line in block.splitlines():
        files = line[:FILE_COLUMN]
        if m := re.match(r"^(hm_bridge|codecnn)/", files):
            folder = m.group(1)
        elif m := re.match(r"^  (\w+)/", files):
            folder = f"codecnn/{m.group(1)}"
        elif re.match(r"^  \w+\.py", files):
            folder = "codecnn"
        named += [f"{folder}/{name}" for name in re.findall(r"\b\w+\.py\b", files)]
    assert "codecnn/data/restoration.py" in named and "hm_bridge/patch_hm.py" in named
    missing = [p for p in named if not (ROOT / p).is_file()]
    assert not missing, f"README's Layout names modules that do not exist: {missing}"
