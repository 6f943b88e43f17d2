"""FASTTokenizer: parity with the published algorithm, round trips, robustness, persistence, bad dirs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from action_tokenizers import AutoActionTokenizer, FASTTokenizer  # noqa: E402
from action_tokenizers.base import MalformedTokensError  # noqa: E402
from action_tokenizers.fast import FASTConfig  # noqa: E402
from benchmarks.reference import ReferenceFAST  # noqa: E402

H, D = 8, 3
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def smooth_chunks(n: int, h: int = H, d: int = D, seed: int = 0) -> np.ndarray:
    """Smooth chunks in [-1, 1]: a few low-frequency sinusoids per dimension plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, h)[None, :, None]
    x = np.zeros((n, h, d))
    for k in range(3):
        amp = rng.normal(0.0, 0.5 / (k + 1), (n, 1, d))
        phase = rng.uniform(0.0, 2 * np.pi, (n, 1, d))
        x += amp * np.sin(2 * np.pi * (0.5 * k + 0.25) * t + phase)
    return np.clip(x + rng.normal(0.0, 0.01, x.shape), -1.0, 1.0)


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return smooth_chunks(600)


@pytest.fixture(scope="module")
def reference(data) -> ReferenceFAST:
    return ReferenceFAST.fit(list(data[:400]), scale=10, vocab_size=256, time_horizon=H, action_dim=D)


@pytest.fixture(scope="module")
def fitted(data) -> FASTTokenizer:
    return FASTTokenizer(vocab_size=256).fit(data[:400])


# ---------------------------------------------------------------------- published directories
@pytest.mark.parametrize("layout", ["root", "bpe_tokenizer"])
def test_published_dir_same_ids_and_decodes(tmp_path, data, reference, layout):
    directory = reference.save_pretrained(tmp_path / "fast", layout=layout)
    tok = FASTTokenizer.from_pretrained(directory)
    auto = AutoActionTokenizer.from_pretrained(directory)
    test = data[400:]
    ref_ids = reference(test)
    assert tok.encode(test) == ref_ids
    assert auto.encode(test) == ref_ids
    report = tok.decode_with_report(ref_ids)
    assert not report.malformed.any()
    np.testing.assert_allclose(report.actions, reference.decode(ref_ids), atol=1e-12)
    assert tok.normalizer.mode == "identity" and tok.config.pretokenizer == "byte_level"


@pytest.mark.slow  # importing transformers takes ~10 s here
def test_reference_matches_transformers_wrapper(data, reference):
    """The baseline drives tokenizers.Tokenizer directly; the published code wraps it in PreTrainedTokenizerFast."""
    from transformers import PreTrainedTokenizerFast

    wrapped = PreTrainedTokenizerFast(tokenizer_object=reference.bpe, clean_up_tokenization_spaces=False)
    q = np.around(np.asarray([np.ravel(c) for c in __import__("scipy.fft").fft.dct(data[400:420], axis=1, norm="ortho")]) * 10)
    for row in q:
        text = "".join(map(chr, np.maximum(row - reference.min_token, 0).astype(int)))
        ids = reference.bpe.encode(text).ids
        assert wrapped(text)["input_ids"] == ids
        assert wrapped.decode(ids) == reference.bpe.decode(ids) == text


def test_published_out_of_range_never_crashes(tmp_path, reference):
    tok = FASTTokenizer.from_pretrained(reference.save_pretrained(tmp_path / "fast"))
    x = np.full((2, H, D), 1e6)
    x[1] = -1e6
    ids = tok.encode(x)  # the published processor raises in chr() here (openpi#333)
    assert all(len(s) > 0 for s in ids)
    assert np.all(np.isfinite(tok.decode(ids)))


def test_published_null_shape_needs_arguments(tmp_path, data):
    ref = ReferenceFAST.fit(list(data[:200]), vocab_size=256)  # universal: no time_horizon/action_dim
    directory = ref.save_pretrained(tmp_path / "fast")
    with pytest.raises(ValueError, match="time_horizon.*chunk_size"):
        FASTTokenizer.from_pretrained(directory)
    tok = FASTTokenizer.from_pretrained(directory, chunk_size=H, action_dim=D)
    assert tok.encode(data[:5]) == ref(data[:5])


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda c: c.pop("min_token"), "min_token"),
        (lambda c: c.update(scale="ten"), "'scale'"),
        (lambda c: c.update(vocab_size=-3), "'vocab_size'"),
        (lambda c: c.update(time_horizon=0), "'time_horizon'"),
        (lambda c: c.update(vocab_size=10), "vocab_size"),  # fewer than the tokenizer file holds
    ],
)
def test_bad_published_config_is_named(tmp_path, reference, edit, match):
    directory = reference.save_pretrained(tmp_path / "fast")
    path = directory / "processor_config.json"
    cfg = json.loads(path.read_text())
    edit(cfg)
    path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=match) as info:
        FASTTokenizer.from_pretrained(directory)
    assert "processor_config.json" in str(info.value)


def test_bad_published_tokenizer_file_is_named(tmp_path, reference):
    directory = reference.save_pretrained(tmp_path / "fast")
    (directory / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        AutoActionTokenizer.from_pretrained(directory)
    (directory / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match="tokenizer.json"):
        FASTTokenizer.from_pretrained(directory)
    (directory / "processor_config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="processor_config.json"):
        FASTTokenizer.from_pretrained(directory)


# ---------------------------------------------------------------------- own fits
def test_config_validation():
    with pytest.raises(ValueError, match="pretokenizer"):
        FASTConfig(pretokenizer="gpt2")
    with pytest.raises(ValueError, match="scale"):
        FASTConfig(scale=0)
    with pytest.raises(ValueError, match="vocab_size"):
        FASTTokenizer(vocab_size=16, scale=100.0).fit(smooth_chunks(50))


def test_clean_chunks_round_trip(fitted, data):
    test = data[400:]
    ids = fitted.encode(test)
    report = fitted.decode_with_report(ids)
    assert not report.malformed.any()
    assert fitted.encode(report.actions) == ids  # idempotent on its own outputs
    assert np.mean([len(s) for s in ids]) < H * D  # it compresses


@SETTINGS
@given(st.integers(0, 2**32 - 1), st.sampled_from(["none", "byte_level"]), st.floats(2.0, 40.0))
def test_exact_integer_coefficient_round_trip(seed, pretokenizer, scale):
    tok = FASTTokenizer(normalization="identity", pretokenizer=pretokenizer, scale=scale, vocab_size=600)
    x = np.random.default_rng(seed).uniform(-1.0, 1.0, (12, H, D))
    tok.fit(x[:6])
    q = tok.coefficients(x)  # includes chunks the fit never saw
    report = tok.decode_with_report(tok.encode(x))
    assert not report.malformed.any()
    np.testing.assert_array_equal(tok.coefficients(report.actions), q)
    # reconstruction within the rounding bound: orthonormal DCT, each coefficient off by <= 0.5 / scale
    bound = 0.5 / scale * np.sqrt(H)
    assert np.abs(report.actions - x).max() <= bound + 1e-9


@SETTINGS
@given(st.lists(st.floats(-1e300, 1e300, allow_nan=False), min_size=H * D, max_size=H * D))
def test_out_of_range_inputs_never_crash(fitted, values):
    x = np.asarray(values).reshape(1, H, D)
    ids = fitted.encode(x)
    report = fitted.decode_with_report(ids)
    assert np.all(np.isfinite(report.actions)) and not report.malformed.any()
    lo, hi = fitted.normalizer.unnormalize(-np.ones(D)), fitted.normalizer.unnormalize(np.ones(D))
    assert np.all(report.actions >= lo - 1e-9) and np.all(report.actions <= hi + 1e-9)


def _is_zero_chunk(tok: FASTTokenizer, actions: np.ndarray) -> np.ndarray:
    y = tok.normalizer.normalize(actions)
    return np.all(np.abs(y.reshape(len(y), -1)) < 1e-12, axis=1)


def test_deleted_and_substituted_tokens_flagged_not_zero(fitted, data):
    test = data[400:]
    ids = fitted.encode(test)
    rng = np.random.default_rng(0)
    deleted = [s[:p] + s[p + 1:] for s, p in ((s, int(rng.integers(len(s)))) for s in ids)]
    report = fitted.decode_with_report(deleted)
    assert report.malformed.all()
    assert not _is_zero_chunk(fitted, report.actions).any()
    assert all("coefficients" in r for r in report.reasons)
    substituted = [s[:1] + [(s[1] + 7) % fitted.vocab_size] + s[2:] for s in ids]
    report = fitted.decode_with_report(substituted)
    assert np.all(np.isfinite(report.actions)) and not _is_zero_chunk(fitted, report.actions).any()
    with pytest.raises(MalformedTokensError):
        fitted.decode(deleted, strict=True)


@SETTINGS
@given(st.lists(st.lists(st.integers(-(2**70), 2**70), max_size=40), min_size=1, max_size=6))
def test_any_int_sequences_decode_finite(fitted, seqs):
    report = fitted.decode_with_report(seqs)
    assert report.actions.shape == (len(seqs), H, D)
    assert np.all(np.isfinite(report.actions))
    for seq, bad in zip(seqs, report.malformed):
        if any(not 0 <= t < fitted.vocab_size for t in seq):
            assert bad


def test_unknown_ids_skipped_and_empty_sequence(fitted, data):
    ids = fitted.encode(data[400:401])[0]
    report = fitted.decode_with_report([[-5] + ids + [10**30], []])
    assert report.malformed.all()
    np.testing.assert_allclose(report.actions[0], fitted.decode([ids])[0])  # unknowns skipped exactly
    assert "outside" in report.reasons[0]
    assert np.all(np.isfinite(report.actions[1]))  # nothing usable: the normalized centre
    with pytest.raises(MalformedTokensError):
        fitted.decode([[]], strict=True)


def test_decode_needs_no_encode_state(fitted, data, tmp_path):
    ids = fitted.encode(data[400:410])
    fresh = FASTTokenizer.from_pretrained(fitted.save_pretrained(tmp_path / "tok"))
    np.testing.assert_allclose(fresh.decode(ids), fitted.decode(ids))


@pytest.mark.parametrize("pretokenizer", ["none", "byte_level"])
def test_save_load_identical_ids_no_pickle(tmp_path, data, pretokenizer):
    tok = FASTTokenizer(vocab_size=256, pretokenizer=pretokenizer).fit(data[:300])
    directory = tok.save_pretrained(tmp_path / "tok")
    files = sorted(p.name for p in directory.iterdir())
    assert files == ["README.md", "config.json", "tensors.safetensors", "tokenizer.json"]
    for path in directory.iterdir():
        assert b"\x80\x04" not in path.read_bytes()[:2]  # no pickle protocol header
    for loaded in (FASTTokenizer.from_pretrained(directory), AutoActionTokenizer.from_pretrained(directory)):
        assert loaded.encode(data[300:]) == tok.encode(data[300:])
        assert loaded.vocab_size == tok.vocab_size
    published = FASTTokenizer.from_pretrained(
        ReferenceFAST.fit(list(data[:200]), vocab_size=256, time_horizon=H, action_dim=D).save_pretrained(tmp_path / "p"))
    again = FASTTokenizer.from_pretrained(published.save_pretrained(tmp_path / "p2"))
    assert again.encode(data[300:]) == published.encode(data[300:]) and again.published


def test_none_compresses_at_least_as_well_as_byte_level(data):
    lengths = {}
    for pre in ("none", "byte_level"):
        tok = FASTTokenizer(vocab_size=256, pretokenizer=pre).fit(data[:400])
        lengths[pre] = np.mean([len(s) for s in tok.encode(data[400:])])
    assert lengths["none"] <= lengths["byte_level"]


@pytest.mark.slow  # reading the parquet dataset takes ~30 s on the shared CI machine
def test_real_datasets_fit_quickly(so101_root):
    from action_tokenizers.data import load_chunks

    chunks = load_chunks(so101_root, chunk_size=10, stride=1, action_key="action").actions
    tok = FASTTokenizer().fit(chunks)
    report = tok.decode_with_report(tok.encode(chunks[:200]))
    assert not report.malformed.any() and chunks.shape[2] == 6
