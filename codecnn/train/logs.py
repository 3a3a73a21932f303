"""Run logs: every logged step as a JSON line, and PNG curves redrawn as training goes."""

from __future__ import annotations

import json
import os
from pathlib import Path

from codecnn.files import atomic_write, atomic_write_text


class RunLog:
    """``DIR/log.jsonl`` (one JSON object per logged step or validation) and ``DIR/curves.png``."""

    def __init__(self, out_dir: str | os.PathLike, resume_step: int | None = None):
        self.dir = Path(out_dir)
        self.path = self.dir / "log.jsonl"
        self.records: list[dict] = []
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:  # blank, or cut off by a crash mid-write
                    continue
                if isinstance(r, dict):
                    if resume_step is None or r.get("step", 0) <= resume_step:
                        self.records.append(r)
            self._rewrite()  # drop what a crashed run logged after its last checkpoint

    def _rewrite(self) -> None:
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.records))

    def append(self, record: dict) -> None:
        self.records.append(record)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def plot(self, title: str = "") -> Path:
        """Training loss and the validation score(s) against the step, in one PNG."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        train = [r for r in self.records if r.get("kind") == "train"]
        val = [r for r in self.records if r.get("kind") == "val"]
        fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
        if train:
            a.plot([r["step"] for r in train], [r["loss"] for r in train], lw=1)
        a.set_xlabel("step")
        a.set_ylabel("training loss")
        a.set_yscale("log")
        a.grid(alpha=0.3)
        series: dict[str, list] = {}
        for r in val:
            for name, v in r.get("curves", {}).items():
                series.setdefault(name, []).append((r["step"], v))
        for name, pts in sorted(series.items()):
            b.plot(*zip(*pts, strict=False), marker="o", ms=3, label=name)
        b.set_xlabel("step")
        b.set_ylabel(val[-1].get("curve_label", "validation") if val else "validation")
        b.grid(alpha=0.3)
        if series:
            b.legend(fontsize=8)
        fig.suptitle(title)
        fig.tight_layout()
        out = self.dir / "curves.png"
        with atomic_write(out) as tmp:
            fig.savefig(tmp, dpi=90, format="png")
        plt.close(fig)
        return out
