"""Regression-BC baseline: an MLP from (state, task) to a whole action chunk, trained with squared error.

Why it is here: the paper and Simchowitz et al. (2025) contrast log-loss BC on action tokens with
plain regression on continuous actions. This baseline sees exactly what the tokenized LM sees
(the same chunks from ``load_chunks``, the same training episodes (:mod:`action_tokenizers.split`),
the state standardized by ``training.observation.standardize``, the task as a one-hot over the
training tasks) and predicts the chunk in the tokenizers'
normalized action space (per-dimension q01/q99 -> [-1, 1]), so only the output head differs.

Usage::

    action-tokenizers train-regression --dataset runs/demos --out runs/regression
    action-tokenizers eval --policy runs/regression --tasks reach-v3 --episodes 10 --out runs/eval-reg

Saved directory: ``regression_config.json`` (architecture, tasks, normalizer modes, training
settings, ``heldout_episodes``, loss history and held-out loss) and ``model.safetensors`` (MLP weights and normalizer arrays). No pickle.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from action_tokenizers.io import atomic_directory, read_json, write_json
from action_tokenizers.normalize import MODES, Normalizer
from action_tokenizers.split import DataSelection
from training.threads import check_threads, cpu_threads

__all__ = ["REGRESSION_MARKER", "RegressionConfig", "RegressionPolicy", "RegressionResult", "run_train_regression"]

REGRESSION_MARKER = "regression_config.json"
"""The file that marks a regression-baseline directory (``eval.policies.load_policy`` looks for it)."""
WEIGHTS_FILE = "model.safetensors"
POLICY_TYPE = "regression"


@dataclass
class RegressionConfig(DataSelection):
    """Train the regression-BC baseline (an MLP predicting a normalized action chunk) on a dataset."""

    chunk_size: int = 10
    """Chunk length h predicted per call (use the tokenizers' chunk size for a fair comparison)."""
    out: Path = Path("runs/regression")
    """Output directory for the trained baseline."""
    state_key: str = "observation.state"
    """Feature holding the state observation."""
    hidden: int = 256
    """Width of each hidden layer."""
    layers: int = 3
    """Number of hidden layers."""
    steps: int = 2000
    """Optimizer steps."""
    batch_size: int = 256
    """Chunks per optimizer step."""
    lr: float = 1e-3
    """AdamW learning rate (cosine-decayed to 10% over the run)."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    normalization: str = "quantile"
    """Action normalizer mode (one of action_tokenizers.normalize.MODES); the loss is on normalized actions."""
    image_keys: tuple[str, ...] = ()
    """Camera features the baseline sees through the LM policies' image encoder (training.vision); empty: none."""
    vision_encoder: str = "cnn"
    """Image backbone, as for the LM policies: cnn or a transformers vision model name/path."""
    threads: int | None = 1
    """Torch CPU threads while training on CPU (None = torch's default), as for the LM policies."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("chunk_size", "hidden", "layers", "steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"--lr must be > 0, got {self.lr}")
        check_threads(self.threads)
        if self.normalization not in MODES:
            raise ValueError(f"--normalization must be one of {MODES}, got {self.normalization!r}")
        self.out = Path(self.out)


@dataclass
class RegressionResult:
    """What ``run_train_regression`` produced."""

    out: Path
    final_loss: float
    heldout_loss: float | None
    chunks: int
    seconds: float


def _mlp(in_dim: int, out_dim: int, hidden: int, layers: int) -> Any:
    from torch import nn

    dims = [in_dim] + [hidden] * layers
    blocks: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        blocks += [nn.Linear(a, b), nn.GELU()]
    return nn.Sequential(*blocks, nn.Linear(dims[-1], out_dim))


def _state_normalizer(states: np.ndarray) -> Normalizer:
    """The state standardization of ``training.observation``, held in a Normalizer so it saves as tensors."""
    from training.observation import state_standardization

    norm = Normalizer("meanstd").fit(states)
    norm.center, norm.scale = state_standardization(states)
    return norm


class RegressionPolicy:
    """The trained MLP behind the policy protocol: (b, s) states + task texts -> (b, h, d) raw actions."""

    name = POLICY_TYPE

    def __init__(
        self,
        model: Any,
        tasks: list[str],
        action_normalizer: Normalizer,
        state_normalizer: Normalizer,
        chunk_size: int,
        action_dim: int,
    ) -> None:
        self.model = model.eval()
        self.tasks = list(tasks)
        self.action_normalizer, self.state_normalizer = action_normalizer, state_normalizer
        self.chunk_size, self.action_dim = int(chunk_size), int(action_dim)
        self.state_dim = int(state_normalizer.dim)
        self.image_keys: tuple[str, ...] = tuple(getattr(model, "image_keys", ()))  # ImageRegressionNet only
        self.image_shape = getattr(model, "image_shape", None)
        self.last_stats: dict[str, Any] = {"malformed": 0, "latency_s": 0.0}

    # ------------------------------------------------------------------ encoding shared with training
    def encode_inputs(self, states: np.ndarray, tasks: list[str]) -> np.ndarray:
        """(b, s) states and b task texts -> (b, s + n_tasks) float32 network inputs."""
        from training.policy import check_states

        states = np.asarray(states, dtype=np.float64)
        if states.ndim != 2 or states.shape[1] != self.state_dim:
            raise ValueError(f"observation.state must have shape (b, {self.state_dim}), got {states.shape}")
        states = check_states(states, "observation.state", self.state_dim).astype(np.float64)  # NaN/empty refused
        if len(tasks) != states.shape[0]:
            raise ValueError(f"got {states.shape[0]} states but {len(tasks)} task strings")
        unknown = sorted(set(tasks) - set(self.tasks))
        if unknown:
            raise ValueError(f"task(s) {unknown} were not in the training data; known tasks: {self.tasks}")
        from training.observation import standardize

        x = standardize(states, self.state_normalizer.center, self.state_normalizer.scale)
        onehot = np.zeros((len(tasks), len(self.tasks)))
        onehot[np.arange(len(tasks)), [self.tasks.index(t) for t in tasks]] = 1.0
        return np.concatenate([x, onehot], axis=1).astype(np.float32)

    def predict_action_chunk(self, batch: dict[str, Any]) -> np.ndarray:
        import torch

        start = time.perf_counter()
        x = self.encode_inputs(batch["observation.state"], list(batch["task"]))
        with torch.no_grad():
            y = self.forward(torch.from_numpy(x), batch).numpy().astype(np.float64)
        chunks = self.action_normalizer.unnormalize(y.reshape(len(x), self.chunk_size, self.action_dim))
        self.last_stats = {"malformed": 0, "latency_s": time.perf_counter() - start}
        return chunks  # (b, h, d)

    def forward(self, x: Any, images: dict[str, Any] | None = None) -> Any:
        """The network on encoded inputs ``x`` (and, with cameras, the frames of the same rows)."""
        if not self.image_keys:
            return self.model(x)
        missing = [k for k in self.image_keys if k not in (images or {})]
        if missing:
            raise KeyError(f"the regression baseline sees cameras {list(self.image_keys)}; the batch lacks {missing}")
        return self.model(x, images)

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, root: Path, extra: dict[str, Any] | None = None) -> None:
        from safetensors.torch import save_file
        import torch

        tensors = {f"model.{k}": v.detach().contiguous() for k, v in self.model.state_dict().items()}
        mlp = getattr(self.model, "mlp", self.model)  # with cameras, the MLP after the image encoder
        for prefix, norm in (("action_", self.action_normalizer), ("state_", self.state_normalizer)):
            tensors.update({prefix + k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in norm.tensors().items()})
        save_file(tensors, str(Path(root) / WEIGHTS_FILE))
        config = {
            "policy_type": POLICY_TYPE,
            "state_dim": self.state_dim,
            "action_dim": self.action_dim,
            "chunk_size": self.chunk_size,
            "hidden": mlp[0].out_features,
            "layers": sum(1 for m in mlp if hasattr(m, "out_features")) - 1,
            **({"image_encoder": self.model.encoder.config()} if self.image_keys else {}),
            "tasks": self.tasks,
            "action_normalizer": self.action_normalizer.config(),
            "state_normalizer": self.state_normalizer.config(),
            **(extra or {}),
        }
        write_json(Path(root) / REGRESSION_MARKER, config)

    @classmethod
    def from_pretrained(cls, root: str | Path) -> "RegressionPolicy":
        from safetensors.torch import load_file

        root = Path(root)
        config = read_json(root / REGRESSION_MARKER, "regression config")
        if config.get("policy_type") != POLICY_TYPE:
            raise ValueError(f"{root / REGRESSION_MARKER} has policy_type {config.get('policy_type')!r}, expected {POLICY_TYPE!r}")
        tensors = load_file(str(root / WEIGHTS_FILE))
        norms = {}
        for prefix in ("action_", "state_"):
            arrays = {k[len(prefix):]: v.numpy() for k, v in tensors.items() if k.startswith(prefix)}
            norms[prefix] = Normalizer.from_saved(config[f"{prefix}normalizer"], arrays)
        s, d, h, tasks = config["state_dim"], config["action_dim"], config["chunk_size"], config["tasks"]
        model = _network(s + len(tasks), h * d, config["hidden"], config["layers"], config.get("image_encoder"))
        model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
        return cls(model, tasks, norms["action_"], norms["state_"], h, d)


# ---------------------------------------------------------------------- training
def _network(in_dim: int, out_dim: int, hidden: int, layers: int, image_encoder: dict[str, Any] | None) -> Any:
    """The MLP, or (with an image encoder config) the image encoder feeding the MLP."""
    if image_encoder is None:
        return _mlp(in_dim, out_dim, hidden, layers)
    from training.observation import build_encoder
    from training.vision import ImageRegressionNet

    encoder = build_encoder(image_encoder)
    return ImageRegressionNet(encoder, _mlp(in_dim + encoder.n_tokens * encoder.embed_dim, out_dim, hidden, layers))


def _load(cfg: RegressionConfig) -> Any:
    from action_tokenizers.data import load_chunks

    cs = load_chunks(
        cfg.dataset, chunk_size=cfg.chunk_size, stride=cfg.stride, action_key=cfg.action_key, pad="last",
        state_key=cfg.state_key, with_tasks=True, image_keys=cfg.image_keys,
    )
    if cs.states is None or cs.tasks is None:
        raise ValueError(f"{cfg.dataset} gave no states or tasks: the baseline needs {cfg.state_key!r} and task strings")
    return cs


def _build_policy(cfg: RegressionConfig, cs: Any, train: np.ndarray) -> RegressionPolicy:
    """Normalizers from the training rows ``train``; one-hot over every task of the dataset."""
    import torch

    torch.manual_seed(cfg.seed)
    tasks = sorted(set(cs.tasks))
    action_norm = Normalizer(cfg.normalization).fit(cs.actions[train][cs.mask[train]])  # real steps only
    encoder = None
    if cfg.image_keys:  # the LM policies' image encoder, images only: the state is standardized here
        from training.vision import ImageStateEncoder, check_image_shape

        shape = cs.images[cfg.image_keys[0]].shape[1:]
        for key in cfg.image_keys:
            check_image_shape(cs.images[key].shape[1:], key, expected=shape)
        encoder = ImageStateEncoder(cfg.image_keys, shape, embed_dim=64, vision_encoder=cfg.vision_encoder).config()
    model = _network(cs.states.shape[1] + len(tasks), cfg.chunk_size * cs.action_dim, cfg.hidden, cfg.layers, encoder)
    return RegressionPolicy(model, tasks, action_norm, _state_normalizer(cs.states[train]), cfg.chunk_size,
                            cs.action_dim)


def _tensors(policy: RegressionPolicy, cs: Any, rows: np.ndarray) -> tuple[Any, Any, Any]:
    """(inputs (n, s + n_tasks), normalized targets (n, h, d), mask (n, h, 1)) of ``rows``."""
    import torch

    x = torch.from_numpy(policy.encode_inputs(cs.states[rows], [cs.tasks[i] for i in rows]))
    y = torch.from_numpy(policy.action_normalizer.normalize(cs.actions[rows]).astype(np.float32))
    mask = torch.from_numpy(cs.mask[rows].astype(np.float32))[:, :, None]
    return x, y, mask


def _frames(cs: Any, rows: np.ndarray) -> dict[str, Any]:
    """Camera frames (uint8 ``(b, H, W, C)``) of chunk rows ``rows``; empty without cameras."""
    import torch

    return {k: torch.from_numpy(v[np.asarray(rows)]) for k, v in (cs.images or {}).items()}


def _heldout_loss(policy: RegressionPolicy, cs: Any, rows: np.ndarray) -> float | None:
    """Masked squared error on the held-out rows (None without any)."""
    import torch

    if not len(rows):
        return None
    x, y, mask = _tensors(policy, cs, rows)
    with torch.no_grad():
        pred = policy.forward(x, _frames(cs, rows)).view(len(rows), policy.chunk_size, policy.action_dim)
    return float(((pred - y) ** 2 * mask).sum() / (mask.sum() * policy.action_dim))


def _fit(cfg: RegressionConfig, policy: RegressionPolicy, cs: Any, train: np.ndarray) -> list[float]:
    """Masked squared error on normalized chunks of rows ``train``; returns the loss every 50 steps (and the last)."""
    import torch
    from tqdm import tqdm

    x, y, mask = _tensors(policy, cs, train)
    model = policy.model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.steps, eta_min=cfg.lr * 0.1)
    gen = torch.Generator().manual_seed(cfg.seed)
    history: list[float] = []
    bar = tqdm(range(cfg.steps), desc="regression", disable=not cfg.progress)
    for step in bar:
        idx = torch.randint(len(x), (min(cfg.batch_size, len(x)),), generator=gen)
        pred = policy.forward(x[idx], _frames(cs, train[idx.numpy()])).view(len(idx), policy.chunk_size,
                                                                             policy.action_dim)
        loss = ((pred - y[idx]) ** 2 * mask[idx]).sum() / (mask[idx].sum() * policy.action_dim)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0 or step == cfg.steps - 1:
            history.append(loss.item())
            bar.set_postfix(loss=f"{history[-1]:.4f}")
    model.eval()
    return history


def run_train_regression(cfg: RegressionConfig) -> RegressionResult:
    """Load chunks, fit the normalizers, train the MLP, write ``cfg.out`` atomically."""
    if not str(cfg.dataset):
        raise ValueError("--dataset is required (a LeRobot v3 dataset with observation.state and tasks)")
    start = time.perf_counter()
    cs = _load(cfg)
    split = cfg.split(cs.episode_index)
    train, held = split.rows(cs.episode_index)
    with cpu_threads(cfg.threads):
        policy = _build_policy(cfg, cs, train)
        history = _fit(cfg, policy, cs, train)
        heldout_loss = _heldout_loss(policy, cs, held)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
    settings["heldout_episodes"] = split.heldout_episodes
    with atomic_directory(cfg.out, kind="train-regression", overwrite=getattr(cfg, "overwrite", False)) as tmp:
        policy.save_pretrained(tmp, {"training": settings, "heldout_episodes": split.heldout_episodes,
                                     "loss_history": history, "heldout_loss": heldout_loss, "chunks": len(train)})
    return RegressionResult(out=cfg.out, final_loss=history[-1], heldout_loss=heldout_loss, chunks=len(train),
                            seconds=time.perf_counter() - start)
