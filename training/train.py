"""Fine-tune a causal LM on tokenized action chunks (next-token cross-entropy on the actions only).

    action-tokenizers train --dataset runs/demos --tokenizer runs/tok-binning --out runs/train-binning
    accelerate launch -m training.train ...   # same loop, several GPUs (see ``main``)

Set-up reads top to bottom in :func:`run_train`: load the action tokenizer and the chunks (all
input checks happen here, before any training), split episodes into train/held-out, build or
load the LM and map the action ids into its vocabulary, build sequences, then a visible loop of
short helpers under ``accelerate``: ``get_batch`` -> ``train_step`` -> checkpoint / evaluate.
The output directory is self-contained (see :func:`export_policy`) and loads with
``training.TokenizedPolicy.from_pretrained``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from action_tokenizers.split import DataSelection
from action_tokenizers.io import OutputFolder, checksums, own_files_recursive, read_json, write_json
from training.threads import check_threads, cpu_threads
from training.vocab import STRATEGIES

if TYPE_CHECKING:
    import torch

    from action_tokenizers.base import ActionTokenizer
    from action_tokenizers.data import ChunkSet
    from action_tokenizers.split import EpisodeSplit
    from training.generation import DecodingPlan
    from training.model import BaseLM, PolicyModel
    from training.observation import ObservationEncoder
    from training.sequences import Examples
    from training.vocab import ActionVocab

CONFIG_FILE = "train_config.json"
METRICS_FILE = "metrics.json"
CARD_FILE = "README.md"
PAD_MODES = ("drop", "last")
PRECISIONS = ("no", "bf16", "fp16")
ORDERED_FAMILIES = ("binning",)
"""Tokenizer families whose local ids are ordered bins of one shared range (id k and k + 1 decode to
neighbouring values in every dimension), so smoothing a target over neighbouring ids means something."""
DEFAULT_BIN_SMOOTHING = 1.0
"""Std in bins of the ordered-bin targets when none is given (the factor study in docs/results.md)."""
READOUT_DEFAULTS: dict[str, str] = {"binning": "expectation"}
"""Families whose default readout is not argmax: ordered bins read out as the expectation of their
centres (with the Gaussian bin targets, the HL-Gauss recipe; docs/results.md's factor study)."""
ADDED_LATER = {"bin_smoothing": 0.0, "readout": "argmax", "state_noise": 0.0}
"""Fields newer than some saved runs, with the value those runs trained with (for ``--resume``)."""
MAX_SMOOTHED_BINS = 8192
"""Bin smoothing keeps one dense (bins x bins) target table on the device; more bins would not fit."""
# Fields that may change between a run and its --resume (they do not change what is trained).
RESUMABLE_FIELDS = ("out", "resume", "overwrite", "max_steps", "stop_after", "checkpoint_every", "eval_every",
                    "eval_chunks", "progress", "threads", "push_to_hub")


@dataclass
class TrainConfig(DataSelection):
    """Fine-tune a causal LM on a tokenized LeRobot dataset."""

    chunk_size: int | None = None
    """Expected chunk length; None takes the tokenizer's (a different value is an error)."""
    tokenizer: str = ""
    """A fitted action tokenizer: its directory, a ``fit --out`` folder or a Hub repo id; its chunk size is used (required)."""
    out: Path = Path("runs/train")
    """Output directory: model, tokenizers, vocabulary mapping, metrics, model card, checkpoints."""
    model: str | None = None
    """Hugging Face causal LM name or path; None builds the default small Llama from a config."""
    vocab_strategy: str = "add"
    """Action ids in the LM vocabulary: add (new tokens) or tail (reuse the last ids, OpenVLA/pi0-FAST)."""
    vocab_skip: int = 0
    """tail only: ids left alone at the end of the vocabulary (pi0-FAST uses 128)."""
    hidden_size: int = 128
    """Default model: embedding width."""
    n_layers: int = 4
    """Default model: transformer blocks."""
    n_heads: int = 4
    """Default model: attention heads."""
    max_steps: int = 1500
    """Optimizer steps (the schedule spans them)."""
    stop_after: int | None = None
    """End this invocation after this many total steps (schedule unchanged); continue with --resume."""
    batch_size: int = 32
    """Sequences per step per process."""
    lr: float = 1e-3
    """Peak learning rate (AdamW)."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    warmup_steps: int = 50
    """Linear warm-up steps, then cosine decay to 10% of lr."""
    grad_clip: float = 1.0
    """Gradient norm clip (0 = off)."""
    state_noise: float = 0.0
    """Std of Gaussian noise added to each training state, in units of the state's standard deviation (the encoder's standardization); the labels stay the expert's (0 = off). Training with input noise is a smoothness regularizer (Bishop 1995): nearby states are pushed towards the same chunk."""
    bin_smoothing: float | None = None
    """Binning tokenizers: target each action token with a discrete Gaussian over the neighbouring bins, this std in bins (0 = plain cross-entropy; None = the family's default: DEFAULT_BIN_SMOOTHING for ordered bins, 0 otherwise; docs/results.md's factor study)."""
    readout: str | None = None
    """How the policy reads a chunk from its ids: argmax (decode the generated ids) or expectation (binning: the mean of the bin centres under each position's softmax; VQ: the decode of the expected code vectors); None = the family's default (READOUT_DEFAULTS, else argmax). Saved with the policy; ``TokenizedPolicy.readout`` and ``eval --readout`` change it later."""
    action_softmax: bool = False
    """Normalize the training softmax over the action tokens and the end marker only, what constrained decoding can emit: a pretrained LM's text head (tens of thousands of rows) is then neither computed nor trained down, which speeds its steps and starts its loss at log(actions) rather than log(vocabulary)."""
    eval_chunks: int = 64
    """Held-out chunks generated and decoded for the reconstruction error."""
    eval_every: int = 0
    """Evaluate every N steps (0 = only at the end)."""
    pad: str = "last"
    """Chunks near an episode end: last (repeat the last action) or drop."""
    state_key: str = "observation.state"
    """Dataset feature holding the state observation."""
    obs_tokens: int = 1
    """LM input positions the state projection fills."""
    obs_hidden: int = 0
    """Hidden width of the state projection's MLP (0 = a single linear map)."""
    image_keys: tuple[str, ...] = ()
    """Camera features the policy sees (e.g. observation.images.corner2); empty: state only."""
    vision_encoder: str = "cnn"
    """Image backbone: cnn (small, from scratch, random-shift augmentation) or a transformers vision model name/path."""
    image_tokens: int = 1
    """LM input positions per camera."""
    resume: bool = False
    """Continue from the last complete checkpoint in --out (the config must match)."""
    overwrite: bool = False
    """Start over even if --out holds a previous run."""
    checkpoint_every: int = 200
    """Write a checkpoint every N steps (and at the end)."""
    max_new_tokens: int | None = None
    """Variable-length tokenizers: generation bound; None = 2 x the longest training sequence."""
    mixed_precision: str = "no"
    """accelerate mixed precision: no, bf16 or fp16."""
    threads: int | None = 1
    """Torch CPU threads while training on CPU (None = torch's default, which oversubscribes busy cores: docs/measurements.md)."""
    progress: bool = True
    """Show a progress bar."""
    push_to_hub: str | None = None
    """After training, upload the policy (without checkpoints) to this Hub repo id."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.tokenizer, self.out = str(self.tokenizer), Path(self.out)
        if self.vocab_strategy not in STRATEGIES:
            raise ValueError(f"vocab_strategy must be one of {STRATEGIES}, got {self.vocab_strategy!r}")
        if self.pad not in PAD_MODES:
            raise ValueError(f"pad must be one of {PAD_MODES}, got {self.pad!r}")
        if self.mixed_precision not in PRECISIONS:
            raise ValueError(f"mixed_precision must be one of {PRECISIONS}, got {self.mixed_precision!r}")
        if isinstance(self.image_keys, str):
            self.image_keys = tuple(k for k in self.image_keys.split(",") if k)
        self.image_keys = tuple(self.image_keys)
        for name in ("max_steps", "batch_size", "eval_chunks", "checkpoint_every", "obs_tokens", "image_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "eval_every", "vocab_skip", "obs_hidden"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        check_threads(self.threads)
        if self.stop_after is not None and self.stop_after < 1:
            raise ValueError(f"stop_after must be >= 1 or None, got {self.stop_after}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if self.bin_smoothing is not None and not (self.bin_smoothing >= 0 and math.isfinite(self.bin_smoothing)):
            raise ValueError(f"bin_smoothing must be a finite number >= 0 (std in bins), got {self.bin_smoothing}")
        if not (self.state_noise >= 0 and math.isfinite(self.state_noise)):
            raise ValueError(f"state_noise must be a finite number >= 0 (standard deviations), got {self.state_noise}")
        if self.model is None and self.vocab_strategy == "tail":
            raise ValueError("vocab_strategy 'tail' needs a pretrained --model; the default model is built with 'add'")
        if self.model is None:
            self.lm_spec()  # validates hidden_size / n_heads

    def lm_spec(self):
        from training.model import LMSpec

        return LMSpec(hidden_size=self.hidden_size, n_layers=self.n_layers, n_heads=self.n_heads)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in ("dataset", "tokenizer", "out"):  # local paths absolute; Hub ids as given
            d[k] = str(Path(d[k]).expanduser().resolve()) if k == "out" or Path(d[k]).expanduser().exists() else d[k]
        if d["heldout_episodes"] is not None:
            d["heldout_episodes"] = [int(e) for e in d["heldout_episodes"]]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}  # as JSON reads it back (--resume)


@dataclass
class TrainResult:
    """Where the policy went and what was measured."""

    out: Path
    steps: int
    train_loss: float
    """Mean loss over the last logged steps."""
    eval_loss: float | None
    eval_accuracy: float | None
    """Held-out teacher-forced accuracy on action tokens (end marker excluded)."""
    recon_mae: float | None
    """Held-out mean absolute error of greedily generated, decoded chunks (raw units)."""
    malformed: int | None
    tokens_per_s: float
    """Training throughput: sequence tokens (prompt + target) per second."""
    seconds: float
    n_params: int
    metrics: dict[str, Any]
    hub_url: str | None = None
    """Commit URL of the upload (``push_to_hub``); None when not pushed."""


# ---------------------------------------------------------------------- set-up helpers
def load_action_tokenizer(cfg: TrainConfig) -> "ActionTokenizer":
    from action_tokenizers.auto import load_tokenizer

    tok = load_tokenizer(cfg.tokenizer)  # a tokenizer directory, a fit --out folder or a Hub id
    if cfg.chunk_size is not None and cfg.chunk_size != tok.chunk_size:
        raise ValueError(f"--chunk-size {cfg.chunk_size} does not match the tokenizer's chunk size {tok.chunk_size} "
                         f"({cfg.tokenizer}); refit the tokenizer or drop --chunk-size")
    return tok


def resolve_family_defaults(cfg: TrainConfig, tok: "ActionTokenizer") -> TrainConfig:
    """``cfg`` with ``bin_smoothing`` and ``readout`` set for this tokenizer (None -> the family's default), checked."""
    from training.generation import check_readout

    cfg = resolve_bin_smoothing(cfg, tok)
    readout = READOUT_DEFAULTS.get(tok.family, "argmax") if cfg.readout is None else cfg.readout
    return dataclasses.replace(cfg, readout=check_readout(readout, tok))


def resolve_bin_smoothing(cfg: TrainConfig, tok: "ActionTokenizer") -> TrainConfig:
    """``cfg`` with ``bin_smoothing`` set for this tokenizer (None -> the family's default), checked:
    it is refused for tokenizers whose ids have no order (FAST's BPE merges, VQ codes), where id k + 1
    is no closer to id k than any other id."""
    if cfg.bin_smoothing is None:
        default = DEFAULT_BIN_SMOOTHING if tok.family in ORDERED_FAMILIES else 0.0
        return dataclasses.replace(cfg, bin_smoothing=default)
    if cfg.bin_smoothing <= 0:
        return cfg
    if tok.family not in ORDERED_FAMILIES:
        raise ValueError(f"--bin-smoothing {cfg.bin_smoothing} needs a tokenizer whose ids are ordered bins "
                         f"({', '.join(ORDERED_FAMILIES)}); the {tok.family} tokenizer's ids have no order: "
                         "use --bin-smoothing 0")
    if tok.vocab_size > MAX_SMOOTHED_BINS:
        raise ValueError(f"--bin-smoothing keeps a ({tok.vocab_size} x {tok.vocab_size}) target table; at most "
                         f"{MAX_SMOOTHED_BINS} bins are supported")
    return cfg


def load_training_chunks(cfg: TrainConfig, tok: "ActionTokenizer") -> "ChunkSet":
    """Chunks of the tokenizer's length with states and tasks; checks the dataset against the tokenizer."""
    from action_tokenizers.data import load_chunks

    from action_tokenizers.hub import resolve_dataset

    root = resolve_dataset(cfg.dataset)  # a local root as is; a Hub id as a snapshot of meta/ and data/
    _check_features(cfg, root)
    chunks = load_chunks(root, chunk_size=tok.chunk_size, stride=cfg.stride, action_key=cfg.action_key,
                         pad=cfg.pad, state_key=cfg.state_key, with_tasks=True, image_keys=cfg.image_keys)
    if cfg.image_keys:  # wrong size or channel count is refused here, before any training
        from training.vision import check_image_shape

        shapes = {k: chunks.images[k].shape[1:] for k in cfg.image_keys}
        for key, shape in shapes.items():
            check_image_shape(shape, key, expected=next(iter(shapes.values())))
    if chunks.action_dim != tok.action_dim:
        raise ValueError(f"the tokenizer {cfg.tokenizer} was fitted on {tok.action_dim}-D actions but "
                         f"{cfg.dataset} feature {cfg.action_key!r} is {chunks.action_dim}-D; fit a tokenizer on this dataset")
    if chunks.tasks is None:
        chunks.tasks = [""] * len(chunks)
    return chunks


def _check_features(cfg: TrainConfig, root: Path) -> None:
    info_path = root / "meta" / "info.json"
    if not info_path.is_file():
        return  # not a local root (a Hub id): load_chunks reports
    features = read_json(info_path, what="dataset info").get("features", {})
    missing = [k for k in (cfg.action_key, cfg.state_key) if k not in features]
    if missing:
        raise ValueError(f"dataset {cfg.dataset} has no feature(s) {missing}; available: {sorted(features)} "
                         "(set --action-key / --state-key)")


def data_split(cfg: TrainConfig, tok: "ActionTokenizer", chunks: "ChunkSet") -> "EpisodeSplit":
    """The held-out episodes: given, else the tokenizer's (so the LM is never evaluated on episodes
    the tokenizer was fitted on), else a fresh split by ``eval_fraction``."""
    from action_tokenizers.split import episode_split

    given = cfg.heldout_episodes
    if given is None and tok.heldout_episodes and cfg.eval_fraction > 0:
        present = set(np.unique(chunks.episode_index).tolist())
        if set(tok.heldout_episodes) <= present:
            given = tuple(tok.heldout_episodes)
    return episode_split(chunks.episode_index, cfg.eval_fraction, cfg.seed, given)


def build_base(cfg: TrainConfig, tasks: list[str], n_actions: int) -> "BaseLM":
    from training.model import build_default, load_pretrained

    if cfg.model is None:
        return build_default(sorted(set(tasks)), n_actions, cfg.lm_spec(), seed=cfg.seed)
    return load_pretrained(cfg.model, n_actions, cfg.vocab_strategy, cfg.vocab_skip, reserved_texts=tasks)


def make_examples(base: "BaseLM", tok: "ActionTokenizer", chunks: "ChunkSet", n_obs_tokens: int) -> "Examples":
    """Tokenize every chunk and its task into one training sequence each."""
    from training.sequences import build_examples, build_prompt

    task_ids = {t: base.tokenizer(t)["input_ids"] for t in sorted(set(chunks.tasks))}
    pad = base.tokenizer.pad_token_id
    prompts = [build_prompt(task_ids[t], n_obs_tokens, base.vocab, pad) for t in chunks.tasks]
    action_ids = tok.encode(chunks.actions)
    return build_examples(prompts, action_ids, chunks.states, base.vocab)


def build_observation_encoder(cfg: TrainConfig, chunks: "ChunkSet", embed_dim: int):
    """The state projection, or (with ``image_keys``) cameras + state through ``training.vision``."""
    from training.observation import StateProjection

    if not cfg.image_keys:
        return StateProjection(chunks.states.shape[1], embed_dim, n_tokens=cfg.obs_tokens, state_key=cfg.state_key,
                               hidden=cfg.obs_hidden)
    from training.vision import ImageStateEncoder

    shape = chunks.images[cfg.image_keys[0]].shape[1:]
    return ImageStateEncoder(cfg.image_keys, shape, embed_dim, state_dim=chunks.states.shape[1],
                             state_key=cfg.state_key, image_tokens=cfg.image_tokens, state_tokens=cfg.obs_tokens,
                             vision_encoder=cfg.vision_encoder)


def with_images(batch: dict[str, Any], chunks: "ChunkSet", rows: np.ndarray) -> dict[str, Any]:
    """Adds the camera frames of ``rows`` (uint8 ``(b, H, W, C)``; the encoder converts them) to ``batch["obs"]``."""
    import torch

    for key, frames in (chunks.images or {}).items():
        batch["obs"][key] = torch.from_numpy(frames[np.asarray(rows)])
    return batch


def lr_lambda(cfg: TrainConfig):
    """Linear warm-up then cosine decay to 10% (a function of the step only, so resume is exact)."""
    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))
    return f


def batch_indices(step: int, train_idx: np.ndarray, batch_size: int, seed: int, rank: int = 0,
                  world: int = 1) -> np.ndarray:
    """Rows for ``step`` on process ``rank``: seeded epoch permutations, a pure function of the step."""
    n, g = len(train_idx), batch_size * world
    pos = np.arange(step * g + rank * batch_size, step * g + (rank + 1) * batch_size)
    out = np.empty(batch_size, dtype=np.int64)
    for epoch in np.unique(pos // n):
        perm = np.random.default_rng([seed, int(epoch)]).permutation(n)
        sel = pos // n == epoch
        out[sel] = train_idx[perm[pos[sel] % n]]
    return out


def prepare_out_dir(cfg: TrainConfig, is_main: bool = True, folder: OutputFolder | None = None) -> Path | None:
    """Check --out against --resume/--overwrite; returns the checkpoint to resume from (or None).

    Only the main process deletes a previous run (``--overwrite``), and only its files (the
    output rule: a user's files in --out are kept).
    """
    from training.checkpoint import checkpoint_dirs, read_checkpoint_config

    out = cfg.out
    ckpts = checkpoint_dirs(out)
    if cfg.resume:
        saved_cfg = out / CONFIG_FILE
        previous = read_json(saved_cfg, what="training config") if saved_cfg.is_file() else None
        if ckpts:
            previous = read_checkpoint_config(ckpts[-1])
        if previous is not None:
            _check_same_run(previous, cfg.to_dict(), out)
        return ckpts[-1] if ckpts else None
    if out.is_dir() and own_files_recursive(out):
        if not cfg.overwrite:
            raise FileExistsError(f"{out} already holds a training run; pass --resume to continue that run or "
                                  "--overwrite to start over")
        if is_main and folder is not None:
            folder.remove_all()
    return None


def _check_same_run(previous: dict[str, Any], current: dict[str, Any], out: Path) -> None:
    # A field the saved config lacks was added later; the run trained without it (ADDED_LATER's value).
    defaults = {f.name: ADDED_LATER.get(f.name, f.default) for f in dataclasses.fields(TrainConfig)}
    previous = {**{k: v for k, v in defaults.items() if k not in previous}, **previous}
    diff = {k: (previous.get(k), v) for k, v in current.items()
            if k not in RESUMABLE_FIELDS and previous.get(k) != v}
    if diff:
        lines = ", ".join(f"{k}: was {a!r}, now {b!r}" for k, (a, b) in sorted(diff.items()))
        raise ValueError(f"--resume: {out} was trained with a different configuration ({lines}); "
                         "use the same settings, or a new --out")


# ---------------------------------------------------------------------- loop helpers
@dataclass(frozen=True)
class BinSmoothing:
    """Soft targets for action tokens, built once per run on the training device.

    Row k of ``targets`` is the target distribution over local ids when the true local id is k: a
    discrete Gaussian of std ``std`` bins around k, cut to the bin range [0, n) and renormalized, so
    no mass ever lands on a marker, a prompt id or an id outside the action block. ``lm_ids[j]``
    is the LM id of local id j (either mapping direction).
    """

    std: float
    targets: "torch.Tensor"
    """(n, n) float32, rows sum to 1."""
    lm_ids: "torch.Tensor"
    """(n,) int64 LM ids in local id order."""


def bin_smoothing_targets(std: float, n: int) -> "torch.Tensor":
    """(n, n) discrete Gaussian rows over bins ``0..n-1``, each normalized to 1 (float32)."""
    import torch

    if not (std > 0 and math.isfinite(std)):
        raise ValueError(f"bin smoothing std must be a positive finite number, got {std}")
    k = torch.arange(n, dtype=torch.float64)
    w = torch.exp(-0.5 * ((k[None, :] - k[:, None]) / std) ** 2)  # the diagonal is 1, so no row is all zero
    return (w / w.sum(dim=1, keepdim=True)).float()


def build_bin_smoothing(std: float, vocab: "ActionVocab", device: "torch.device | str" = "cpu") -> BinSmoothing | None:
    """The run's soft-target table (None for ``std == 0``: plain cross-entropy)."""
    import torch

    if std == 0:
        return None
    targets = bin_smoothing_targets(std, vocab.n_actions).to(device)
    lm_ids = torch.as_tensor(vocab.to_lm(np.arange(vocab.n_actions)), dtype=torch.long, device=device)
    return BinSmoothing(float(std), targets, lm_ids)


def _smoothed_cross_entropy(logits: "torch.Tensor", labels: "torch.Tensor", vocab: "ActionVocab",
                            smoothing: BinSmoothing) -> "torch.Tensor":
    """Mean over labelled positions: soft-target cross-entropy at action ids, hard at the others (eoa)."""
    import torch.nn.functional as F

    keep = labels != -100
    logp = F.log_softmax(logits[keep], dim=-1)  # (m, V)
    lab = labels[keep]
    lo, hi = vocab.action_range
    act = (lab >= lo) & (lab <= hi)
    hard = -logp[~act].gather(1, lab[~act, None]).sum()
    local = (lab[act] - vocab.first_id) * vocab.step
    soft = -(smoothing.targets[local] * logp[act][:, smoothing.lm_ids]).sum()
    return (hard + soft) / max(1, int(lab.numel()))


def token_loss(logits: "torch.Tensor", labels: "torch.Tensor", vocab: "ActionVocab",
               smoothing: BinSmoothing | None = None) -> tuple["torch.Tensor", "torch.Tensor", "torch.Tensor"]:
    """Shifted cross-entropy on labelled positions; (loss, correct action tokens, action tokens).

    With ``smoothing`` the action positions' targets are its soft rows (order-aware loss); the
    accuracy stays argmax against the true id either way.
    """
    import torch.nn.functional as F

    logits, labels = logits[:, :-1].float(), labels[:, 1:]  # position i predicts token i + 1
    if smoothing is None:
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
    else:
        loss = _smoothed_cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), vocab, smoothing)
    lo, hi = vocab.action_range
    is_action = (labels >= lo) & (labels <= hi)
    correct = ((logits.argmax(-1) == labels) & is_action).sum()
    return loss, correct, is_action.sum()


def to_device(batch: dict[str, Any], device: "torch.device") -> dict[str, Any]:
    return {k: to_device(v, device) if isinstance(v, dict) else v.to(device) for k, v in batch.items()}


def add_state_noise(obs: dict[str, "torch.Tensor"], state_key: str, encoder: "ObservationEncoder", noise: float,
                    seed: list[int]) -> None:
    """``obs[state_key] += noise * std * N(0, 1)`` in place, ``std`` the encoder's per-dimension
    standardization (so ``noise`` is in standard deviations whatever the state's units). ``seed``
    (run seed, step, process) fixes the draw, so a resumed run adds the noise it would have added."""
    import torch

    std = state_std(encoder)
    s = obs[state_key]
    gen = torch.Generator().manual_seed(int(np.random.SeedSequence(seed).generate_state(1)[0]))
    eps = torch.randn(s.shape, generator=gen, dtype=torch.float32).to(s.device, s.dtype)
    obs[state_key] = s + noise * std.to(s.device, s.dtype) * eps


def state_std(encoder: "ObservationEncoder") -> "torch.Tensor":
    """The per-dimension std the encoder standardizes ``observation.state`` with (state noise's unit)."""
    inner = getattr(encoder, "state", None)  # the image encoder holds a StateProjection for its state
    std = getattr(encoder if inner is None else inner, "std", None)
    if std is None:
        name = getattr(encoder, "name", type(encoder).__name__)
        raise ValueError(f"--state-noise needs an encoder that standardizes the state; {name!r} has none")
    return std


def train_step(model: "PolicyModel", batch: dict[str, Any], optimizer, scheduler, accelerator, cfg: TrainConfig,
               vocab: "ActionVocab", smoothing: BinSmoothing | None = None) -> float:
    logits = model(batch["input_ids"], batch["attention_mask"], batch["obs_start"], batch["obs"])
    loss, _, _ = token_loss(logits, batch["labels"], vocab, smoothing)
    accelerator.backward(loss)
    if cfg.grad_clip > 0:
        accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def evaluate(model: "PolicyModel", ex: "Examples", held: np.ndarray, chunks: "ChunkSet", tok: "ActionTokenizer",
             vocab: "ActionVocab", cfg: TrainConfig, pad_id: int, plan: "DecodingPlan") -> dict[str, Any]:
    """Held-out loss and action-token accuracy (teacher forced), then greedy generation -> decode -> error.

    The held-out loss is plain cross-entropy even when training used ``bin_smoothing``, so runs
    with different smoothing compare on one scale."""
    import torch

    from training.generation import generate_action_ids, read_chunks
    from training.sequences import Prompt, collate

    device = next(model.parameters()).device
    model.eval()
    loss_sum, n_batches, correct, total = 0.0, 0, 0, 0
    with torch.no_grad():
        for start in range(0, len(held), cfg.batch_size):
            rows = held[start:start + cfg.batch_size]
            batch = to_device(with_images(collate(ex, rows, pad_id, cfg.state_key), chunks, rows), device)
            logits = model(batch["input_ids"], batch["attention_mask"], batch["obs_start"], batch["obs"])
            loss, c, t = token_loss(logits, batch["labels"], vocab)
            loss_sum, n_batches, correct, total = loss_sum + float(loss), n_batches + 1, correct + int(c), total + int(t)
    pick = held[np.linspace(0, len(held) - 1, min(cfg.eval_chunks, len(held))).astype(np.int64)]
    prompts = [Prompt(ex.input_ids[i][: len(ex.input_ids[i]) - _target_len(ex, i)].tolist(), int(ex.obs_start[i])) for i in pick]
    obs = with_images({"obs": {cfg.state_key: torch.from_numpy(ex.states[pick])}}, chunks, pick)["obs"]
    gen = generate_action_ids(model, vocab, plan, prompts, obs, pad_id, with_probs=cfg.readout == "expectation")
    report, generated = read_chunks(tok, gen)
    truth, mask = chunks.actions[pick], chunks.mask[pick]
    floor = tok.decode(tok.encode(truth))
    model.train()
    return {
        "eval_loss": loss_sum / max(1, n_batches),
        "eval_action_accuracy": correct / max(1, total),
        "recon_mae": _masked_mae(generated, truth, mask),
        "tokenizer_mae": _masked_mae(floor, truth, mask),
        "malformed": report.n_malformed,
        "truncated": gen.truncated,
        "generated_tokens_per_chunk": float(np.mean([len(s) for s in gen.ids])),
        "eval_chunks": int(len(pick)),
    }


def _target_len(ex: "Examples", i: int) -> int:
    return int((ex.labels[i] != -100).sum())


def _masked_mae(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    err = np.abs(pred - truth).mean(-1)  # (n, h)
    return float((err * mask).sum() / max(1, mask.sum()))


# ---------------------------------------------------------------------- export
def export_policy(folder: OutputFolder, model: "PolicyModel", base: "BaseLM", tok: "ActionTokenizer",
                  cfg: TrainConfig, meta: dict[str, Any], metrics: dict[str, Any]) -> None:
    """Write the self-contained policy in one commit of the output folder (all of it or none).

    ``lm/`` (safetensors + LM tokenizer), ``action_tokenizer/``, ``action_vocab.json``,
    ``observation_encoder.{json,safetensors}``, ``train_config.json``, ``metrics.json``, ``README.md``;
    ``policy_config.json`` records the sha256 of every data file, checked on load.
    """
    from training.card import policy_card
    from training.model import LM_DIR, save_lm
    from training.observation import save_encoder
    from training.policy import ACTION_TOKENIZER_DIR, POLICY_FILE

    with folder.stage() as tmp:
        (tmp / LM_DIR).mkdir()
        save_lm(model.lm, base.tokenizer, tmp / LM_DIR)
        tok.save_pretrained(tmp / ACTION_TOKENIZER_DIR)
        base.vocab.save(tmp)
        save_encoder(model.obs, tmp)
        write_json(tmp / CONFIG_FILE, cfg.to_dict())
        write_json(tmp / METRICS_FILE, metrics)
        (tmp / CARD_FILE).write_text(policy_card(tok, base.vocab, cfg, meta, metrics))
        write_json(tmp / POLICY_FILE, {**meta, "checksums": checksums(tmp, exclude=(METRICS_FILE,))})


# ---------------------------------------------------------------------- the run
def run_train(cfg: TrainConfig) -> TrainResult:
    """Check inputs, build, train (resumable), evaluate, export. Returns the measured numbers."""
    missing = [f"--{k}" for k in ("dataset", "tokenizer") if not getattr(cfg, k)]
    if missing:
        raise ValueError(f"{' and '.join(missing)} required: a LeRobot v3 dataset and a fitted action tokenizer")
    with cpu_threads(cfg.threads), _output_folder(cfg) as folder:
        result = _run_train(cfg, folder)
    if cfg.push_to_hub and folder is not None and result.steps >= cfg.max_steps:  # main process, finished
        from training.hub import push_policy

        result.hub_url = push_policy(cfg.out, cfg.push_to_hub)
        print(f"pushed the policy to {cfg.push_to_hub}: {result.hub_url}")
    return result


@contextlib.contextmanager
def _output_folder(cfg: TrainConfig):
    """--out opened under the output rule (lock held for the whole run) on the main process; None elsewhere."""
    from accelerate import PartialState

    if not PartialState(cpu=_cpu_world()).is_main_process:
        yield None
        return
    with OutputFolder(cfg.out, "train", overwrite=cfg.overwrite) as folder:
        yield folder


def _cpu_world() -> bool:
    """Several processes (``accelerate launch`` / ``torchrun``) on a machine without CUDA: one
    distributed run on the CPUs (gloo), not several independent single-process runs."""
    import os

    import torch

    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    return world > 1 and not torch.cuda.is_available()


def _run_train(cfg: TrainConfig, folder: OutputFolder | None = None) -> TrainResult:
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    from training.checkpoint import TrainerState, load_checkpoint, save_checkpoint
    from training.generation import DecodingPlan
    from training.model import PolicyModel, count_parameters
    from training.sequences import collate

    # -- inputs, checked before anything is built
    tok = load_action_tokenizer(cfg)
    cfg = resolve_family_defaults(cfg, tok)  # saved configs record the values used
    chunks = load_training_chunks(cfg, tok)
    split = data_split(cfg, tok, chunks)
    cfg = dataclasses.replace(cfg, heldout_episodes=tuple(split.heldout_episodes))  # saved configs record it
    train_rows, held_rows = split.rows(chunks.episode_index)
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision, cpu=_cpu_world())
    resume_from = prepare_out_dir(cfg, accelerator.is_main_process, folder)
    accelerator.wait_for_everyone()

    # -- model, vocabulary, sequences
    set_seed(cfg.seed)
    base = build_base(cfg, chunks.tasks, tok.vocab_size)
    embed_dim = base.lm.get_input_embeddings().embedding_dim
    encoder = build_observation_encoder(cfg, chunks, embed_dim).fit(chunks.states[train_rows])
    model = PolicyModel(base.lm, encoder)
    if cfg.action_softmax:
        model.logit_ids = torch.as_tensor(base.vocab.allowed_ids())
    ex = make_examples(base, tok, chunks, encoder.n_tokens)
    longest_target = max(_target_len(ex, i) for i in range(len(ex))) - 1
    plan = DecodingPlan.from_tokenizer(tok, cfg.max_new_tokens or 2 * longest_target)
    pad_id = base.tokenizer.pad_token_id
    smoothing = build_bin_smoothing(cfg.bin_smoothing, base.vocab, accelerator.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    model, optimizer = accelerator.prepare(model, optimizer)
    raw_model: PolicyModel = accelerator.unwrap_model(model)
    state = TrainerState()
    if resume_from is not None:
        state = load_checkpoint(resume_from, raw_model, optimizer, scheduler)
    elif accelerator.is_main_process:
        folder.write_json(CONFIG_FILE, cfg.to_dict())
    state.num_processes = accelerator.num_processes
    n_params = count_parameters(raw_model)

    if cfg.state_noise:
        state_std(raw_model.obs)  # an encoder without a standardized state fails here, before any step
    # -- the loop
    stop = min(cfg.max_steps, cfg.stop_after or cfg.max_steps)
    bar = tqdm(total=cfg.max_steps, initial=state.step, desc=f"train {tok.family}",
               disable=not (cfg.progress and accelerator.is_main_process))
    model.train()
    while state.step < stop:
        t0, c0 = time.perf_counter(), time.process_time()
        idx = batch_indices(state.step, train_rows, cfg.batch_size, cfg.seed, accelerator.process_index,
                            accelerator.num_processes)
        batch = to_device(with_images(collate(ex, idx, pad_id, cfg.state_key), chunks, idx), accelerator.device)
        if cfg.state_noise:
            add_state_noise(batch["obs"], cfg.state_key, raw_model.obs, cfg.state_noise,
                            seed=[cfg.seed, state.step, accelerator.process_index])
        loss = train_step(model, batch, optimizer, scheduler, accelerator, cfg, base.vocab, smoothing)
        state.step += 1
        state.train_seconds += time.perf_counter() - t0
        state.train_cpu_seconds += time.process_time() - c0
        state.train_tokens += int(batch["attention_mask"].sum()) * accelerator.num_processes
        state.losses.append([state.step, loss])
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}")
        if cfg.eval_every and state.step % cfg.eval_every == 0 and len(held_rows) and accelerator.is_main_process:
            state.evals.append({"step": state.step, **evaluate(raw_model, ex, held_rows, chunks, tok, base.vocab,
                                                              cfg, pad_id, plan)})
        if state.step % cfg.checkpoint_every == 0 or state.step == stop:
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                save_checkpoint(cfg.out, raw_model, optimizer, scheduler, state, cfg.to_dict(), folder=folder)
    bar.close()

    # -- final evaluation and export (only when the schedule is done)
    final = {}
    if len(held_rows) and accelerator.is_main_process:
        final = evaluate(raw_model, ex, held_rows, chunks, tok, base.vocab, cfg, pad_id, plan)
    recent = [l for _, l in state.losses[-20:]]
    metrics = {
        "family": tok.family, "steps": state.step, "max_steps": cfg.max_steps,
        "train_loss": float(np.mean(recent)) if recent else float("nan"),
        "first_loss": state.losses[0][1] if state.losses else None,
        "train_seconds": state.train_seconds, "train_cpu_seconds": state.train_cpu_seconds,
        "tokens_per_s": state.train_tokens / max(state.train_seconds, 1e-9),
        "n_params": n_params, "n_train_chunks": int(len(train_rows)), "n_held_out_chunks": int(len(held_rows)),
        "num_processes": accelerator.num_processes,
        "tokens_per_chunk_mean": float(np.mean([_target_len(ex, i) - 1 for i in range(len(ex))])),
        "final": final, "evals": state.evals,
        "loss_curve": state.losses[:: max(1, len(state.losses) // 200)],
    }
    done = state.step >= cfg.max_steps
    if accelerator.is_main_process and done:
        meta = {"format_version": 1, "chunk_size": tok.chunk_size, "action_dim": tok.action_dim,
                "state_dim": int(chunks.states.shape[1]), "state_key": cfg.state_key, "action_key": cfg.action_key,
                "image_keys": list(cfg.image_keys),
                "decoding": plan.to_dict(), "temperature": 0.0, "readout": cfg.readout, "n_params": n_params,
                "base_model": cfg.model or "default-llama", "heldout_episodes": split.heldout_episodes}
        export_policy(folder, raw_model, base, tok, cfg, meta, metrics)
    elif accelerator.is_main_process:
        folder.write_json(METRICS_FILE, metrics)
    accelerator.wait_for_everyone()
    return TrainResult(out=cfg.out, steps=state.step, train_loss=metrics["train_loss"],
                       eval_loss=final.get("eval_loss"), eval_accuracy=final.get("eval_action_accuracy"),
                       recon_mae=final.get("recon_mae"), malformed=final.get("malformed"),
                       tokens_per_s=metrics["tokens_per_s"], seconds=state.train_seconds, n_params=n_params,
                       metrics=metrics)


def main() -> None:
    """``python -m training.train --dataset ... --tokenizer ... --out ...`` (also under ``accelerate launch``)."""
    import tyro

    result = run_train(tyro.cli(TrainConfig))
    print(f"trained {result.steps} steps -> {result.out}: loss {result.train_loss:.4f}, "
          f"held-out accuracy {result.eval_accuracy}, reconstruction MAE {result.recon_mae}, "
          f"{result.tokens_per_s:.0f} tokens/s")


if __name__ == "__main__":
    main()
