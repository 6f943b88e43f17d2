"""Quantizer layers for the VQ tokenizer, one per method, named after the paper.

``residual_vq``  residual vector quantization (SoundStream, Zeghidour et al. 2021; VQ-BeT, MiniVLA)
``fsq``          finite scalar quantization (Mentzer et al. 2023; QueST)

Both import torch, so this package is only imported by :mod:`action_tokenizers.vq`.
"""

from __future__ import annotations

__all__ = ["FSQ", "QuantizerOutput", "ResidualVQ"]

from action_tokenizers.quantizers.fsq import FSQ
from action_tokenizers.quantizers.residual_vq import QuantizerOutput, ResidualVQ
