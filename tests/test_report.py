"""The tokenizer report and the fit / inspect commands, on the real SO-101 dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest

from action_tokenizers import BinningTokenizer
from action_tokenizers.cli import FitConfig, InspectConfig, run_fit, run_inspect
from action_tokenizers.metrics import tokenizer_metrics, vocab_usage
from action_tokenizers.report import rate_distortion, default_sweep, write_report
from eval.cli import main as cli_main


def _chunks(n=200, h=8, d=3, seed=0):
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.normal(scale=0.2, size=(n, h, d)), axis=1)


def test_metrics_known_values():
    x = _chunks()
    tok = BinningTokenizer(n_bins=16, normalization="minmax").fit(x)
    m = tokenizer_metrics(tok, x)
    assert m.tokens_per_chunk_mean == m.tokens_per_chunk_max == 24
    assert m.compression_ratio == pytest.approx(1.0)
    assert m.bits_per_chunk == pytest.approx(24 * 4)
    # Uniform bins over [-1, 1]: the worst error is half a bin width (1/16), the mean about a quarter.
    assert m.eps_max <= 1 / 16 + 1e-9 and m.eps_mean < m.eps_max
    assert 0.5 / 16 * 0.5 < m.mae_norm < 0.5 / 16 * 1.5
    assert m.roundtrip_rate == 1.0 and m.malformed_clean == 0
    # Binning never loses a whole chunk to one corrupted token.
    assert m.deletion.flagged_rate == 1.0 and m.deletion.unusable_rate == 0.0
    assert m.substitution.unusable_rate == 0.0 and 0 < m.substitution.mae_norm < 0.2
    assert len(m.mae_raw_per_dim) == 3 and m.encode_chunks_per_s > 0


def test_vocab_usage():
    used, perplexity = vocab_usage([[0, 1], [0, 1]], 4)
    assert used == 0.5 and perplexity == pytest.approx(2.0)
    assert vocab_usage([], 4) == (0.0, 0.0)


def test_rate_distortion_binning_error_falls_with_bins():
    x = _chunks()
    points = rate_distortion(x[:150], x[150:], {"binning": default_sweep(("binning",))["binning"]}, progress=False)
    errs = [p.mae_norm for p in sorted(points, key=lambda p: p.bits_per_chunk)]
    assert len(errs) == 7 and all(a > b for a, b in zip(errs, errs[1:]))


def test_write_report_files(tmp_path):
    x = _chunks()
    toks = [("b16", BinningTokenizer(n_bins=16).fit(x[:150])), ("b256", BinningTokenizer().fit(x[:150]))]
    report = write_report(tmp_path / "r", toks, x[150:], train=x[:150], sweep=default_sweep(("binning",)),
                          progress=False)
    files = sorted(p.name for p in (tmp_path / "r").iterdir())
    assert files == ["rate_distortion.png", "report.json", "report.md", "trajectories.png"]
    data = json.loads((tmp_path / "r" / "report.json").read_text())
    assert set(data["tokenizers"]) == {"b16", "b256"}
    assert data["tokenizers"]["b16"]["mae_norm"] > data["tokenizers"]["b256"]["mae_norm"]
    md = (tmp_path / "r" / "report.md").read_text()
    assert "| b16 |" in md and "Rate-distortion" in md and "Smoothness" in md
    # binning is smooth: no violations among nearby pairs
    assert report.smoothness["b256"]["violation_rate"] == 0.0
    for png in ("rate_distortion.png", "trajectories.png"):
        assert (tmp_path / "r" / png).read_bytes()[:4] == b"\x89PNG"


def test_fit_and_inspect_on_so101(so101_root, tmp_path):
    out = tmp_path / "fit"
    run_fit(FitConfig(dataset=str(so101_root), tokenizer="binning", chunk_size=5, out=out, progress=False,
                      sweep=False))
    assert (out / "tokenizer" / "config.json").is_file() and (out / "report" / "report.md").is_file()
    data = json.loads((out / "report" / "report.json").read_text())
    m = data["tokenizers"]["binning"]
    assert m["chunk_size"] == 5 and m["action_dim"] == 6 and m["tokens_per_chunk_mean"] == 30
    assert "held-out episode" in data["title"]
    held = json.loads((out / "tokenizer" / "config.json").read_text())["heldout_episodes"]
    assert held and json.loads((out / "fit_config.json").read_text())["heldout_episodes"] == held
    assert str(held) in data["title"]  # the report names the episodes it measured on
    card = (out / "tokenizer" / "README.md").read_text()
    assert "reconstruction MAE" in card  # measured figures land in the model card
    report_dir = run_inspect(InspectConfig(tokenizer=str(out), dataset=str(so101_root), out=tmp_path / "insp",
                                           progress=False))
    inspected = json.loads((report_dir / "report.json").read_text())["tokenizers"]["binning"]
    assert inspected["n_chunks"] == 1492 - 4 * 4  # every chunk of the 4 episodes, none crossing a boundary


def test_cli_errors_and_interrupted_fit(so101_root, tmp_path, monkeypatch, capsys):
    with pytest.raises(SystemExit) as exc:  # config validation: tyro prints the message and exits 2
        cli_main(["fit", "--dataset", str(so101_root), "--tokenizer", "nope", "--out", str(tmp_path / "a")])
    assert exc.value.code == 2 and "must be one of" in capsys.readouterr().err
    assert cli_main(["fit", "--dataset", str(so101_root), "--action-key", "actions", "--out", str(tmp_path / "b")]) == 1
    assert "actions" in capsys.readouterr().err
    assert cli_main(["fitt"]) == 2 and "did you mean 'fit'" in capsys.readouterr().err

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("action_tokenizers.report.plot_trajectories", boom)
    with pytest.raises(KeyboardInterrupt):
        run_fit(FitConfig(dataset=str(so101_root), out=tmp_path / "c", progress=False, sweep=False))
    assert not (tmp_path / "c").exists() and not any((tmp_path).glob(".c.tmp-*"))
