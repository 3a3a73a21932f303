"""``codecnn zoo``: the pretrained networks shipped with codecnn."""

from __future__ import annotations

import json

import click

from codecnn.cli.group import cli


def in_loop_line(r: dict) -> str:
    """A zoo entry's in-loop result (inside HM) in one line: condition, signalling, BD-rate Y per sequence,
    EncT and DecT."""
    seqs = ", ".join(
        f"{s['name']} {s['bd_rate']['y']:+.2f} %" if s["bd_rate"]["y"] is not None else f"{s['name']} n/a"
        for s in r["sequences"]
    )
    t = r["summary"]
    inter = " + inter model" if r.get("inter_model") else ""
    inter += ", before SAO" if r.get("placement") == "before SAO" else ""
    v = r.get("signalling", 1)
    version = {1: "", 2: " v2 (QP searched)", 3: " v3 (QP searched, grouped CTU flags)"}.get(v, f" v{v}")
    return (
        f"in HM, {r['config'].upper()}, signal {r['signal']}{version}{inter}: BD-rate Y {seqs} ({r['label']}); "
        f"EncT {100 * t['enc_t']:.0f} %, DecT {100 * t['dec_t']:.0f} %"
    )


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON list (every entry with its results).")
def zoo(as_json):
    """List the shipped pretrained networks with their measured held-out results.

    Use one with --checkpoint zoo:NAME (evaluate), export zoo:NAME, or train ... --init zoo:NAME.
    """
    from codecnn.zoo import entries

    items = entries()
    if as_json:
        click.echo(json.dumps(items))
        return
    if not items:
        click.echo("no shipped models in this installation")
    for e in items:
        click.echo(
            f"zoo:{e['name']}  ({e['setting']}, {e.get('arch')} {e.get('params', '?')} parameters, "
            f"{e.get('kmac_per_pixel', '?')} kMAC/pixel)"
        )
        for line in e.get("summary", []):
            click.echo(f"    {line}")
        for r in e.get("in_loop", []):
            click.echo(f"    {in_loop_line(r)}")
        click.echo(f"    trained: {e.get('trained', {}).get('command', '?')}")
        click.echo(f"    sha256 {e['sha256']}")
