"""``TokenizedPolicy``: a trained output directory -> action chunks ``(B, H, D)`` in raw units.

Generation follows the decoding plan saved with the policy (:mod:`training.generation`): only
action ids and, for variable-length tokenizers, the end-of-action marker. Decoding is non-strict
and malformed sequences are flagged per row, never silently zeroed.

    from training import TokenizedPolicy
    policy = TokenizedPolicy.from_pretrained("runs/train-binning")
    chunks = policy.predict_action_chunk({"observation.state": states, "task": ["push the puck"] * len(states)})
    policy.last_stats  # {"malformed": 0, "malformed_per_row": [0, ...], "action_ids": [[...], ...], "latency_s": ..., ...}
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from action_tokenizers.io import read_json, verify_checksums
from training.generation import MEAN_SAMPLES, DecodingPlan, check_readout, generate_action_ids, read_chunks, sample_mean
from training.sequences import Prompt, build_prompt
from training.vocab import ActionVocab

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from action_tokenizers.base import ActionTokenizer
    from training.model import PolicyModel

POLICY_FILE = "policy_config.json"
ACTION_TOKENIZER_DIR = "action_tokenizer"
FORMAT_VERSION = 1


class TokenizedPolicy:
    """Loads a ``training.train`` output directory; ``predict_action_chunk`` returns raw-unit chunks."""

    def __init__(self, model: "PolicyModel", lm_tokenizer: "PreTrainedTokenizerBase", action_tokenizer: "ActionTokenizer",
                 vocab: ActionVocab, meta: dict[str, Any], device: torch.device | str = "cpu") -> None:
        self.model = model.eval()
        self.lm_tokenizer, self.action_tokenizer, self.vocab, self.meta = lm_tokenizer, action_tokenizer, vocab, meta
        self.device = torch.device(device)
        self.model.to(self.device)
        self.chunk_size: int = int(action_tokenizer.chunk_size)
        self.action_dim: int = int(action_tokenizer.action_dim)
        self.state_dim: int = int(meta["state_dim"])
        self.state_key: str = meta.get("state_key", "observation.state")
        self.image_keys: tuple[str, ...] = tuple(meta.get("image_keys", ()))
        """Camera features the policy sees (``observation.images.<camera>``); empty for state-only policies."""
        self.image_shape: tuple[int, ...] | None = tuple(model.obs.image_shape) if self.image_keys else None
        self.tokens_per_chunk: int | None = action_tokenizer.tokens_per_chunk
        self.temperature: float = float(meta.get("temperature", 0.0))
        self.readout: str = check_readout(meta.get("readout", "argmax"), action_tokenizer)
        """argmax, expectation or mean (``training.generation.READOUTS``); saved by training, may be changed after loading."""
        self.mean_calls = 0
        """Calls made with the mean readout (each seeds its samples with its number)."""
        self.plan = DecodingPlan.from_dict(meta["decoding"]) if "decoding" in meta else \
            DecodingPlan.from_tokenizer(action_tokenizer, int(meta["max_new_tokens"]))
        self.last_stats: dict[str, Any] = {}
        self._task_ids: dict[str, list[int]] = {}
        self.directory: Path | None = None
        """The folder (or Hub snapshot) it was loaded from; what ``push_to_hub`` uploads."""

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device | None = None,
                        revision: str | None = None) -> "TokenizedPolicy":
        """Load model, LM tokenizer, action tokenizer, vocabulary and observation encoder from a
        ``train --out`` folder or a Hub repo id (``revision``: branch, tag or commit; data files only)."""
        from action_tokenizers.auto import AutoActionTokenizer
        from training.hub import resolve_policy
        from training.model import LM_DIR, PolicyModel, load_lm
        from training.observation import load_encoder

        directory = resolve_policy(directory, revision=revision)  # a local folder as is (recovered)
        if not (directory / POLICY_FILE).is_file():
            hint = " (training has not finished: rerun with --resume)" if (directory / "checkpoints").is_dir() else ""
            raise FileNotFoundError(f"{directory / POLICY_FILE} is missing: not a trained policy directory{hint}")
        meta = read_json(directory / POLICY_FILE, what="policy config")
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise ValueError(f"{directory} was written by a newer version (format {meta['format_version']})")
        verify_checksums(directory, meta.get("checksums") or {}, str(directory / POLICY_FILE))
        lm, lm_tok = load_lm(directory / LM_DIR)
        model = PolicyModel(lm, load_encoder(directory))
        tok = AutoActionTokenizer.from_pretrained(directory / ACTION_TOKENIZER_DIR)
        vocab = ActionVocab.load(directory)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        policy = cls(model, lm_tok, tok, vocab, meta, device)
        policy.directory = directory
        return policy

    def push_to_hub(self, repo_id: str, private: bool = False, token: str | None = None) -> str:
        """Upload the folder this policy was loaded from (without resumable checkpoints); returns the commit URL."""
        from training.hub import push_policy

        if self.directory is None:
            raise ValueError("this policy was not loaded from a folder: push the `train --out` folder it came from "
                             "(TokenizedPolicy.from_pretrained(out).push_to_hub(...) or training.hub.push_policy)")
        return push_policy(self.directory, repo_id, private=private, token=token)

    def prompts(self, tasks: list[str]) -> list[Prompt]:
        """Prompt per task string (tokenized once, then cached)."""
        out = []
        for task in tasks:
            if task not in self._task_ids:
                self._task_ids[task] = self.lm_tokenizer(task)["input_ids"]
            out.append(build_prompt(self._task_ids[task], self.model.obs.n_tokens, self.vocab, self.lm_tokenizer.pad_token_id))
        return out

    def predict_action_chunk(self, batch: dict[str, Any], temperature: float | None = None) -> np.ndarray:
        """``{"observation.state": (B, S), "task": [str] * B}`` -> chunks (B, H, D) float64 in raw units."""
        t0 = time.perf_counter()
        states, tasks = self._check_batch(batch)
        temp = self.temperature if temperature is None else float(temperature)
        if not (math.isfinite(temp) and temp >= 0):
            raise ValueError(f"temperature must be >= 0 and finite (0 = greedy), got {temp}")
        obs = {self.state_key: states, **{k: _as_tensor(batch[k]) for k in self.image_keys}}  # checked by the encoder
        readout = check_readout(self.readout, self.action_tokenizer, temp)
        per_row = 1
        if readout == "mean":
            self.mean_calls += 1  # each call its own seed: a rerun of the same calls is identical
            per_row = MEAN_SAMPLES
            report, actions, gen = sample_mean(self.model, self.action_tokenizer, self.vocab, self.plan,
                                               self.prompts(tasks), obs, self.lm_tokenizer.pad_token_id, self.mean_calls)
        else:
            gen = generate_action_ids(self.model, self.vocab, self.plan, self.prompts(tasks), obs,
                                      self.lm_tokenizer.pad_token_id, temp, with_probs=readout == "expectation")
            report, actions = read_chunks(self.action_tokenizer, gen)
        self.last_stats = {
            "malformed": report.n_malformed,  # sequences (the mean readout: of every sample)
            "malformed_per_row": report.malformed.astype(int).reshape(len(tasks), per_row).sum(1).tolist(),
            "action_ids": gen.ids[::per_row],  # local ids per row, e.g. for token agreement in open-loop evaluation
            "latency_s": time.perf_counter() - t0,
            "batch_size": len(tasks),
            "tokens_per_chunk": float(np.mean([len(s) for s in gen.ids])),
            "truncated": gen.truncated,
            "reasons": [r for r in report.reasons if r][:5],
        }
        return actions

    def _check_batch(self, batch: dict[str, Any]) -> tuple[torch.Tensor, list[str]]:
        """Refuse what would make the policy silently wrong: non-finite states (a NaN state decodes
        to a confident chunk), an empty batch, wrong shapes or types; errors name the key and the row."""
        if not isinstance(batch, dict):
            raise TypeError(f"batch must be a dict with keys {self.state_key!r} and 'task', got {type(batch).__name__}")
        if self.state_key not in batch or "task" not in batch:
            raise KeyError(f"batch needs keys {self.state_key!r} and 'task', got {sorted(batch)}")
        cameras = [k for k in self.image_keys if k not in batch]
        if cameras:
            raise KeyError(f"batch needs the camera keys {list(self.image_keys)} this policy was trained on, "
                           f"got {sorted(batch)}")
        states = check_states(batch[self.state_key], self.state_key, self.state_dim)
        states = torch.as_tensor(states)
        tasks = batch["task"]
        tasks = [tasks] * states.shape[0] if isinstance(tasks, str) else list(tasks)
        if len(tasks) != states.shape[0]:
            raise ValueError(f"got {len(tasks)} task strings for a batch of {states.shape[0]} states")
        return states, tasks

    def __repr__(self) -> str:
        return (f"TokenizedPolicy({type(self.action_tokenizer).__name__}, h={self.chunk_size}, d={self.action_dim}, "
                f"s={self.state_dim}, vocab={self.vocab.strategy}, device={self.device})")


def _as_tensor(frames: Any) -> torch.Tensor:
    return frames if isinstance(frames, torch.Tensor) else torch.as_tensor(np.ascontiguousarray(frames))


def check_states(values: Any, key: str, state_dim: int) -> np.ndarray:
    """A batch of states as float32 ``(B, S)``; refuses an empty batch, a wrong shape or type, and
    NaN/inf (naming the key, the row and the column)."""
    if hasattr(values, "detach"):  # a torch tensor (maybe on a GPU)
        values = values.detach().cpu().numpy()
    try:
        states = np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{key} must be numbers of shape (B, {state_dim}): {e}") from e
    if states.ndim == 1:
        states = states[None]
    if states.ndim != 2 or states.shape[1] != state_dim:
        raise ValueError(f"{key} must have shape (B, {state_dim}), got {tuple(np.shape(values))}")
    if states.shape[0] == 0:
        raise ValueError(f"{key} is an empty batch (0 rows); pass at least one observation")
    bad = ~np.isfinite(states)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{key} row {row} holds {states[row, col]} at index {col} ({int(bad.any(1).sum())} of "
                         f"{len(states)} rows non-finite); a policy must not act on it: check the sensor/observation")
    return states
