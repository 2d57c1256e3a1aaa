"""The sweep's report from its trial records: a Markdown table of every combination (compute used, metric, stopped
early or not, why rejected), the winners' full fine-tuning, three PNG plots (metric vs. compute per trial; best so
far; best metric by encoder x target set), and one W&B summary run holding the table and the plots.

A trial record is a plain dict (``tuner.trial_record``): ``label, encoder, targets, status`` (completed, stopped,
failed, rejected, merged), ``note, steps, budget_steps, tokens, time_s, ended, metric`` (best probe score),
``history`` ([{step, tokens, <metric>}]) and ``sampled`` (numeric values). Rejected and merged records carry only
``label, status, note``.
"""
from __future__ import annotations

import math
from pathlib import Path

RAN = ("completed", "stopped", "failed")
PLOTS = {"compute": "metric_vs_compute.png", "best": "best_so_far.png", "grid": "metric_by_encoder_targets.png"}


def _fmt(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def ranked(records: list[dict], mode: str) -> list[dict]:
    """Trials that ran, best first (no score last), then the rejected and merged combinations."""
    sign = 1 if mode == "max" else -1
    ran = [r for r in records if r["status"] in RAN]
    ran.sort(key=lambda r: (r.get("metric") is None, -sign * (r.get("metric") or 0.0)))
    return ran + [r for r in records if r["status"] not in RAN]


def compute_used(records: list[dict]) -> tuple[int, int]:
    """(steps the trials ran, steps they would have run to the end of their budgets)."""
    ran = [r for r in records if r["status"] in RAN]
    return sum(r["steps"] for r in ran), sum(r["budget_steps"] for r in ran)


def markdown(header: dict, records: list[dict], winners: list[dict], plots: dict[str, Path]) -> str:
    metric, mode = header["metric"], header["mode"]
    rows = ranked(records, mode)
    used, full = compute_used(records)
    counts = {status: sum(r["status"] == status for r in records) for status in ("completed", "stopped", "failed")}
    lines = [
        f"# Sweep `{header['sweep']}`", "",
        f"Searcher **{header['searcher']}**, scheduler **{header['scheduler']}**, metric **{metric}** ({mode}), "
        f"trial budget {', '.join(f'{v:,} {k}' for k, v in header['budget'].items())}.", "",
        *(f"    {line}" for line in header.get("summary", [])), "",
        f"Trials: {counts['completed']} completed, {counts['stopped']} stopped early, {counts['failed']} failed. "
        f"Pre-training steps used: {used:,} of {full:,} ({100 * used / max(full, 1):.0f}% of running every trial "
        f"to the end).",
    ]
    best = rows[0] if rows and rows[0]["status"] in RAN and rows[0].get("metric") is not None else None
    if best:
        lines.append(f"Best: **{best['label']}** ({metric} {_fmt(best['metric'])}, trial {best['trial_id']}).")
    columns = ["#", "combination", "encoder", "targets", "sampled", "steps", "tokens", "time (s)", metric, "status",
               "note"]
    lines += ["", "## Trials", "", "| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    for index, r in enumerate(rows, start=1):
        if r["status"] in RAN:
            sampled = ", ".join(f"{k}={_fmt(v, 3)}" for k, v in r.get("sampled", {}).items()) or "-"
            cells = [index, r["label"], r["encoder"], "+".join(r["targets"]), sampled, _fmt(r["steps"]),
                     _fmt(r["tokens"]), f"{r['time_s']:.0f}", _fmt(r.get("metric")), r["status"], r["note"] or "-"]
        else:
            cells = [index, r["label"], "-", "-", "-", "-", "-", "-", "-", r["status"], r["note"]]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    if winners:
        tests = sorted({k for w in winners for k in w if k.startswith(("test_", "dev_"))})
        lines += ["", "## Winners, fine-tuned fully", "",
                  "| rank | combination | trial | probe " + metric + " | " + " | ".join(tests) + " |",
                  "|---|---|---|---|" + "---|" * len(tests)]
        for w in winners:
            cells = [w["rank"], w["label"], w["trial_id"], _fmt(w["metric"]), *(_fmt(w.get(t)) for t in tests)]
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    lines += ["", "## Plots", ""] + [f"![{name}](plots/{path.name})" for name, path in plots.items()]
    return "\n".join(lines) + "\n"


# -- plots --------------------------------------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def plot_metric_vs_compute(records: list[dict], metric: str, time_attr: str, path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    ran = [r for r in records if r["status"] in RAN and r.get("history")]
    for r in ran:
        xs = [row.get(time_attr, 0) for row in r["history"]]
        ax.plot(xs, [row[metric] for row in r["history"]], marker="o", markersize=3,
                linestyle="--" if r["status"] == "stopped" else "-", label=r["label"])
    ax.set_xlabel(f"pre-training {time_attr}s")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} at each rung (dashed: stopped early)")
    if 0 < len(ran) <= 16:
        ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_best_so_far(records: list[dict], metric: str, mode: str, path: Path) -> Path:
    """Best score among the trials finished so far against the pre-training steps spent so far."""
    plt = _pyplot()
    ran = sorted((r for r in records if r["status"] in RAN), key=lambda r: (r.get("ended") or 0))
    spent, best, xs, ys = 0, None, [], []
    for r in ran:
        spent += r["steps"]
        if r.get("metric") is not None:
            best = r["metric"] if best is None else (max if mode == "max" else min)(best, r["metric"])
        if best is not None:
            xs.append(spent)
            ys.append(best)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.step(xs, ys, where="post", marker="o")
    ax.set_xlabel("pre-training steps spent by the sweep")
    ax.set_ylabel(f"best {metric} so far")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_by_encoder_targets(records: list[dict], metric: str, mode: str, path: Path) -> Path:
    """Heat map: best score per (encoder, target set); blank where no trial ran (rejected or not drawn)."""
    plt = _pyplot()
    ran = [r for r in records if r["status"] in RAN and r.get("metric") is not None]
    encoders = sorted({r["encoder"] for r in ran})
    target_sets = sorted({"+".join(r["targets"]) for r in ran})
    pick = max if mode == "max" else min
    grid = [[math.nan] * len(target_sets) for _ in encoders]
    for r in ran:
        i, j = encoders.index(r["encoder"]), target_sets.index("+".join(r["targets"]))
        grid[i][j] = r["metric"] if math.isnan(grid[i][j]) else pick(grid[i][j], r["metric"])
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * max(len(target_sets), 1), 1.4 + 0.8 * max(len(encoders), 1)))
    if not ran:
        ax.text(0.5, 0.5, "no trial was scored", ha="center", va="center")
        ax.set_axis_off()
        return _save(fig, path)
    image = ax.imshow(grid, cmap="viridis" if mode == "max" else "viridis_r", aspect="auto")
    ax.set_xticks(range(len(target_sets)), target_sets)
    ax.set_yticks(range(len(encoders)), encoders)
    for i, row in enumerate(grid):
        for j, value in enumerate(row):
            empty = math.isnan(value)
            ax.text(j, i, "not run" if empty else f"{value:.3f}", ha="center", va="center", color="k" if empty else "w")
    ax.set_title(f"best {metric} by encoder x targets")
    fig.colorbar(image, ax=ax)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


# -- writing ------------------------------------------------------------------------------------------------------
def write_report(header: dict, records: list[dict], winners: list[dict], out_dir: Path, metric: str, mode: str,
                 tracking=None, sweep: str | None = None, progress=print) -> Path:
    """``report.md`` and ``plots/*.png`` in ``out_dir``; printed, and logged to one W&B summary run when
    ``tracking`` is given. Returns the Markdown's path."""
    out_dir = Path(out_dir)
    plots = {
        "metric vs compute": plot_metric_vs_compute(records, metric, header.get("time_attr", "step"),
                                                    out_dir / "plots" / PLOTS["compute"]),
        "best so far": plot_best_so_far(records, metric, mode, out_dir / "plots" / PLOTS["best"]),
        "by encoder x targets": plot_by_encoder_targets(records, metric, mode, out_dir / "plots" / PLOTS["grid"]),
    }
    text = markdown(header, records, winners, plots)
    report = out_dir / "report.md"
    report.write_text(text, encoding="utf-8")
    progress(text)
    if tracking is not None:
        log_summary_run(tracking, sweep or header["sweep"], header, records, winners, plots, report, out_dir, progress)
    return report


def log_summary_run(tracking, sweep: str, header: dict, records: list[dict], winners: list[dict],
                    plots: dict[str, Path], report: Path, out_dir: Path, progress=print) -> None:
    """One W&B run in the sweep's group: the trials table, the plots, the report file, the best result."""
    from uer_ray.tracking import Tracker, wandb_location

    tracker = Tracker(tracking.model_copy(update={"group": sweep}), sweep, "sweep-report",
                      {k: v for k, v in header.items() if k != "summary"}, wandb_location(tracking, str(out_dir)))
    if tracker.run is None:
        return
    import wandb

    columns = ["combination", "encoder", "targets", "steps", "tokens", header["metric"], "status", "note"]
    table = wandb.Table(columns=columns, data=[
        [r["label"], r.get("encoder", "-"), "+".join(r.get("targets", [])), r.get("steps", 0), r.get("tokens", 0),
         r.get("metric"), r["status"], r["note"]] for r in ranked(records, header["mode"])
    ])
    tracker.log({"trials": table, **{f"plots/{name}": wandb.Image(str(path)) for name, path in plots.items()}})
    used, full = compute_used(records)
    best = ranked(records, header["mode"])[0]
    tracker.summary({"best_combination": best["label"], f"best_{header['metric']}": best.get("metric"),
                     "steps_used": used, "steps_if_all_ran_to_the_end": full,
                     **{f"winner{w['rank']}_{k}": v for w in winners for k, v in w.items() if k.startswith("test_")}})
    try:
        tracker.run.save(str(report), base_path=str(report.parent), policy="now")
    except Exception as exc:  # W&B must never fail the sweep
        progress(f"tune: W&B could not store the report file: {exc}")
    progress(f"tune: W&B summary run -> {tracker.location}")
    tracker.finish()
