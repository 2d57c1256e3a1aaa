"""The sweep report from trial records: the Markdown table (order, compute, status, reasons), real PNG plots, and the
W&B summary run holding them (offline, read back)."""
from __future__ import annotations

import time

import matplotlib.image

from uer_ray.config import TrackingConfig
from uer_ray.tune.report import PLOTS, write_report

from wandb_offline import run_record, runs

HEADER = {"sweep": "enc-x-tgt", "searcher": "grid", "scheduler": "asha", "metric": "dev_metric", "mode": "max",
          "time_attr": "step", "budget": {"steps": 300},
          "summary": ["search: 5 combination(s) of model.encoder, model.targets: 3 valid, 1 rejected, 1 merged"]}


def trial(label, encoder, targets, metrics, status="completed", steps=300, ended=0, note=""):
    history = [{"step": 100 * (i + 1), "tokens": 6400 * (i + 1), "dev_metric": m} for i, m in enumerate(metrics)]
    return {"trial_id": f"t_{label.replace(' ', '_')}", "label": label, "encoder": encoder, "targets": targets,
            "status": status, "note": note, "steps": steps, "budget_steps": 300, "tokens": 6400 * len(metrics),
            "time_s": 12.0 * len(metrics), "ended": ended, "metric": metrics[-1] if metrics else None,
            "history": history, "sampled": {"train.lr": 0.00123}}


RECORDS = [
    trial("lstm mlm", "lstm", ["mlm"], [0.61, 0.66, 0.70], ended=3),
    trial("transformer mlm+sp", "transformer", ["mlm", "sp"], [0.64, 0.69, 0.74], ended=2),
    trial("gatedcnn lm", "gatedcnn", ["lm"], [0.55], status="stopped", steps=100, ended=1,
          note="stopped early at step 100"),
    trial("lstm lm", "lstm", ["lm"], [], status="failed", steps=0, ended=4, note="UserError: out of memory"),
    {"label": "transformer lm", "status": "rejected", "note": "model: target lm needs a causal encoder"},
    {"label": "lstm mlm sp.weight=0.5", "status": "merged",
     "note": "model.targets.sp.weight does not apply: same as 'lstm mlm'"},
]
WINNERS = [{"rank": 1, "trial_id": "t_transformer_mlm+sp", "label": "transformer mlm+sp", "metric": 0.74,
            "test_acc": 0.8125, "dev_acc": 0.8}]


def test_markdown_table_ranks_trials_and_explains_the_rest(tmp_path):
    report = write_report(HEADER, RECORDS, WINNERS, tmp_path, metric="dev_metric", mode="max", progress=lambda _: None)
    text = report.read_text()
    trials = text.split("## Trials")[1].split("## Winners")[0]
    table = [line for line in trials.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [row.split(" | ")[1] for row in table] == [
        "transformer mlm+sp", "lstm mlm", "gatedcnn lm", "lstm lm", "transformer lm", "lstm mlm sp.weight=0.5"]
    assert table[0] == ("| 1 | transformer mlm+sp | transformer | mlm+sp | train.lr=0.00123 | 300 | 19,200 | 36 | 0.74 "
                        "| completed | - |")
    assert table[2].endswith("| 0.55 | stopped | stopped early at step 100 |")
    assert table[3].endswith("| - | failed | UserError: out of memory |")
    assert table[4].endswith("| rejected | model: target lm needs a causal encoder |")
    assert "same as 'lstm mlm'" in table[5]
    # 300 + 300 + 100 + 0 steps of the 4 x 300 that running every trial to the end would take
    assert "Pre-training steps used: 700 of 1,200 (58% of running every trial to the end)." in text
    assert "Trials: 2 completed, 1 stopped early, 1 failed." in text
    assert "Best: **transformer mlm+sp** (dev_metric 0.74, trial t_transformer_mlm+sp)." in text
    assert "3 valid, 1 rejected, 1 merged" in text
    assert "| rank | combination | trial | probe dev_metric | dev_acc | test_acc |" in text
    assert "| 1 | transformer mlm+sp | t_transformer_mlm+sp | 0.74 | 0.8 | 0.8125 |" in text
    for name in PLOTS.values():
        assert f"(plots/{name})" in text


def test_plots_are_real_pngs(tmp_path):
    write_report(HEADER, RECORDS, WINNERS, tmp_path, metric="dev_metric", mode="max", progress=lambda _: None)
    for name in PLOTS.values():
        path = tmp_path / "plots" / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        height, width, channels = matplotlib.image.imread(path).shape
        assert height > 200 and width > 300 and channels in (3, 4)


def test_heat_map_without_any_scored_trial_still_draws(tmp_path):
    write_report(HEADER, RECORDS[3:], [], tmp_path, metric="dev_metric", mode="max", progress=lambda _: None)
    assert (tmp_path / "plots" / PLOTS["grid"]).stat().st_size > 1000


def test_summary_run_holds_the_table_and_plots(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    tracking = TrackingConfig(mode="offline", dir=str(tmp_path / "wandb"))
    write_report(HEADER, RECORDS, WINNERS, tmp_path / "out", metric="dev_metric", mode="max", tracking=tracking,
                 progress=lambda _: None)
    deadline = time.time() + 30  # the W&B service may still be writing when finish() returns
    while not ((files := runs(tmp_path / "wandb")) and run_record(files[-1])["history"]) and time.time() < deadline:
        time.sleep(0.5)
    run = run_record(files[-1])
    assert (run["group"], run["job_type"]) == ("enc-x-tgt", "sweep-report")
    assert run["config"]["scheduler"] == "asha"
    logged = run["history"][0]  # nested values come back as flat "key/field" entries
    assert logged["trials/_type"] == "table-file" and logged["trials/nrows"] == len(RECORDS)
    images = {key.removesuffix("/_type"): value for key, value in logged.items() if key.endswith("/_type")}
    assert images == {"trials": "table-file", "plots/metric vs compute": "image-file",
                      "plots/best so far": "image-file", "plots/by encoder x targets": "image-file"}
    run_dir = files[-1].parent
    for key in images:
        assert (run_dir / "files" / logged[f"{key}/path"]).stat().st_size > 500  # the PNGs and the table travel along
