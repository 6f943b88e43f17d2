"""Reliability probe: bad inputs and faults tried as a user would (API, CLI, kills, concurrent writers).

    nice -n 10 .venv/bin/python -m benchmarks.reliability_probe [--dataset ../shared/data/so101_record_test]
    PYTHONPATH=OLD_CHECKOUT .venv/bin/python -m benchmarks.reliability_probe   # the same cases on older code

One line per case with a verdict, then the counts per class (docs/reliability.md):
ok (a clear error or a correct result), loss (a user's file or an output lost), silent (a wrong
result without a flag), traceback (an error a user cannot read). Cases that need code the checked
out version lacks report the import error, to be judged by hand.
"""
import argparse
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np

_args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
_args.add_argument("--dataset", default="../shared/data/so101_record_test", help="a small LeRobot v3 dataset with observation.state")
SO101 = str(Path(_args.parse_args().dataset).resolve())
TMP = Path(tempfile.mkdtemp(prefix="probe12-"))
RESULTS = []


def case(cls, name):
    def deco(fn):
        try:
            verdict = fn()
        except Exception as e:
            verdict = f"traceback? {type(e).__name__}: {str(e)[:100]}"
        RESULTS.append((cls, name, verdict))
        print(f"[{cls}] {name}: {verdict}", flush=True)
        return fn
    return deco


def user_dir(p):
    p.mkdir(parents=True, exist_ok=True)
    (p / "notes.txt").write_text("n"); (p / "README.md").write_text("r"); (p / ".git").mkdir(); (p / ".git" / "HEAD").write_text("h")


def user_intact(p):
    return (p / "notes.txt").exists() and (p / ".git" / "HEAD").exists() and (p / "README.md").read_text() == "r"


def cli(args, env=None):
    r = subprocess.run([sys.executable, "-c", "from eval.cli import main; raise SystemExit(main())", *args],
                       capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=600)
    return r.returncode, r.stderr


def readable(rc, err):
    return "ok" if rc != 0 and "Traceback" not in err and len(err.strip().splitlines()) <= 2 else f"traceback (rc {rc})"


from action_tokenizers.binning import BinningTokenizer
from action_tokenizers import AutoActionTokenizer
from eval.evaluate import EvalConfig
HORIZON = "--horizon" if "horizon" in {f.name for f in dataclasses.fields(EvalConfig)} else "--max-steps"
X = np.random.default_rng(0).normal(size=(64, 4, 2))
TOK = BinningTokenizer(n_bins=16).fit(X)

# ----------------------------------------------------------------- data loss
@case("loss", "fit --out with user files")
def _():
    out = TMP / "fit-user"; user_dir(out)
    rc, err = cli(["fit", "--dataset", SO101, "--out", str(out), "--no-sweep", "--no-progress", "--chunk-size", "4"])
    return "ok" if user_intact(out) and (rc != 0 and "Traceback" not in err) else f"loss (rc {rc}, files kept {user_intact(out)})"

@case("loss", "eval --out with user files")
def _():
    out = TMP / "eval-user"; user_dir(out)
    rc, err = cli(["eval", "--policy", "expert", "--tasks", "reach-v3", "--episodes", "1", HORIZON, "10",
                   "--n-envs", "1", "--out", str(out), "--no-progress"])
    assert "Unrecognized" not in err, err
    return "ok" if user_intact(out) and rc != 0 and "Traceback" not in err else f"loss (rc {rc}, files kept {user_intact(out)})"

@case("loss", "save_pretrained into a folder with user files")
def _():
    out = TMP / "save-user"; user_dir(out)
    try:
        TOK.save_pretrained(out)
    except Exception:
        pass
    return "ok" if user_intact(out) else "loss"

@case("loss", "save_pretrained('tok/config.json')")
def _():
    d = TOK.save_pretrained(TMP / "tok-file")
    try:
        TOK.save_pretrained(d / "config.json")
    except Exception:
        pass
    try:
        AutoActionTokenizer.from_pretrained(d); return "ok"
    except Exception as e:
        return f"loss ({type(e).__name__})"

@case("loss", "fit --out a-file")
def _():
    f = TMP / "a-file"; f.write_text("keep")
    rc, err = cli(["fit", "--dataset", SO101, "--out", str(f), "--no-sweep", "--no-progress", "--chunk-size", "4"])
    return "ok" if f.is_file() and f.read_text() == "keep" else "loss"

SAVE_LOOP = textwrap.dedent('''
    import sys, numpy as np
    from action_tokenizers.binning import BinningTokenizer
    x = np.random.default_rng(0).normal(size=(64, 4, 2))
    toks = [BinningTokenizer(n_bins=n).fit(x) for n in (8, 32)]
    print("ready", flush=True)
    errors = 0
    for i in range(int(sys.argv[2])):
        try:
            toks[i % 2].save_pretrained(sys.argv[1])
        except Exception as e:
            errors += 1
            print(type(e).__name__, flush=True)
''')

@case("loss", "kill during save (5 SIGKILLs) leaves a loadable folder, no left-over copies")
def _():
    d = TOK.save_pretrained(TMP / "kill")
    rng = np.random.default_rng(1)
    bad = 0
    for _ in range(5):
        p = subprocess.Popen([sys.executable, "-c", SAVE_LOOP, str(d), "100000"], stdout=subprocess.PIPE, text=True)
        p.stdout.readline()
        time.sleep(float(rng.uniform(0.05, 0.4)))
        os.kill(p.pid, signal.SIGKILL); p.wait()
        try:
            AutoActionTokenizer.from_pretrained(d)
        except Exception:
            bad += 1
    try:
        TOK.save_pretrained(d)
    except Exception:
        pass
    hidden = [q.name for q in d.parent.iterdir() if q.name.startswith(".")] + [q.name for q in d.iterdir() if q.name.startswith((".action_tokenizers.staging", ".action_tokenizers.tmp"))] if d.exists() else []
    return "ok" if bad == 0 and not hidden else f"loss ({bad} unloadable, left-overs {len(hidden)})"

@case("loss", "two processes x 150 saves into one folder")
def _():
    d = TMP / "race"
    ps = [subprocess.Popen([sys.executable, "-c", SAVE_LOOP, str(d), "150"], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate()[0] for p in ps]
    errors = [l for o in outs for l in o.splitlines()[1:]]
    raw = [e for e in errors if e not in ("FolderLockedError",)]
    hidden = [q.name for q in d.parent.iterdir() if q.name.startswith(".")] + [q.name for q in d.iterdir() if q.name.startswith((".action_tokenizers.staging", ".action_tokenizers.tmp"))]
    ok_load = True
    try:
        AutoActionTokenizer.from_pretrained(d)
    except Exception:
        ok_load = False
    locked = len(errors) - len(raw)
    return "ok" if not raw and not hidden and ok_load else f"loss ({len(raw)} raw errors {sorted(set(raw))}, {len(hidden)} left-overs, loads {ok_load})"

# ----------------------------------------------------------------- silently wrong
POLICY_DIR = TMP / "policy"
def _policy():
    from action_tokenizers.data import load_chunks
    from training.train import TrainConfig, run_train
    from training import TokenizedPolicy
    if not (POLICY_DIR / "out").exists():
        BinningTokenizer(n_bins=16).fit(load_chunks(SO101, chunk_size=4, pad="last").actions).save_pretrained(POLICY_DIR / "tok")
        run_train(TrainConfig(dataset=Path(SO101), tokenizer=POLICY_DIR / "tok", out=POLICY_DIR / "out", hidden_size=32,
                              n_layers=1, n_heads=2, max_steps=2, batch_size=4, eval_chunks=2, progress=False))
    return TokenizedPolicy.from_pretrained(POLICY_DIR / "out", device="cpu")

def refused(fn):
    try:
        out = fn()
    except (ValueError, TypeError, KeyError) as e:
        return "ok"
    return "silent"

for label, mod in [("NaN in one state value", lambda s: s.__setitem__((0, 1), np.nan)),
                   ("NaN in every state value", lambda s: s.fill(np.nan)),
                   ("inf in a state", lambda s: s.__setitem__((0, 0), np.inf))]:
    @case("silent", f"predict_action_chunk: {label}")
    def _(mod=mod):
        pol = _policy()
        s = np.zeros((2, pol.state_dim)); mod(s)
        return refused(lambda: pol.predict_action_chunk({"observation.state": s, "task": "pick"}))

@case("silent", "predict_action_chunk temperature=NaN")
def _():
    pol = _policy()
    return refused(lambda: pol.predict_action_chunk({"observation.state": np.zeros((1, pol.state_dim)), "task": "pick"}, temperature=float("nan")))

@case("silent", "regression policy: NaN state")
def _():
    try:
        from training.regression import RegressionPolicy, _mlp, _state_normalizer
    except ImportError:
        from eval.regression import RegressionPolicy, _mlp, _state_normalizer
    from action_tokenizers.normalize import Normalizer
    rng = np.random.default_rng(0)
    try:
        reg = RegressionPolicy(_mlp(5, 6, hidden=8, layers=1), ["reach"], Normalizer("quantile").fit(rng.uniform(-1, 1, (100, 2))),
                               _state_normalizer(rng.normal(size=(100, 4))), 3, 2)
    except TypeError:
        reg = RegressionPolicy(_mlp(5, 6, 8, 1), ["reach"], Normalizer("quantile").fit(rng.uniform(-1, 1, (100, 2))),
                               Normalizer("meanstd").fit(rng.normal(size=(100, 4))), 3, 2)
    s = np.zeros((1, 4)); s[0, 2] = np.nan
    return refused(lambda: reg.predict_action_chunk({"observation.state": s, "task": ["reach"]}))

@case("silent", "decode([]) flagged like decode(np.array([]))")
def _():
    r1 = TOK.decode([]); r2 = TOK.decode(np.array([]))
    return "ok" if np.shape(r1) == np.shape(r2) else f"silent ({np.shape(r1)} vs {np.shape(r2)})"

@case("silent", "encode far outside the fitted range: clipping counted")
def _():
    far = X[:4] * 1e6
    if hasattr(TOK, "encode_with_report"):
        st = TOK.encode_with_report(far).stats
        return "ok" if st.clipped_values > 0 else "silent"
    return "silent"

@case("silent", "chunk longer than every episode warns")
def _():
    from action_tokenizers.data import load_chunks
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        load_chunks(SO101, chunk_size=5000, pad="last")
    return "ok" if any("longer than every episode" in str(x.message) for x in w) else "silent"

def flipped(name, fit):
    d = fit().save_pretrained(TMP / f"flip-{name}")
    data = bytearray((d / name).read_bytes())
    if name.endswith(".json"):
        (d / name).write_text((d / name).read_text() + " ")
    else:
        data[-3] ^= 1; (d / name).write_bytes(bytes(data))
    try:
        AutoActionTokenizer.from_pretrained(d)
    except Exception:
        return "ok"
    return "silent"

@case("silent", "bit flip in tensors.safetensors")
def _():
    return flipped("tensors.safetensors", lambda: BinningTokenizer(n_bins=32).fit(X))

@case("silent", "hand edit of FAST tokenizer.json")
def _():
    from action_tokenizers.fast import FASTTokenizer
    t = np.linspace(0, 1, 8); rng = np.random.default_rng(0)
    xs = np.sin(2 * np.pi * (t[None, :, None] + rng.uniform(0, 1, (300, 1, 2))))
    return flipped("tokenizer.json", lambda: FASTTokenizer(vocab_size=256).fit(xs))

@case("silent", "bit flip in VQ model.safetensors")
def _():
    from action_tokenizers.vq import VQConfig, VQTokenizer
    return flipped("model.safetensors", lambda: VQTokenizer(VQConfig(max_steps=2, codebook_size=16)).fit(X))

@case("silent", "hand-edited config.json (valid JSON)")
def _():
    d = BinningTokenizer(n_bins=32).fit(X).save_pretrained(TMP / "edit-config")
    c = json.loads((d / "config.json").read_text()); c["metrics"] = {"edited": 1}
    (d / "config.json").write_text(json.dumps(c))
    try:
        AutoActionTokenizer.from_pretrained(d)
    except Exception:
        return "ok"
    return "silent"

@case("silent", "bit flip in a policy's observation encoder")
def _():
    from training import TokenizedPolicy
    _policy()
    d = TMP / "policy-flip"; shutil.copytree(POLICY_DIR / "out", d)
    f = d / "observation_encoder.safetensors"; data = bytearray(f.read_bytes()); data[-3] ^= 1; f.write_bytes(bytes(data))
    try:
        TokenizedPolicy.from_pretrained(d, device="cpu")
    except Exception:
        return "ok"
    return "silent"

# ----------------------------------------------------------------- tracebacks
@case("traceback", "fit --out in an unwritable place")
def _():
    return readable(*cli(["fit", "--dataset", SO101, "--out", "/proc/probe12/out", "--no-sweep", "--no-progress", "--chunk-size", "4"]))

@case("traceback", "train --tokenizer tr/nope (tr/ exists)")
def _():
    os.chdir(TMP); (TMP / "tr").mkdir(exist_ok=True)
    rc, err = cli(["train", "--dataset", SO101, "--tokenizer", "tr/nope", "--out", str(TMP / "tr-run"), "--no-progress"])
    return readable(rc, err) if "ConnectionError" not in err and "could not fetch" not in err else "traceback (Hub error)"

@case("traceback", "fit --out a-file (CLI message)")
def _():
    f = TMP / "b-file"; f.write_text("x")
    return readable(*cli(["fit", "--dataset", SO101, "--out", str(f), "--no-sweep", "--no-progress", "--chunk-size", "4"]))

@case("traceback", "eval --out a-file (CLI message)")
def _():
    f = TMP / "c-file"; f.write_text("x")
    return readable(*cli(["eval", "--policy", "expert", "--tasks", "reach-v3", "--episodes", "1", HORIZON, "10", "--n-envs", "1", "--out", str(f), "--no-progress"]))

def clear(fn, words):
    try:
        fn()
    except Exception as e:
        return "ok" if any(w in str(e) for w in words) else f"traceback ({type(e).__name__}: {str(e)[:60]})"
    return "ok"

@case("traceback", "fit with zero action dimensions")
def _():
    return clear(lambda: BinningTokenizer().fit(np.zeros((5, 4, 0))), ["action dimension"])

@case("traceback", "VQ encode of an empty batch")
def _():
    from action_tokenizers.vq import VQConfig, VQTokenizer
    vq = VQTokenizer(VQConfig(max_steps=2, codebook_size=16)).fit(X)
    return clear(lambda: vq.encode(np.zeros((0, 4, 2))), ["empty"])

@case("traceback", "decode(torch 1-D tensor)")
def _():
    import torch
    return clear(lambda: TOK.decode(torch.tensor(TOK.encode(X[:1])[0])), ["__never__"])

@case("traceback", "predict_action_chunk with a batch of 0")
def _():
    pol = _policy()
    return clear(lambda: pol.predict_action_chunk({"observation.state": np.zeros((0, pol.state_dim)), "task": []}), ["empty batch"])

for key, value, word in [("format_version", "1", "format_version"), ("chunk_size", "ten", "chunk_size")]:
    @case("traceback", f"config.json {key}: {value!r} names the file")
    def _(key=key, value=value, word=word):
        d = TOK.save_pretrained(TMP / f"cfg-{key}")
        c = json.loads((d / "config.json").read_text()); c[key] = value; (d / "config.json").write_text(json.dumps(c))
        return clear(lambda: AutoActionTokenizer.from_pretrained(d), [str(d / "config.json")])

@case("traceback", "VQ saved with device cuda, loaded without CUDA")
def _():
    from action_tokenizers.vq import VQConfig, VQTokenizer
    vq = VQTokenizer(VQConfig(max_steps=2, codebook_size=16)).fit(X)
    vq.config.device = "cuda"
    d = vq.save_pretrained(TMP / "vq-cuda")
    return clear(lambda: AutoActionTokenizer.from_pretrained(d), ["__never__"])

@case("traceback", "Ctrl-C in train says --resume")
def _():
    code = "import training.train as t\ndef f(cfg): raise KeyboardInterrupt\nt.run_train = f\nfrom eval.cli import main\nraise SystemExit(main())"
    r = subprocess.run([sys.executable, "-c", code, "train", "--dataset", "d", "--tokenizer", "t", "--out", str(TMP / "cc")],
                       capture_output=True, text=True, timeout=300)
    return "ok" if "Traceback" not in r.stderr and "--resume" in r.stderr else f"traceback (rc {r.returncode})"

@case("traceback", "an unexpected exception type in a command")
def _():
    code = "import action_tokenizers.cli as c\ndef f(cfg): raise ZeroDivisionError('x')\nc.run_fit = f\nfrom eval.cli import main\nraise SystemExit(main())"
    r = subprocess.run([sys.executable, "-c", code, "fit", "--dataset", "d"], capture_output=True, text=True, timeout=300)
    return readable(r.returncode, r.stderr)

print()
for cls in ("loss", "silent", "traceback"):
    rows = [r for r in RESULTS if r[0] == cls]
    print(f"{cls}: {sum(v == 'ok' for _, _, v in rows)} of {len(rows)} handled")
shutil.rmtree(TMP, ignore_errors=True)
