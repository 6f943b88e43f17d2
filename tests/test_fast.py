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
from benchmarks.reference import ReferenceFAST, smooth_chunks  # noqa: E402

H, D = 8, 3
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def real_looking_chunks(n: int, h: int = 10, d: int = 4, seed: int = 0) -> np.ndarray:
    """Chunks like Meta-World's and SO-101's at h = 10: the arm near one of a few poses, half of them
    drifting slowly, tiny noise. FAST packs them into ~3-8 tokens; often one token carries every
    non-zero coefficient, so deleting it left the published decoder nothing but zeros.
    """
    rng = np.random.default_rng(seed)
    poses = rng.uniform(-0.8, 0.8, (6, 1, d))
    t = np.arange(h)[None, :, None]
    drift = rng.normal(0.0, 0.01, (n, 1, d)) * t * (rng.random((n, 1, 1)) < 0.5)
    x = poses[rng.integers(len(poses), size=n)] + rng.normal(0.0, 0.01, (n, 1, d)) + drift
    return np.clip(x + rng.normal(0.0, 0.002, (n, h, d)), -1.0, 1.0)


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return smooth_chunks(600, H, D)


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
        FASTTokenizer(vocab_size=16, scale=100.0).fit(smooth_chunks(50, H, D))


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
    assert np.all(np.isfinite(report.actions[1]))  # nothing usable: the fit data's mean chunk
    with pytest.raises(MalformedTokensError):
        fitted.decode([[]], strict=True)


def test_decode_needs_no_encode_state(fitted, data, tmp_path):
    ids = fitted.encode(data[400:410])
    fresh = FASTTokenizer.from_pretrained(fitted.save_pretrained(tmp_path / "tok"))
    np.testing.assert_array_equal(fresh.decode(ids), fitted.decode(ids))
    broken = [s[:2] + s[3:] for s in ids]  # the realignment statistics travel with the directory
    np.testing.assert_array_equal(fresh.decode(broken), fitted.decode(broken))


# ---------------------------------------------------------------------- corruption on short sequences
@pytest.fixture(scope="module")
def short() -> tuple[FASTTokenizer, np.ndarray, list[list[int]]]:
    x = real_looking_chunks(700)
    tok = FASTTokenizer(vocab_size=512).fit(x[:500])
    return tok, x[500:], tok.encode(x[500:])


def _published_rule(tok: FASTTokenizer, seq: list[int]) -> np.ndarray:
    """What reading survivors from position 0 gives (missing trailing coefficients as 0): the old decode."""
    chars = [ord(ch) for i in seq for ch in tok.bpe.id_to_token(i)]
    q = np.zeros(tok.n_coefficients)
    q[:len(chars)] = np.asarray(chars[:q.size]) + tok.min_token
    return tok.normalizer.unnormalize(tok.from_coefficients(q[None])[0])


def test_one_deleted_token_never_gives_zero_chunk(short):
    tok, x, ids = short
    assert np.mean([len(s) for s in ids]) < 10  # short sequences, as on real data
    deleted, truth = [], []
    for seq, chunk in zip(ids, x):
        for p in range(len(seq)):  # every position of every sequence
            deleted.append(seq[:p] + seq[p + 1:])
            truth.append(chunk)
    truth = np.asarray(truth)
    report = tok.decode_with_report(deleted)
    assert report.malformed.all() and np.all(np.isfinite(report.actions))
    assert not _is_zero_chunk(tok, report.actions).any()
    old = np.stack([_published_rule(tok, s) for s in deleted])
    assert _is_zero_chunk(tok, old).mean() > 0.05  # the case the fix is for really occurs here
    err = np.abs(tok.normalizer.normalize(report.actions) - tok.normalizer.normalize(truth)).mean()
    err_old = np.abs(tok.normalizer.normalize(old) - tok.normalizer.normalize(truth)).mean()
    spread = np.abs(tok.normalizer.normalize(truth) - tok.normalizer.normalize(truth).mean(0)).mean()
    assert err < 0.9 * err_old and err < spread  # better than the old rule and than guessing the mean chunk


def test_one_substituted_token_error_not_worse_than_old_rule(short):
    tok, x, ids = short
    rng = np.random.default_rng(1)
    subs = []
    for seq in ids:
        p = int(rng.integers(len(seq)))
        subs.append(seq[:p] + [int((seq[p] + 1 + rng.integers(tok.vocab_size - 1)) % tok.vocab_size)] + seq[p + 1:])
    report = tok.decode_with_report(subs)
    old = np.stack([_published_rule(tok, s) for s in subs])
    norm = tok.normalizer.normalize
    assert np.abs(norm(report.actions) - norm(x)).mean() <= np.abs(norm(old) - norm(x)).mean()


@SETTINGS
@given(st.data())
def test_single_deletion_property(short, draw):
    tok, x, ids = short
    i = draw.draw(st.integers(0, len(ids) - 1))
    p = draw.draw(st.integers(0, len(ids[i]) - 1))
    seq = ids[i][:p] + ids[i][p + 1:]
    report = tok.decode_with_report([seq, ids[i]])
    assert report.malformed.tolist() == [True, False]
    assert "placed where most likely" in report.reasons[0]
    assert np.all(np.isfinite(report.actions)) and not _is_zero_chunk(tok, report.actions[:1]).any()
    np.testing.assert_array_equal(report.actions[1], tok.decode([ids[i]])[0])  # batch-mates unaffected


def test_published_dir_deletion_best_effort(tmp_path):
    x = real_looking_chunks(600)
    ref = ReferenceFAST.fit(list(x[:400]), vocab_size=512, time_horizon=10, action_dim=4)
    tok = FASTTokenizer.from_pretrained(ref.save_pretrained(tmp_path / "p"))
    assert tok.coef_mean is None  # no statistics: generic prior, zeros in gaps
    ids = ref(x[400:])
    np.testing.assert_array_equal(tok.decode(ids), ref.decode(ids))  # exact on well-formed ids
    deleted = [s[1:] for s in ids]
    report = tok.decode_with_report(deleted)
    assert report.malformed.all() and np.all(np.isfinite(report.actions))
    assert "set to 0" in report.reasons[0]
    err = np.abs(report.actions - x[400:]).mean()
    assert err < np.abs(ref.decode(deleted) - x[400:]).mean()  # better than the published all-zero fallback


def _as_written_before_checksums(directory):
    """Older directories have no output manifest and no checksums (so hand-edited files load)."""
    from action_tokenizers.io import MANIFEST

    (directory / MANIFEST).unlink()
    config = json.loads((directory / "config.json").read_text())
    config.pop("checksums")
    (directory / "config.json").write_text(json.dumps(config))


def test_directory_without_statistics_still_loads(tmp_path, short):
    from safetensors.numpy import load_file, save_file

    tok, x, ids = short
    directory = tok.save_pretrained(tmp_path / "tok")
    _as_written_before_checksums(directory)
    tensors = load_file(str(directory / "tensors.safetensors"))
    assert {"fast.coef_mean", "fast.coef_std"} <= set(tensors)
    save_file({k: v for k, v in tensors.items() if not k.startswith("fast.")}, str(directory / "tensors.safetensors"))
    old = FASTTokenizer.from_pretrained(directory)
    np.testing.assert_array_equal(old.decode(ids), tok.decode(ids))
    assert np.all(np.isfinite(old.decode([s[1:] for s in ids])))
    tensors["fast.coef_mean"] = tensors["fast.coef_mean"][:3]
    save_file(tensors, str(directory / "tensors.safetensors"))
    with pytest.raises(ValueError, match="fast.coef_mean.*shape"):
        FASTTokenizer.from_pretrained(directory)


# ---------------------------------------------------------------------- batch token validation (base class)
def test_batch_validation_accepts_int_forms(fitted, data):
    ids = fitted.encode(data[400:406])
    expected = fitted.decode(ids)
    as_numpy_ints = [[np.int64(t) if k % 2 else np.uint16(t) for k, t in enumerate(s)] for s in ids]
    for form in (ids, tuple(tuple(s) for s in ids), as_numpy_ints, [np.asarray(s) for s in ids],
                 [np.asarray(s, dtype=np.uint32) for s in ids]):
        np.testing.assert_array_equal(fitted.decode(form), expected)
    padded = np.asarray([s[:3] for s in ids], dtype=np.uint64)  # a 2-D array: one row per sequence
    assert fitted.decode_with_report(padded).malformed.all()


def test_batch_validation_rejects_non_ints_with_the_same_errors(fitted):
    good = [1, 2, 3]
    for bad, shown in ((True, "True (bool)"), (np.True_, "bool"), (1.0, "1.0 (float)"),
                       (np.float64(2.0), "float64"), ("3", "'3' (str)"), (None, "None (NoneType)")):
        with pytest.raises(TypeError, match=r"sequence 1 holds .*" + shown.replace("(", r"\(").replace(")", r"\)")):
            fitted.decode([good, [4, bad, 5]])
    with pytest.raises(TypeError, match="sequence 1 must be a list of ints, got str"):
        fitted.decode([good, "123"])
    with pytest.raises(TypeError, match="sequence 0 must be a list of ints, got bytes"):
        fitted.decode([b"\x01\x02", good])
    with pytest.raises(TypeError, match="ints"):
        fitted.decode(np.asarray([[True, False]]))


def test_batch_validation_huge_and_negative_ints_flagged(fitted, data):
    ids = fitted.encode(data[400:403])
    v = fitted.vocab_size
    seqs = [ids[0] + [10**30], [-(10**30)] + ids[1], ids[2] + [2**63 - 1, -1, v]]
    report = fitted.decode_with_report(seqs)
    assert report.malformed.all()
    assert [r.split(";")[0] for r in report.reasons] == [f"1 id(s) outside [0, {v})"] * 2 + [f"3 id(s) outside [0, {v})"]
    np.testing.assert_array_equal(report.actions, fitted.decode(ids))  # out-of-range ids skipped exactly


@SETTINGS
@given(st.lists(st.lists(st.integers(-(2**65), 2**65) | st.integers(0, 300), max_size=30), max_size=8))
def test_batch_validation_matches_careful_path(fitted, seqs):
    fast, fast_bad = fitted._check_tokens(seqs)
    slow, slow_bad = fitted._check_tokens_each(seqs)
    np.testing.assert_array_equal(fast_bad, slow_bad)
    assert len(fast) == len(slow) == len(seqs)
    for a, b in zip(fast.sequences(), slow.sequences()):
        assert a.dtype == b.dtype == np.int64
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("pretokenizer", ["none", "byte_level"])
def test_save_load_identical_ids_no_pickle(tmp_path, data, pretokenizer):
    tok = FASTTokenizer(vocab_size=256, pretokenizer=pretokenizer).fit(data[:300])
    directory = tok.save_pretrained(tmp_path / "tok")
    files = sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))  # hidden: the output manifest
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
    ids = tok.encode(chunks[:200])
    report = tok.decode_with_report(ids)
    assert not report.malformed.any() and chunks.shape[2] == 6
    deleted = [s[:p] + s[p + 1:] for s in ids for p in range(len(s))]  # every single deletion
    report = tok.decode_with_report(deleted)
    assert report.malformed.all() and not _is_zero_chunk(tok, report.actions).any()
