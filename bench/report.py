"""The table printed at the end of a run, and the chart (PNG) for docs/benchmarks.md."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

TARGETS = {
    "render_vs_floor": 1.3,
    "vs_vips": 3.5,
    "photos_per_s": 150.0,
    "light_p99_ms": 250.0,
    "new_during_backlog_p99_ms": 1000.0,
    "burst_rss_mb": 400.0,
    "startup_s": 15.0,
    "startup_rss_mb": 300.0,
}


def _num(v: Any, fmt: str = ".1f") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, fmt)


def _mark(ok: bool | None) -> str:
    return "" if ok is None else ("  ok" if ok else "  MISSED")


def _upright(photo: dict[str, Any]) -> str:
    """` upright`: a photo stored on its side (EXIF orientation 5-8), shown portrait."""
    return " upright" if photo.get("orientation", 1) in (5, 6, 7, 8) else ""


def _scales(photo: dict[str, Any]) -> str:
    """`1/2 1/4`: the floor's DCT scale, then render()'s when it differs."""
    floor, rendered = photo["floor_scale"], photo.get("render_scale", photo["floor_scale"])
    return floor if rendered == floor else f"{floor} {rendered}"


def table(results: dict[str, Any]) -> str:
    lines: list[str] = []
    add = lines.append
    r = results.get("render")
    if r:
        add("render() alone, ms CPU per photo (median of repeats, one core)")
        add(
            f"  {'photo':30} {'MP':>5} {'scales':>7} {'floor':>7} {'render':>7} {'x floor':>8}"
            f" {'seed':>7} {'seed/render':>11} {'PSNR vs seed (dB)':>20}"
        )
        for p in r["photos"]:
            ps = "/".join(_num(v["vs_seed"]) for v in p["psnr_db"].values())
            add(
                f"  {p['photo'][:30]:30} {p['megapixels']:5.1f} {_scales(p):>7}"
                f" {p['floor_ms']:7.1f} {p['render_ms']:7.1f} {p['render_vs_floor']:8.2f}"
                f" {p['seed_ms']:7.1f} {p['seed_vs_render']:11.1f} {ps:>20}"
            )
        for label, key in (("all photos", "summary"), ("phone photos", "phone_summary")):
            s = r.get(key)
            if not s:
                continue
            ok = s["render_vs_floor"] <= TARGETS["render_vs_floor"]
            add(
                f"  {label}: floor {s['floor_ms']:.1f}, render {s['render_ms']:.1f}"
                f" ({s['render_vs_floor']:.2f}x floor, worst {s['worst_render_vs_floor']:.2f}x),"
                f" seed {s['seed_ms']:.1f} ({s['seed_vs_render']:.1f}x render);"
                f" min PSNR vs seed {s['min_psnr_vs_seed_db']}{_mark(ok)}"
            )
        for p in r.get("scale", []):
            add(
                f"  scale {p['megapixels']:5.1f} MP{_upright(p)} ({_scales(p)}): floor"
                f" {p['floor_ms']:.1f}, render"
                f" {p['render_ms']:.1f} ({p['render_vs_floor']:.2f}x), seed {p['seed_ms']:.1f};"
                f" a fresh worker's peak RSS {_num(p.get('rss_before_mb'), '.0f')} ->"
                f" {_num(p.get('rss_after_mb'), '.0f')} MB"
            )
        add("")
    rows = throughput_rows(results)
    if rows:
        add(f"end to end, {results['config']['workers']} processes each")
        add(
            f"  {'':32} {'photos':>6} {'photos/s':>9} {'vs vips':>8} {'CPU ms/ph':>9}"
            f" {'p50 ms':>8} {'p99 ms':>8} {'peak RSS MB':>11} {'other load':>10}"
        )
        vips = _vips_rate(results)
        for name, row in rows:
            ratio = row["photos_per_s"] / vips if vips else None
            cpu = _num(row.get("cpu_ms_per_photo"))
            p50 = _num(row.get("latency_p50_ms"), ".0f")
            p99 = _num(row.get("latency_p99_ms"), ".0f")
            add(
                f"  {name:32} {row['photos']:6d} {row['photos_per_s']:9.1f} {_num(ratio, '.2f'):>8}"
                f" {cpu:>9} {p50:>8} {p99:>8} {_num(row.get('peak_rss_mb')):>11}"
                f" {_num(row.get('other_load_cores'), '.2f'):>10}"
            )
        add("  (other load: cores busy with anything else while it ran; CPU ms/ph: all processes)")
        b = results.get("burst")
        if b:
            add(
                f"  burst: daemon main process {b['main_cpu_ms_per_photo']:.2f} ms CPU/photo,"
                f" workers' render {_num(b['render_cpu_ms_in_workers'])} ms/photo,"
                f" other load on the machine {b['other_load_cores']:.2f} cores"
                f"{_mark(b['photos_per_s'] >= TARGETS['photos_per_s'])} (>= 150 photos/s)"
            )
            if vips:
                ratio = b["photos_per_s"] / vips
                ok = ratio >= TARGETS["vs_vips"]
                add(f"  burst vs vipsthumbnail: {ratio:.2f}x{_mark(ok)} (>= 3.5x)")
            add(
                f"  burst peak RSS {b['peak_rss_mb']:.0f} MB"
                f"{_mark(b['peak_rss_mb'] <= TARGETS['burst_rss_mb'])} (<= 400 MB)"
            )
        lt = results.get("light")
        if lt:
            add(
                f"  light load p99 {lt['latency_p99_ms']:.0f} ms"
                f"{_mark(lt['latency_p99_ms'] <= TARGETS['light_p99_ms'])} (<= 250 ms);"
                f" drop -> taken p50/p99 {_num(lt.get('settle_p50_ms'), '.0f')}/"
                f"{_num(lt.get('settle_p99_ms'), '.0f')} ms (settle_seconds),"
                f" taken -> written {_num(lt.get('work_p50_ms'), '.0f')}/"
                f"{_num(lt.get('work_p99_ms'), '.0f')} ms (render CPU"
                f" {_num(lt.get('render_p50_ms'), '.0f')}/{_num(lt.get('render_p99_ms'), '.0f')})"
            )
        add("")
    bl = results.get("backlog")
    if bl:
        add(
            f"  new files during a {bl['backlog']}-photo backlog: p50/p99"
            f" {bl['latency_p50_ms']:.0f}/{bl['latency_p99_ms']:.0f} ms"
            f"{_mark(bl['latency_p99_ms'] <= TARGETS['new_during_backlog_p99_ms'])}"
            f" (<= 1000 ms); the backlog took {bl['backlog_seconds']:.0f} s,"
            f" {bl['backlog_left']} left"
        )
        add("")
    s = results.get("soak")
    if s:
        add(f"soak: {s['photos']} photos in {len(s['rounds'])} rounds into one daemon")
        add("  peak RSS MB per round: " + " ".join(f"{x['peak_rss_mb']:.0f}" for x in s["rounds"]))
        add("  photos/s per round:    " + " ".join(f"{x['photos_per_s']:.0f}" for x in s["rounds"]))
        add(
            "  daemon process RSS MB: "
            + " ".join(f"{x.get('main_rss_mb', 0):.0f}" for x in s["rounds"])
        )
        add("")
    st = results.get("startup")
    if st:
        add("start-up over already-done sources (launch to end of the start-up scan)")
        for row in st:
            big = row["sources"] >= 100_000
            ok = row["seconds"] <= TARGETS["startup_s"] and (
                row["peak_rss_mb"] <= TARGETS["startup_rss_mb"]
            )
            into = row.get("burst_into_tree") or {}
            then = (
                f"; then {into['photos']} photos at {into['photos_per_s']:.0f}/s,"
                f" peak RSS {into['peak_rss_mb']:.0f} MB"
                if into
                else ""
            )
            add(
                f"  {row['sources']:>7} sources: {row['seconds']:6.2f} s, peak RSS"
                f" {row['peak_rss_mb']:6.1f} MB (main {row['peak_main_rss_mb']:.1f} MB),"
                f" {row['to_look_at']} to look at{_mark(ok if big else None)}{then}"
            )
        add("")
    return "\n".join(lines)


def throughput_rows(results: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    rows = []
    if "burst" in results:
        rows.append(("thumbd burst (drop all at once)", results["burst"]))
    if "light" in results:
        rows.append((f"thumbd light ({results['light']['rate']:g}/s offered)", results["light"]))
    if "render_alone" in results:
        rows.append(("render() alone in a pool", results["render_alone"]))
    for b in results.get("baselines", []):
        rows.append((f"{b['tool']} (one run per width)", b))
    return rows


def _vips_rate(results: dict[str, Any]) -> float | None:
    for b in results.get("baselines", []):
        if b["tool"] == "vipsthumbnail":
            return float(b["photos_per_s"])
    return None


def chart(results: dict[str, Any], path: Path) -> bool:
    """Photos per second and latency against the baselines; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [(n, r) for n, r in throughput_rows(results) if "light" not in n]
    if not rows:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    names = [n.replace(" (", "\n(") for n, _ in rows]
    rates = [r["photos_per_s"] for _, r in rows]
    colours = ["#2f6fb0" if n.startswith("thumbd") else "#9aa5b1" for n, _ in rows]
    bars = left.barh(names, rates, color=colours)
    left.bar_label(bars, fmt="%.0f", padding=3)
    left.invert_yaxis()
    left.set_xlabel("photos per second (higher is better)")
    left.set_title("Throughput, same photos, same number of processes")
    left.axvline(150, color="#c0392b", linestyle="--", linewidth=1)
    left.text(150, -0.6, " target 150", color="#c0392b", fontsize=8)
    labels, p50, p99 = [], [], []
    for key, label in (("light", "light load\n(10/s)"), ("burst", "burst\n(all at once)")):
        if key in results:
            labels.append(label)
            p50.append(results[key]["latency_p50_ms"])
            p99.append(results[key]["latency_p99_ms"])
    if labels:
        x = range(len(labels))
        right.bar([i - 0.2 for i in x], p50, width=0.4, label="p50", color="#7fb3e0")
        right.bar([i + 0.2 for i in x], p99, width=0.4, label="p99", color="#2f6fb0")
        right.set_xticks(list(x), labels)
        right.set_yscale("log")
        right.set_ylabel("ms from drop to last thumbnail (log)")
        right.axhline(250, color="#c0392b", linestyle="--", linewidth=1)
        right.text(-0.4, 260, "p99 target at light load: 250 ms", color="#c0392b", fontsize=8)
        right.legend()
        right.set_title("Latency")
    m = results.get("machine", {})
    fig.suptitle(
        f"thumbd {results.get('when', '')} on {m.get('cpu', '?')}, {m.get('cores', '?')} cores",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
