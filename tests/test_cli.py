"""The CLI end to end for the corpus tools: build-vocab (Ray Data counting), then preprocess --stats with it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def run(*args, cwd):
    return subprocess.run([sys.executable, str(ROOT / "launch.py"), *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_build_vocab_then_preprocess_with_stats(tmp_path, data_dir):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join((data_dir / "corpora" / "chnsenticorp.txt").read_text(encoding="utf-8").splitlines()[:500]) + "\n")
    built = run("build-vocab", str(corpus), "--output", str(tmp_path / "vocab.txt"), "--min-count", "2", cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    tokens = (tmp_path / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert tokens[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] and len(tokens) > 500

    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({
        "run": {"name": "cli", "storage_path": str(tmp_path / "runs")},
        "tokenizer": {"name": "char", "vocab_path": str(tmp_path / "vocab.txt")},
        "data": {"corpus": [str(corpus)], "processor": {"name": "mlm", "seq_length": 64}},
        "model": {"targets": {"mlm": 1.0}},
    }))
    done = run("preprocess", "--config", str(job), "--stats", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "runs" / "cli" / "dataset" / "manifest.json").is_file()
    assert "instances" in done.stdout
