"""Open-loop evaluation: a trained policy's chunks against the demonstrated ones, on dataset episodes.

    action-tokenizers eval --policy runs/lm-binning --dataset ../shared/data/so101_record_test --out runs/ol-binning
    action-tokenizers eval --policy runs/lm-fast --dataset ../shared/data/so101_record_test --episodes all \\
        --regression runs/regression --out runs/ol-fast

Why: most LeRobot datasets come from real robots, where no simulator exists to run a closed loop.
What can still be measured is the one-step question behind every rollout: given the observation
recorded at frame t, how far is the policy's chunk from the chunk the demonstrator executed from t?
For every chunk start of the chosen episodes (by default the episodes the policy held out at
training, ``heldout_episodes`` in its ``policy_config.json``) this module builds the observation
the way training does (the state, the camera frames if the policy has cameras, and the task text,
all at the chunk's first frame), asks the policy for a batch of chunks through
``predict_action_chunk``, and compares them in raw action units.

Four rows put the policy's error on a scale:

* ``tokenizer_only``: encode then decode the true chunk. The error a perfect LM would still make
  with this tokenizer; the policy's error minus this one is what the LM gets wrong.
* ``constant``: the mean action of the policy's training episodes, repeated over the chunk. A
  policy that beats it learned something about the observation; one that does not, did not.
* ``regression`` (``--regression DIR``): the regression-BC baseline, queried the same way.

Metrics of every row (``chunk_errors``): MAE, RMSE and the worst absolute error, overall, per
action dimension and per step of the chunk. A tokenized policy adds token agreement with the
tokenizer's ids of the true chunk (``token_agreement``), the malformed count and the latency.

Only chunks that lie entirely inside their episode are scored (no padded tail steps); an episode
shorter than the chunk has none and is skipped and counted in ``meta.skipped_episodes``.

Writes ``OUT/results.json`` (the closed-loop report's convention: a top-level object keyed by
policy name, here each entry with an ``open_loop`` section, plus ``meta``), ``OUT/results.md`` and
PNG plots (predicted vs demonstrated trajectories of a few episodes, error by step in the chunk).
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from action_tokenizers.io import atomic_directory, check_output, read_json
from training.threads import check_threads, cpu_threads

__all__ = [
    "BASELINE_NAMES",
    "EvalChunks",
    "OpenLoopConfig",
    "Prediction",
    "chunk_errors",
    "load_eval_chunks",
    "observations",
    "open_loop_markdown",
    "parse_episodes",
    "read_policy_record",
    "requested_episodes",
    "run_open_loop",
    "token_agreement",
    "tokenizer_only",
    "trained_on",
]

HELD_OUT, ALL = "held-out", "all"
CONSTANT, REGRESSION = "constant", "regression"
BASELINE_NAMES = (CONSTANT, REGRESSION)
"""Keys the baselines take in results.json (next to the policy's name and ``meta``)."""
_POLICY_FILES = ("policy_config.json", "regression_config.json")


@dataclass
class OpenLoopConfig:
    """Evaluate a trained policy open loop on a LeRobot dataset's episodes (no simulator)."""

    policy: str
    """A trained-LM directory (``action-tokenizers train``) or a regression-baseline directory."""
    dataset: str
    """LeRobot v3 dataset root or Hub id; its action and state features must match the policy's."""
    out: Path = Path("runs/eval-open-loop")
    """Output directory (results.json, results.md, plots)."""
    episodes: str = HELD_OUT
    """Episodes to evaluate: held-out (those the policy held out at training), all, or episode_index values (0,3)."""
    regression: str | None = None
    """A regression-baseline directory to score on the same chunks (as a scale for the policy's error)."""
    stride: int = 1
    """Frames between consecutive chunk starts."""
    batch_size: int = 64
    """Chunks per predict_action_chunk call."""
    plot_episodes: int = 3
    """Episodes drawn in the trajectory plots (the first ones evaluated)."""
    name: str | None = None
    """Key of the policy in results.json (default: the policy directory's name)."""
    threads: int | None = 1
    """Torch CPU threads (None = torch's default); as in training, one thread per process on shared cores."""
    overwrite: bool = False
    """Write into --out even if it holds files this project did not write (they are kept)."""
    progress: bool = True
    """Print the table when done."""

    def __post_init__(self) -> None:
        if not str(self.policy) or not str(self.dataset):
            raise ValueError("--policy and --dataset are required")
        self.policy, self.dataset, self.out = str(self.policy), str(self.dataset), Path(self.out)
        if not isinstance(self.episodes, str):  # the Python API may pass a list of ints
            self.episodes = ",".join(str(int(e)) for e in self.episodes)
        parse_episodes(self.episodes)  # validates
        for name in ("stride", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.plot_episodes < 0:
            raise ValueError(f"--plot-episodes must be >= 0, got {self.plot_episodes}")
        check_threads(self.threads)
        if self.name in (*BASELINE_NAMES, "meta"):
            raise ValueError(f"--name {self.name!r} is reserved in results.json; pick another")


def parse_episodes(spec: str) -> str | list[int]:
    """``held-out`` / ``all`` as themselves, ``"0,3"`` as ``[0, 3]``; anything else is refused."""
    spec = spec.strip()
    if spec in (HELD_OUT, ALL):
        return spec
    try:
        ids = [int(x) for x in spec.replace(" ", ",").split(",") if x]
    except ValueError:
        ids = []
    if not ids or any(i < 0 for i in ids):
        raise ValueError(f"--episodes must be {HELD_OUT}, {ALL} or a comma list of episode_index values "
                         f"such as 0,3; got {spec!r}")
    return sorted(set(ids))


# ---------------------------------------------------------------------- inputs, checked before any prediction
@dataclass
class PolicyRecord:
    """What a policy directory says about the data it was trained on."""

    path: Path
    action_key: str
    state_key: str
    action_dim: int
    state_dim: int
    chunk_size: int
    heldout_episodes: list[int] | None
    """None when the policy recorded none (trained before held-out episodes were recorded)."""
    train_dataset: str | None
    image_keys: tuple[str, ...] = ()
    """Camera features the policy sees (``observation.images.<camera>``); empty for state-only policies."""


def read_policy_record(path: str | Path) -> PolicyRecord:
    """The keys, dimensions and held-out episodes a trained-LM or regression directory recorded."""
    path = Path(path)
    found = [f for f in _POLICY_FILES if (path / f).is_file()]
    if not found:
        raise FileNotFoundError(f"{path} is not a trained policy directory: it holds none of {list(_POLICY_FILES)}")
    cfg = read_json(path / found[0], what="policy config")
    training = cfg.get("training", {})  # the regression baseline keeps its settings here
    train_cfg = path / "train_config.json"
    train_dataset = read_json(train_cfg).get("dataset") if train_cfg.is_file() else training.get("dataset")
    held = cfg.get("heldout_episodes")
    return PolicyRecord(
        path=path,
        action_key=cfg.get("action_key", training.get("action_key", "action")),
        state_key=cfg.get("state_key", training.get("state_key", "observation.state")),
        action_dim=int(cfg["action_dim"]), state_dim=int(cfg["state_dim"]), chunk_size=int(cfg["chunk_size"]),
        heldout_episodes=None if held is None else [int(e) for e in held],
        train_dataset=None if train_dataset is None else str(train_dataset),
        image_keys=tuple(cfg.get("image_keys", training.get("image_keys", ()))),
    )


def dataset_features(root: Path) -> dict[str, dict[str, Any]]:
    """``features`` of a local dataset root's ``meta/info.json`` (a Hub id is resolved to a snapshot first)."""
    info = Path(root) / "meta" / "info.json"
    if not info.is_file():
        raise ValueError(f"{root} is not a LeRobot v3 dataset: {info} is missing")
    return read_json(info, what="dataset info").get("features", {})


def check_dataset_matches(features: dict[str, dict[str, Any]], rec: PolicyRecord, dataset: str) -> None:
    """Refuse a dataset whose action or state feature is missing or of another size, naming both sides."""
    for role, key, dim in (("action", rec.action_key, rec.action_dim), ("state", rec.state_key, rec.state_dim)):
        if key not in features:
            raise ValueError(
                f"dataset {dataset} has no feature {key!r}, from which policy {rec.path} reads its {dim}-D {role}; "
                f"the dataset's features are {sorted(features)}. Evaluate on a dataset with the policy's features, "
                "or train a policy on this one")
        shape = list(features[key].get("shape", []))
        if shape != [dim]:
            raise ValueError(
                f"dataset {dataset} feature {key!r} has shape {shape}, but policy {rec.path} was trained on "
                f"{dim}-D {role}s under {key!r}; evaluate on a dataset of the same robot, or train a policy on this one")
    for key in rec.image_keys:
        if features.get(key, {}).get("dtype") not in ("image", "video"):
            cameras = sorted(k for k, f in features.items() if f.get("dtype") in ("image", "video"))
            raise ValueError(f"dataset {dataset} has no camera feature {key!r}, whose images policy {rec.path} sees; "
                             f"the dataset's cameras are {cameras}")


def requested_episodes(spec: str, rec: PolicyRecord) -> str | list[int]:
    """``--episodes`` resolved against the policy's record (no data read): ``all`` or a list."""
    wanted = parse_episodes(spec)
    if wanted != HELD_OUT:
        return wanted
    if not rec.heldout_episodes:
        raise ValueError(
            f"policy {rec.path} recorded no held-out episodes (heldout_episodes in its config), so there is "
            "nothing to evaluate by default; pass --episodes all, or --episodes with a comma list of "
            "episode_index values such as 0,3")
    return sorted(rec.heldout_episodes)


def select_episodes(wanted: str | list[int], available: list[int], dataset: str) -> list[int]:
    """The requested episodes, each checked to exist in the dataset."""
    if wanted == ALL:
        return list(available)
    unknown = sorted(set(wanted) - set(available))
    if unknown:
        raise ValueError(f"episodes {unknown} are not in {dataset}, which has episode indices {available}")
    return sorted(wanted)


@dataclass
class EvalChunks:
    """The demonstrated chunks to score, with the observation recorded at each chunk's first frame."""

    root: Path
    """The dataset's local root (a Hub dataset's snapshot)."""
    actions: np.ndarray  # (n, h, d) raw units, every step inside its episode
    states: np.ndarray  # (n, s)
    tasks: list[str]
    episode_index: np.ndarray  # (n,)
    frame_index: np.ndarray  # (n,) the chunk's first frame
    action_names: list[str]
    episodes: list[int]
    """Episodes scored (at least one full chunk)."""
    skipped_episodes: list[int]
    """Selected episodes shorter than the chunk: no full chunk to score."""
    episode_actions: dict[int, np.ndarray]
    """Whole demonstrated trajectory (T, d) of every scored episode, for the plots."""
    images: dict[str, np.ndarray]
    """Camera key -> (n, H, W, C) uint8 frame at each chunk's first frame (only the keys a policy sees)."""
    constant_action: np.ndarray  # (d,)
    constant_episodes: list[int]
    """Episodes the constant baseline's mean comes from (the policy's training episodes when known)."""


def load_eval_chunks(cfg: OpenLoopConfig, rec: PolicyRecord, image_keys: tuple[str, ...] = ()) -> EvalChunks:
    """Check the dataset against the policy, choose the episodes, and cut the full chunks (with the
    camera frames at chunk starts for ``rec.image_keys`` and ``image_keys``: those a baseline sees)."""
    from action_tokenizers.data import load_chunks, load_episodes

    from action_tokenizers.hub import resolve_dataset

    root = resolve_dataset(cfg.dataset)  # a Hub id: a snapshot of meta/ and data/ (no videos)
    check_dataset_matches(dataset_features(root), rec, cfg.dataset)
    wanted = requested_episodes(cfg.episodes, rec)
    every = load_episodes(root, keys=(rec.action_key,), with_tasks=False)  # actions only: cheap
    lengths = {ep.index: len(ep) for ep in every}
    selected = select_episodes(wanted, sorted(lengths), cfg.dataset)
    skipped = [e for e in selected if lengths[e] < rec.chunk_size]
    scored = [e for e in selected if lengths[e] >= rec.chunk_size]
    if not scored:
        raise ValueError(f"every selected episode of {cfg.dataset} ({selected}, lengths {[lengths[e] for e in selected]}) "
                         f"is shorter than the policy's chunk of {rec.chunk_size} steps: nothing to score")
    cs = load_chunks(root, chunk_size=rec.chunk_size, stride=cfg.stride, action_key=rec.action_key, pad="drop",
                     state_key=rec.state_key, with_tasks=True, episodes=scored,
                     image_keys=tuple(dict.fromkeys((*rec.image_keys, *image_keys))))
    if cs.states is None or cs.states.shape[1] != rec.state_dim or cs.action_dim != rec.action_dim:
        raise ValueError(f"dataset {cfg.dataset} gave {cs.action_dim}-D actions and states of shape "
                         f"{None if cs.states is None else cs.states.shape}; policy {rec.path} needs "
                         f"{rec.action_dim}-D actions and {rec.state_dim}-D states")
    actions_by_ep = {ep.index: ep.arrays[rec.action_key] for ep in every}
    const_eps = _constant_episodes(cfg.dataset, rec, sorted(lengths), scored)
    constant = np.concatenate([actions_by_ep[e] for e in const_eps]).mean(0)  # (d,)
    names = cs.action_names or [f"dim{j}" for j in range(cs.action_dim)]
    return EvalChunks(root=root, actions=cs.actions, states=cs.states, tasks=list(cs.tasks or [""] * len(cs)),
                      episode_index=cs.episode_index, frame_index=cs.frame_index, action_names=list(names),
                      episodes=scored, skipped_episodes=skipped,
                      episode_actions={e: actions_by_ep[e] for e in scored}, images=dict(cs.images or {}),
                      constant_action=constant, constant_episodes=const_eps)


def _constant_episodes(dataset: str, rec: PolicyRecord, available: list[int], scored: list[int]) -> list[int]:
    """The constant baseline's episodes: the policy's training episodes when this is its training data
    (every episode it did not hold out), else this dataset's episodes not being scored, else the scored ones."""
    same_data = rec.train_dataset is not None and _same_path(rec.train_dataset, dataset)
    if same_data and rec.heldout_episodes is not None:
        train = [e for e in available if e not in set(rec.heldout_episodes)]
        if train:
            return train
    rest = [e for e in available if e not in set(scored)]
    return rest or list(scored)


def trained_on(rec: PolicyRecord, dataset: str, scored: list[int]) -> list[int] | None:
    """Scored episodes the model was trained on (its figures there are in-sample); None when unknown."""
    if rec.train_dataset is None:
        return None
    if not _same_path(rec.train_dataset, dataset):
        return []
    held = set(rec.heldout_episodes or [])
    return [e for e in scored if e not in held]


def _same_path(a: str, b: str) -> bool:
    try:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    except OSError:
        return a == b


# ---------------------------------------------------------------------- metrics
def chunk_errors(pred: np.ndarray, truth: np.ndarray, names: list[str]) -> dict[str, Any]:
    """MAE, RMSE and worst absolute error of ``pred`` vs ``truth`` (both (n, h, d), raw units):
    overall, per dimension (by name) and per step of the chunk."""
    if pred.shape != truth.shape:
        raise ValueError(f"predicted chunks {pred.shape} and demonstrated chunks {truth.shape} differ in shape")
    err = pred - truth  # (n, h, d)
    abs_err, sq = np.abs(err), err ** 2
    return {
        "mae": float(abs_err.mean()),
        "rmse": float(np.sqrt(sq.mean())),
        "max_abs_err": float(abs_err.max()),
        "per_dim": {name: {"mae": float(abs_err[..., j].mean()), "rmse": float(np.sqrt(sq[..., j].mean())),
                           "max_abs_err": float(abs_err[..., j].max())} for j, name in enumerate(names)},
        "per_step_mae": abs_err.mean(axis=(0, 2)).tolist(),  # (h,)
        "per_step_rmse": np.sqrt(sq.mean(axis=(0, 2))).tolist(),  # (h,)
        "n_chunks": int(pred.shape[0]),
    }


def token_agreement(pred_ids: list[list[int]], true_ids: list[list[int]]) -> dict[str, Any]:
    """Agreement of the policy's ids with the tokenizer's ids of the true chunk.

    ``token_accuracy``: ids equal at the same position, over all positions, where a chunk counts
    ``max(len(pred), len(true))`` positions. For fixed-length tokenizers (binning, VQ) this is the
    plain per-position accuracy; for variable-length FAST a sequence that is too short or too long
    is charged every missing or extra position, and after an early difference later positions
    usually differ too (BPE tokens are not aligned to time steps), so it is a strict measure.
    ``exact_share``: chunks whose id sequence equals the tokenizer's exactly (they decode to the
    tokenizer-only reconstruction).
    """
    if len(pred_ids) != len(true_ids):
        raise ValueError(f"{len(pred_ids)} predicted sequences for {len(true_ids)} true ones")
    match = positions = exact = 0
    for p, t in zip(pred_ids, true_ids):
        k = min(len(p), len(t))
        match += int(np.sum(np.asarray(p[:k]) == np.asarray(t[:k]))) if k else 0
        positions += max(len(p), len(t))
        exact += int(list(p) == list(t))
    return {"token_accuracy": match / max(positions, 1), "exact_share": exact / max(len(true_ids), 1)}


# ---------------------------------------------------------------------- predictions
@dataclass
class Prediction:
    """One row of the report: predicted chunks for every scored chunk, and what producing them cost."""

    actions: np.ndarray  # (n, h, d) raw units
    ids: list[list[int]] | None
    """Local action ids per chunk (tokenized policies and the tokenizer; None otherwise)."""
    malformed: int | None
    latency_s_per_call: float | None
    calls: int


def observations(chunks: EvalChunks, rows: slice, state_key: str, image_keys: tuple[str, ...]) -> dict[str, Any]:
    """The batch training builds for ``rows``: the state and task text at each chunk's first frame, and
    the camera frames (uint8 ``(b, H, W, C)``) a policy with cameras sees."""
    return {state_key: chunks.states[rows], "task": chunks.tasks[rows], **{k: chunks.images[k][rows] for k in image_keys}}


def predict(policy: Any, chunks: EvalChunks, rec: PolicyRecord, batch_size: int) -> Prediction:
    """Query ``policy.predict_action_chunk`` in batches of observations built as training builds them."""
    n, parts, ids, malformed, latency = len(chunks.tasks), [], [], 0, 0.0
    warm = slice(0, min(2, n))  # one untimed call: lazy imports and first kernels are not per-chunk costs
    policy.predict_action_chunk(observations(chunks, warm, rec.state_key, rec.image_keys))
    starts = range(0, n, batch_size)
    for a in starts:
        b = slice(a, min(a + batch_size, n))
        parts.append(np.asarray(policy.predict_action_chunk(observations(chunks, b, rec.state_key, rec.image_keys)),
                                dtype=np.float64))
        stats = policy.last_stats
        malformed += int(stats.get("malformed", 0))
        latency += float(stats.get("latency_s", 0.0))
        got = stats.get("action_ids")
        ids = None if got is None or ids is None else ids + [list(map(int, s)) for s in got]
    actions = np.concatenate(parts)
    if actions.shape != chunks.actions.shape:
        raise ValueError(f"the policy returned chunks of shape {actions.shape[1:]}, "
                         f"the dataset's are {chunks.actions.shape[1:]}")
    return Prediction(actions, ids, malformed, latency / max(len(starts), 1), len(starts))


def tokenizer_only(tok: Any, truth: np.ndarray) -> Prediction:
    """The tokenizer alone: the true chunks encoded and decoded (the floor of any policy using it)."""
    true_ids = tok.encode(truth)
    report = tok.decode_with_report(true_ids)
    return Prediction(report.actions, true_ids, report.n_malformed, None, 0)


def _row(pred: Prediction, chunks: EvalChunks, true_ids: list[list[int]] | None, batch_size: int) -> dict[str, Any]:
    """The results entry of one row: errors, then token agreement, malformed and latency where they exist."""
    row = chunk_errors(pred.actions, chunks.actions, chunks.action_names)
    if pred.ids is not None:
        row["tokens_per_chunk"] = float(np.mean([len(s) for s in pred.ids]))
        if true_ids is not None:
            row.update(token_agreement(pred.ids, true_ids))
    row["malformed"] = pred.malformed
    if pred.latency_s_per_call is not None:
        row["latency_s_per_call"] = pred.latency_s_per_call
        row["latency_s_per_chunk"] = pred.latency_s_per_call * pred.calls / max(len(chunks.tasks), 1)
        row["batch_size"] = batch_size
    return row


# ---------------------------------------------------------------------- the run
def run_open_loop(cfg: OpenLoopConfig) -> dict[str, Any]:
    """Check, predict, score, write the report; returns the results dict (as in results.json)."""
    with cpu_threads(cfg.threads):
        return _run(cfg)


def _run(cfg: OpenLoopConfig) -> dict[str, Any]:
    from eval.policies import load_policy, policy_name

    start = time.perf_counter()
    from training.hub import resolve_policy

    # -- inputs, all checked before any prediction (a Hub policy id: a snapshot of its data files)
    policy_dir = resolve_policy(cfg.policy)
    reg_dir = None if cfg.regression is None else resolve_policy(cfg.regression)
    rec = read_policy_record(policy_dir)
    reg_rec = None if reg_dir is None else read_policy_record(reg_dir)
    if reg_rec is not None and reg_rec.chunk_size != rec.chunk_size:
        raise ValueError(f"regression baseline {reg_rec.path} predicts chunks of {reg_rec.chunk_size} steps, policy "
                         f"{rec.path} of {rec.chunk_size}; train the baseline with --chunk-size {rec.chunk_size}")
    check_output(cfg.out, "eval", cfg.overwrite)  # refuse now, not after the predictions
    if reg_rec is not None:
        from action_tokenizers.hub import resolve_dataset

        check_dataset_matches(dataset_features(resolve_dataset(cfg.dataset)), reg_rec, cfg.dataset)
    chunks = load_eval_chunks(cfg, rec, () if reg_rec is None else reg_rec.image_keys)
    policy = load_policy(policy_dir)
    name = cfg.name or policy_name(policy, fallback=Path(cfg.policy).resolve().name)
    if name in (*BASELINE_NAMES, "meta"):
        raise ValueError(f"the policy's results key {name!r} is reserved in results.json; pass --name")

    # -- rows: tokenizer alone, the policy, the baselines
    tok = getattr(policy, "action_tokenizer", None)
    tok_pred = tokenizer_only(tok, chunks.actions) if tok is not None else None
    pol_pred = predict(policy, chunks, rec, cfg.batch_size)
    true_ids = None if tok_pred is None else tok_pred.ids
    entry: dict[str, Any] = {"open_loop": _row(pol_pred, chunks, true_ids, cfg.batch_size)}
    entry["open_loop"]["trained_on_episodes"] = trained_on(rec, cfg.dataset, chunks.episodes)
    if tok_pred is not None:
        entry["open_loop"]["tokenizer_only"] = _row(tok_pred, chunks, None, cfg.batch_size)
        entry["family"] = getattr(tok, "family", None)
    entry.update(chunk_size=rec.chunk_size, action_dim=rec.action_dim)
    const = np.broadcast_to(chunks.constant_action, chunks.actions.shape)
    results: dict[str, Any] = {name: entry,
                               CONSTANT: {"open_loop": {**chunk_errors(const, chunks.actions, chunks.action_names),
                                                        "episodes": chunks.constant_episodes,
                                                        "trained_on_episodes": sorted(set(chunks.constant_episodes)
                                                                                      & set(chunks.episodes))}}}
    predicted = {name: pol_pred.actions}
    if reg_rec is not None:
        reg_pred = predict(load_policy(reg_dir), chunks, reg_rec, cfg.batch_size)
        results[REGRESSION] = {"open_loop": _row(reg_pred, chunks, None, cfg.batch_size)}
        results[REGRESSION]["open_loop"]["trained_on_episodes"] = trained_on(reg_rec, cfg.dataset, chunks.episodes)
        predicted[REGRESSION] = reg_pred.actions
    results["meta"] = _meta(cfg, chunks, time.perf_counter() - start)
    _write(cfg, results, chunks, predicted)
    if cfg.progress:
        print(open_loop_markdown(results) + f"\nwrote {cfg.out / 'results.json'}")
    return results


def _meta(cfg: OpenLoopConfig, chunks: EvalChunks, seconds: float) -> dict[str, Any]:
    return {
        "mode": "open_loop",
        "policy": cfg.policy,
        "dataset": cfg.dataset,
        "episodes_requested": cfg.episodes,
        "episodes": chunks.episodes,
        "skipped_episodes": chunks.skipped_episodes,
        "n_skipped_episodes": len(chunks.skipped_episodes),
        "n_chunks": int(len(chunks.tasks)),
        "stride": cfg.stride,
        "chunk_size": int(chunks.actions.shape[1]),
        "action_names": chunks.action_names,
        "regression": cfg.regression,
        "seconds": seconds,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
    }


# ---------------------------------------------------------------------- the report
def _rows(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Table rows in reading order: each policy, its tokenizer alone, then the baselines."""
    rows: dict[str, dict[str, Any]] = {}
    for key, value in results.items():
        if not isinstance(value, dict) or "open_loop" not in value or key in BASELINE_NAMES:
            continue
        rows[key] = value["open_loop"]
        if "tokenizer_only" in value["open_loop"]:
            rows[f"{key} (tokenizer only)"] = value["open_loop"]["tokenizer_only"]
    for key in BASELINE_NAMES:
        if key in results:
            rows[key] = results[key]["open_loop"]
    return rows


def _in_sample_notes(rows: dict[str, dict[str, Any]]) -> list[str]:
    """One line per row whose model saw scored episodes in training (its figures there are in-sample)."""
    return [f"**{name}** was trained (or, for the constant, averaged) on scored episodes {r['trained_on_episodes']}: "
            "its figures on them are in-sample." for name, r in rows.items() if r.get("trained_on_episodes")]


def open_loop_markdown(results: dict[str, Any]) -> str:
    """Markdown: one row per policy / tokenizer / baseline, then MAE per dimension and per chunk step."""
    rows = _rows(results)
    meta = results.get("meta", {})

    def num(x: Any, fmt: str, scale: float = 1.0) -> str:
        return "-" if x is None else format(x * scale if scale != 1.0 else x, fmt)

    lines = [f"Open loop on {meta.get('dataset', '?')}: episodes {meta.get('episodes')}, {meta.get('n_chunks')} chunks "
             f"of {meta.get('chunk_size')} steps (stride {meta.get('stride')}); skipped episodes shorter than the chunk: "
             f"{meta.get('n_skipped_episodes', 0)} {meta.get('skipped_episodes', [])}. Errors in raw action units.", "",
             *[line for note in _in_sample_notes(rows) for line in (note, "")],
             "| row | MAE | RMSE | worst | token acc | exact | malformed | tokens / chunk | latency / chunk (ms) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['mae']:.4g} | {r['rmse']:.4g} | {r['max_abs_err']:.4g} | "
                     f"{num(r.get('token_accuracy'), '.1%')} | {num(r.get('exact_share'), '.1%')} | "
                     f"{num(r.get('malformed'), 'd')} | {num(r.get('tokens_per_chunk'), '.1f')} | "
                     f"{num(r.get('latency_s_per_chunk'), '.2f', 1000.0)} |")
    dims = list(next(iter(rows.values()))["per_dim"]) if rows else []
    lines += ["", "MAE per action dimension:", "", "| dimension | " + " | ".join(rows) + " |", "|---|" + "---|" * len(rows)]
    lines += [f"| {d} | " + " | ".join(f"{r['per_dim'][d]['mae']:.4g}" for r in rows.values()) + " |" for d in dims]
    h = len(next(iter(rows.values()))["per_step_mae"]) if rows else 0
    lines += ["", "MAE by step within the chunk:", "", "| step | " + " | ".join(rows) + " |", "|---|" + "---|" * len(rows)]
    lines += [f"| {k} | " + " | ".join(f"{r['per_step_mae'][k]:.4g}" for r in rows.values()) + " |" for k in range(h)]
    return "\n".join(lines) + "\n"


def _tiling(rows: np.ndarray, frames: np.ndarray, h: int) -> np.ndarray:
    """Chunks of one episode that follow each other without overlap (as a robot executing whole chunks)."""
    keep, next_frame = [], -1
    for r in rows.tolist():
        if frames[r] >= next_frame:
            keep.append(r)
            next_frame = frames[r] + h
    return np.asarray(keep, dtype=np.int64)


def _write(cfg: OpenLoopConfig, results: dict[str, Any], chunks: EvalChunks, predicted: dict[str, np.ndarray]) -> None:
    from action_tokenizers.io import write_json
    from eval.plots import plot_open_loop_error_by_step, plot_open_loop_trajectories

    with atomic_directory(cfg.out, kind="eval", overwrite=cfg.overwrite) as tmp:
        plots = [plot_open_loop_error_by_step(_rows(results), tmp / "error_by_step.png")]
        h = chunks.actions.shape[1]
        for ep in chunks.episodes[: cfg.plot_episodes]:
            rows = _tiling(np.flatnonzero(chunks.episode_index == ep), chunks.frame_index, h)
            plots.append(plot_open_loop_trajectories(
                chunks.episode_actions[ep], chunks.frame_index[rows], {k: v[rows] for k, v in predicted.items()},
                chunks.action_names, tmp / f"trajectories_episode_{ep}.png", title=f"episode {ep}"))
        results["meta"]["plots"] = [p.name for p in plots]
        write_json(tmp / "results.json", results)
        md = open_loop_markdown(results) + "\n" + "\n".join(f"![{p.stem}]({p.name})" for p in plots) + "\n"
        (tmp / "results.md").write_text(md)
