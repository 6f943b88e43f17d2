"""Which FAST pre-tokenizer to default to, judged by what the published layout can reproduce.

    python -m benchmarks.export_check [--dataset ../shared/data/so101_record_test]

For each pre-tokenizer: actions normalized outside the tokenizer (quantile q01/q99 -> [-1, 1], as
LeRobot's normalizer step does), an identity-normalized FAST fitted on the training episodes, then on
held-out chunks: tokens per chunk, and the share of chunks that pi0-FAST's decoding rule
(``bpe_tokenizer.decode`` -> ``ord`` + ``min_token`` -> inverse DCT / ``scale``) decodes exactly like
our ``decode``, once with the BPE as fitted and once as exported. The BPE-level decode is what
``PreTrainedTokenizerFast.decode`` calls (``tests/test_export_published.py`` checks the full
transformers path). Prints a Markdown table (docs/ecosystem.md).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.fft import idct

from action_tokenizers import FASTTokenizer, Normalizer
from action_tokenizers.data import load_chunks
from action_tokenizers.fast_export import exported_bpe
from action_tokenizers.split import episode_split


def published_decode(bpe, tok: FASTTokenizer, ids: list[list[int]]) -> np.ndarray | None:
    """pi0-FAST's rule, strict: None for a sequence whose coefficient count is wrong."""
    out = []
    for seq in ids:
        c = np.array([ord(ch) for ch in bpe.decode(seq)], dtype=np.float64) + tok.min_token
        if c.size != tok.n_coefficients:
            out.append(None)
            continue
        out.append(idct(c.reshape(tok.chunk_size, tok.action_dim) / tok.config.scale, axis=0, norm="ortho"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="../shared/data/so101_record_test")
    parser.add_argument("--chunk-size", type=int, default=10)
    args = parser.parse_args()
    cs = load_chunks(args.dataset, chunk_size=args.chunk_size, stride=1, pad="drop")
    split = episode_split(cs.episode_index, 0.25, 0, None)
    train, test = split.rows(cs.episode_index)
    norm = Normalizer(mode="quantile")
    norm.fit(cs.actions[train])
    x_train, x_test = norm.normalize(cs.actions[train]), norm.normalize(cs.actions[test])
    print(f"{args.dataset}: {len(x_train)} training / {len(x_test)} held-out chunks of {x_train.shape[1:]}\n")
    print("| pre-tokenizer | tokens per chunk | encode us/chunk | decode us/chunk | exact via BPE as fitted | "
          "exact via exported BPE |")
    print("|---|---|---|---|---|---|")
    for pre in ("none", "byte_level"):
        tok = FASTTokenizer(vocab_size=1024, normalization="identity", pretokenizer=pre).fit(x_train)
        t0 = time.perf_counter()
        ids = tok.encode(x_test)
        t1 = time.perf_counter()
        ours = tok.decode(ids)
        t2 = time.perf_counter()
        cells = []
        for bpe in (tok.bpe, exported_bpe(tok)):
            dec = published_decode(bpe, tok, ids)
            exact = sum(d is not None and np.array_equal(d, o) for d, o in zip(dec, ours))
            cells.append(f"{exact}/{len(ids)}")
        n = len(ids)
        print(f"| {pre} | {np.mean([len(s) for s in ids]):.2f} | {(t1 - t0) / n * 1e6:.1f} | "
              f"{(t2 - t1) / n * 1e6:.1f} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
