"""training.vision: the CNN and a tiny transformers backbone through the observation-encoder interface."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from training.observation import build_encoder, load_encoder, save_encoder
from training.vision import ImageStateEncoder, check_image_shape, random_shift

KEY = "observation.images.corner2"


def _batch(b: int = 3, size: int = 16, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {KEY: rng.integers(0, 256, (b, size, size, 3), dtype=np.uint8),
            "observation.state": torch.from_numpy(rng.normal(size=(b, 4)).astype(np.float32))}


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory: pytest.TempPathFactory) -> str:
    from transformers import ViTConfig, ViTModel

    path = tmp_path_factory.mktemp("vit") / "tiny-vit"
    torch.manual_seed(0)
    ViTModel(ViTConfig(image_size=16, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=32)).save_pretrained(path)
    return str(path)


@pytest.mark.parametrize("backbone", ["cnn", "vit"])
def test_encoder_interface_and_round_trip(backbone: str, tiny_vit: str, tmp_path: Path) -> None:
    name = "cnn" if backbone == "cnn" else tiny_vit
    enc = ImageStateEncoder([KEY], (16, 16, 3), embed_dim=8, state_dim=4, image_tokens=2, vision_encoder=name)
    enc.fit(np.random.default_rng(1).normal(size=(20, 4)))
    assert enc.n_tokens == 3 and enc.keys == (KEY, "observation.state")
    batch = _batch()
    enc.eval()
    out = enc(batch)
    assert out.shape == (3, 3, 8) and torch.isfinite(out).all()
    # images matter: another frame changes the image positions only
    other = dict(batch, **{KEY: _batch(seed=5)[KEY]})
    changed = (enc(other) - out).abs().amax(dim=(0, 2))
    assert (changed[:2] > 0).all() and changed[2] == 0
    # float CHW in [0, 1] (LeRobot's batch convention) gives the same as uint8 HWC
    chw = torch.from_numpy(batch[KEY]).permute(0, 3, 1, 2).float() / 255
    torch.testing.assert_close(enc(dict(batch, **{KEY: chw})), out)
    # saved as JSON + safetensors, rebuilt offline (the ViT from its saved config, not from the path)
    save_encoder(enc, tmp_path)
    assert not list(tmp_path.glob("*.bin")) and not list(tmp_path.glob("*.pkl"))
    loaded = load_encoder(tmp_path).eval()
    torch.testing.assert_close(loaded(batch), out)


def test_tiny_resnet_backbone(tmp_path: Path) -> None:
    from transformers import ResNetConfig, ResNetModel

    ResNetModel(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic")).save_pretrained(tmp_path)
    enc = ImageStateEncoder([KEY], (16, 16, 3), embed_dim=8, vision_encoder=str(tmp_path)).eval()
    assert enc.n_tokens == 1 and enc(_batch()).shape == (3, 1, 8)


def test_random_shift_only_while_training() -> None:
    x = torch.rand(4, 3, 16, 16)
    torch.manual_seed(0)
    y = random_shift(x, 2)
    assert y.shape == x.shape and not torch.equal(x, y)
    assert torch.equal(random_shift(x, 0), x)
    enc = ImageStateEncoder([KEY], (16, 16, 3), embed_dim=8, shift=2)
    batch = _batch()
    enc.eval()
    assert torch.equal(enc(batch), enc(batch))  # deterministic at evaluation
    enc.train()
    torch.manual_seed(1)
    a = enc(batch)
    torch.manual_seed(2)
    assert not torch.equal(a, enc(batch))  # augmented while training


def test_bad_images_rejected() -> None:
    enc = ImageStateEncoder([KEY], (16, 16, 3), embed_dim=8, state_dim=4).eval()
    with pytest.raises(ValueError, match=r"uint8 \(b, 16, 16, 3\) frames, got \(3, 32, 32, 3\)"):
        enc(_batch(size=32))
    with pytest.raises(ValueError, match=r"expected \(height, width, 3\) RGB"):
        check_image_shape((16, 16, 1), KEY)
    with pytest.raises(ValueError, match=r"built for \(16, 16, 3\)"):
        check_image_shape((32, 32, 3), KEY, expected=(16, 16, 3))
    with pytest.raises(ValueError, match="sides >= 16"):
        ImageStateEncoder([KEY], (8, 8, 3), embed_dim=8)
    with pytest.raises(KeyError, match=r"lacks \['observation.state'\]"):
        enc({KEY: _batch()[KEY]})
    with pytest.raises(ValueError, match="neither 'cnn' nor a transformers vision model"):
        ImageStateEncoder([KEY], (16, 16, 3), embed_dim=8, vision_encoder="/nonexistent/backbone")
    with pytest.raises(ValueError, match="unknown observation encoder"):
        build_encoder({"name": "nope"})
