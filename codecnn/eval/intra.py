"""Evaluating the intra-mode network: how good a mode ranking is for an encoder that fully tests only its
first k modes.

For every block: is the label's best mode among the first k (recall@k), and how much more does the
best of those k modes cost than the best mode (relative cost increase@k), for k = 1, 3, 8. Two
baselines on the same blocks:

* ``hm_rmd``: HM's rough mode decision, the modes of lowest Hadamard SATD, 8 for 4x4/8x8 and 3 for
  16x16/32x32 (HM adds the most probable modes to that list; they are the next baseline's business);
* ``planar_dc_mpm``: planar, DC and the three most probable modes (H.265 8.4.2) derived from the left
  and above blocks of the same size, whose best labels stand in for their coded modes.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from codecnn.data.intra import IntraModeDataset
from codecnn.errors import CodecnnError
from codecnn.files import atomic_write_text
from codecnn.hevc import HM_CTU

KS = (1, 3, 8)
HM_RMD_K = {4: 8, 8: 8, 16: 3, 32: 3}


def mpm_list(left: int, above: int) -> tuple[int, int, int]:
    """H.265 8.4.2: the three most probable modes from the left (A) and above (B) modes."""
    a, b = left, above
    if a == b:
        if a < 2:
            return 0, 1, 26
        return a, 2 + ((a + 29) % 32), 2 + ((a - 2 + 1) % 32)
    if a != 0 and b != 0:
        c = 0
    elif a != 1 and b != 1:
        c = 1
    else:
        c = 26
    return a, b, c


def neighbour_mpms(pos: np.ndarray, best: np.ndarray, key: np.ndarray, n: int, ctu: int = HM_CTU) -> np.ndarray:
    """(B, 3) MPMs of each block from the labels of its left and above neighbours of the same size and
    frame (``key`` groups the blocks of one frame); a missing neighbour, or an above one in another CTU
    row (as HM), counts as DC."""
    table = {(int(k), int(y), int(x)): int(m) for k, (y, x), m in zip(key, pos, best, strict=False)}
    out = np.empty((len(pos), 3), np.int64)
    for i, (k, (y, x)) in enumerate(zip(key, pos, strict=False)):
        a = table.get((int(k), int(y), int(x) - n), 1)
        b = table.get((int(k), int(y) - n, int(x)), 1) if y % ctu else 1
        out[i] = mpm_list(a, b)
    return out


def candidate_metrics(cands: list, costs: np.ndarray, best: np.ndarray) -> dict:
    """Recall and mean relative cost increase of candidate lists (one list per block)."""
    hit = np.array([b in c for b, c in zip(best, cands, strict=False)])
    base = costs[np.arange(len(best)), best]
    got = np.array([costs[i, list(c)].min() for i, c in enumerate(cands)])
    return {
        "recall": float(hit.mean()),
        "cost_increase": float(np.mean((got - base) / np.maximum(base, 1.0))),
        "modes": float(np.mean([len(c) for c in cands])),
    }


def ranking_metrics(scores: np.ndarray, costs: np.ndarray, best: np.ndarray) -> dict:
    """recall@k and cost increase@k of a ranking (higher score = tried first) for k in :data:`KS`."""
    order = np.argsort(-scores, axis=1, kind="stable")
    out = {}
    for k in KS:
        m = candidate_metrics(order[:, :k].tolist(), costs, best)
        out[f"top{k}"] = m["recall"]
        out[f"cost_increase_top{k}"] = m["cost_increase"]
    return out


PRUNE_KS = (1, 2, 3, 4, 6, 8, 10, 12)


def pruned_rmd(scores: np.ndarray, hadamard: np.ndarray, mpm: np.ndarray, n: int, k: int | None):
    """HM's rough mode decision restricted to the network's top ``k`` modes plus the MPMs (``k=None``: all 35
    modes, HM's own RMD): Hadamard SATD is evaluated on those modes only, the ``HM_RMD_K[n]`` of lowest
    SATD are kept (ties to the lower mode, as HM) and the MPMs are added, as HM's list for the full RD search.
    Returns (the candidate lists, the number of SATD evaluations of each block)."""
    keep = HM_RMD_K[n]
    order = np.argsort(-scores, axis=1, kind="stable") if k is not None else None
    lists, evals = [], []
    for i, h in enumerate(hadamard):
        allowed = np.arange(h.shape[0]) if k is None else np.array(sorted({*order[i, :k].tolist(), *mpm[i]}))
        kept = allowed[np.argsort(h[allowed], kind="stable")[:keep]]
        lists.append(sorted({*kept.tolist(), *mpm[i].tolist()}))
        evals.append(len(allowed))
    return lists, np.array(evals, np.float64)


def pruned_rmd_metrics(scores: np.ndarray, d: dict, mpm: np.ndarray, n: int) -> dict:
    """The encoder's question: recall of the label's best mode, cost increase and SATD evaluations of the
    pruned RMD for each k in :data:`PRUNE_KS`, beside HM's full 35-mode RMD (``full``), both with the MPMs
    added. ``recall_vs_full`` is the share of the full RMD's recall kept."""
    lists, evals = pruned_rmd(scores, d["hadamard"], mpm, n, None)
    full = {**candidate_metrics(lists, d["costs"], d["best"]), "satd_evaluations": float(evals.mean())}
    out = {"full": full}
    for k in PRUNE_KS:
        lists, evals = pruned_rmd(scores, d["hadamard"], mpm, n, k)
        m = candidate_metrics(lists, d["costs"], d["best"])
        m["satd_evaluations"] = float(evals.mean())
        m["recall_vs_full"] = m["recall"] / full["recall"] if full["recall"] else float("nan")
        out[str(k)] = m
    return out


def evaluate_rankings(scores: dict[int, np.ndarray], data: dict[int, dict]) -> dict:
    """Metrics per block size and overall (pooled over all blocks) of the network and the baselines.

    ``data[n]`` holds ``costs``, ``best``, ``hadamard``, ``pos`` and ``key`` (frame grouping) of the
    blocks of size n; ``scores[n]`` the network's logits for them.
    """
    per = {}
    pooled = defaultdict(list)
    for n in sorted(data):
        d = data[n]
        net = ranking_metrics(scores[n], d["costs"], d["best"])
        rmd = [list(np.argsort(h, kind="stable")[: HM_RMD_K[n]]) for h in d["hadamard"]]
        mpm = neighbour_mpms(d["pos"], d["best"], d["key"], n)
        pdm = [sorted({0, 1, *m}) for m in mpm]
        per[str(n)] = {
            "blocks": int(len(d["best"])),
            "network": net,
            "hm_rmd": candidate_metrics(rmd, d["costs"], d["best"]),
            "planar_dc_mpm": candidate_metrics(pdm, d["costs"], d["best"]),
            "pruned_rmd": pruned_rmd_metrics(scores[n], d, mpm, n),
        }
        w = len(d["best"])
        pooled["pruned_rmd"].append((w, per[str(n)]["pruned_rmd"]))
        for name, v in (
            ("network", net),
            ("hm_rmd", per[str(n)]["hm_rmd"]),
            ("planar_dc_mpm", per[str(n)]["planar_dc_mpm"]),
        ):
            pooled[name].append((w, v))

    def pool(items):
        total = sum(w for w, _ in items)
        return {
            k: pool([(w, v[k]) for w, v in items])
            if isinstance(items[0][1][k], dict)
            else sum(w * v[k] for w, v in items) / total
            for k in items[0][1]
        }

    overall = {name: pool(items) for name, items in pooled.items()}
    for v in overall["pruned_rmd"].values():  # a ratio of pooled recalls, not a pooled ratio
        if "recall_vs_full" in v:
            full = overall["pruned_rmd"]["full"]["recall"]
            v["recall_vs_full"] = v["recall"] / full if full else float("nan")
    return {"per_size": per, "overall": overall}


def rows_with_total(r: dict) -> list[tuple[str, dict]]:
    """(block size, figures) rows of :func:`evaluate_rankings`' result, then ("all", pooled figures)."""
    total = sum(x["blocks"] for x in r["per_size"].values())
    return list(r["per_size"].items()) + [("all", {**r["overall"], "blocks": total})]


def render_mode_report(r: dict) -> str:
    """The Markdown report of an intra-mode evaluation (``evaluate-modes``)."""
    lines = [
        f"# intra-mode prediction: {r['checkpoint']} on {r['data']} ({r['split']})",
        "",
        f"Labels: {r['cost']} cost, {r['loop']} loop. recall = the best mode is among the candidates; "
        "cost+ = mean relative cost increase of the best candidate over the best mode.",
        "",
        "| N | blocks | top-1 | top-3 | top-8 | cost+ top-1 | cost+ top-3 | cost+ top-8 | HM RMD recall | "
        "HM RMD cost+ | planar+DC+MPM recall | planar+DC+MPM cost+ |",
        "|" + "---|" * 12,
    ]
    for n, v in rows_with_total(r):
        a, b, c = v["network"], v["hm_rmd"], v["planar_dc_mpm"]
        lines.append(
            f"| {n} | {v['blocks']} | {a['top1']:.3f} | {a['top3']:.3f} | {a['top8']:.3f} | "
            f"{a['cost_increase_top1']:.4f} | {a['cost_increase_top3']:.4f} | {a['cost_increase_top8']:.4f} | "
            f"{b['recall']:.3f} | {b['cost_increase']:.4f} | {c['recall']:.3f} | {c['cost_increase']:.4f} |"
        )
    lines += [
        "",
        "## Pruned rough mode decision",
        "",
        "Hadamard SATD over the network's top k modes plus the three MPMs only, HM's candidate count kept (8 for "
        "4x4/8x8, 3 above), MPMs added; k = 35 is HM's full RMD. SATD = Hadamard evaluations per block.",
        "",
        "```",
        *pruned_table_lines(r),
        "```",
    ]
    return "\n".join(lines) + "\n"


def pruned_table_lines(r: dict) -> list[str]:
    """The pruned-RMD table: per block size and overall, for each k, recall of the best mode (and its share of
    the full RMD's), cost increase and Hadamard SATD evaluations per block."""
    lines = [f"{'N':>4} {'k':>4} {'SATD':>6} {'recall':>7} {'of full':>8} {'cost+':>8}"]
    for n, v in rows_with_total(r):
        p = v["pruned_rmd"]
        for k, m in [("35", p["full"]), *((k, p[str(k)]) for k in PRUNE_KS)]:
            share = f"{m['recall_vs_full']:>8.3f}" if "recall_vs_full" in m else f"{'(full)':>8}"
            lines.append(
                f"{n:>4} {k:>4} {m['satd_evaluations']:>6.1f} {m['recall']:>7.3f} {share} {m['cost_increase']:>8.4f}"
            )
    return lines


def mode_table_lines(r: dict) -> list[str]:
    """The console table of :func:`mode_metrics` results: per block size and overall, the network's recall
    beside the two baselines."""
    lines = [
        f"{'N':>4} {'blocks':>7} {'top1':>6} {'top3':>6} {'top8':>6} {'cost+@3':>8} | "
        f"{'HM RMD':>7} {'cost+':>7} | {'P+DC+MPM':>8} {'cost+':>7}"
    ]
    for n, v in rows_with_total(r):
        net, rmd, mpm = v["network"], v["hm_rmd"], v["planar_dc_mpm"]
        lines.append(
            f"{n:>4} {v['blocks']:>7} {net['top1']:>6.3f} {net['top3']:>6.3f} {net['top8']:>6.3f} "
            f"{net['cost_increase_top3']:>8.4f} | {rmd['recall']:>7.3f} {rmd['cost_increase']:>7.4f} | "
            f"{mpm['recall']:>8.3f} {mpm['cost_increase']:>7.4f}"
        )
    return lines


VAL_BATCH = 256


@torch.no_grad()
def mode_metrics(model: nn.Module, ds: IntraModeDataset, device: torch.device) -> dict:
    """Network and baseline metrics on every block of ``ds`` (see the module docstring)."""
    model.eval()
    scores, data = {}, {}
    for n in sorted(ds.rows):
        b = ds.inputs(n)
        out = []
        for s in range(0, len(b["qp"]), VAL_BATCH):
            sl = slice(s, s + VAL_BATCH)
            out.append(
                model(b["input"][sl].to(device), b["block_size"][sl].to(device), b["qp"][sl].to(device)).float().cpu()
            )
        scores[n] = torch.cat(out).numpy()
        data[n] = ds.arrays(n)
    model.train()
    return evaluate_rankings(scores, data)


def evaluate_checkpoint(checkpoint, data, split: str, out) -> tuple[dict, dict[str, Path]]:
    """Evaluate a mode-network checkpoint on the ``split`` blocks of an intra-modes dataset (CPU); writes
    ``results.json`` and ``report.md`` into ``out``; returns the results and the written paths."""
    from codecnn.train.checkpoint import load_model

    model, ckpt = load_model(checkpoint, task="intra-modes")
    ds = IntraModeDataset(data, split)
    if len(ds) == 0:
        raise CodecnnError(f"{data}: no block in split {split!r}")
    r = mode_metrics(model, ds, torch.device("cpu"))
    r.update(
        checkpoint=str(checkpoint),
        step=ckpt.get("step"),
        data=str(data),
        split=split,
        cost=str(ds.info.attrs.get("cost")),
        loop=str(ds.info.attrs.get("loop")),
    )
    o = Path(out)
    o.mkdir(parents=True, exist_ok=True)
    written = {
        "results": atomic_write_text(o / "results.json", json.dumps(r, indent=1)),
        "report": atomic_write_text(o / "report.md", render_mode_report(r)),
    }
    return r, written
