"""The PyTorch VQ-VAE: the reference's keys and quirks, BatchNorm folding, the strict loader, demo weights."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from mmdet_deploy.errors import CheckpointError, StateDictMismatchError, UnsafeCheckpointError  # noqa: E402
from mmdet_deploy.model.vqvae import (  # noqa: E402
    ExportableVQVAE,
    ResBlock,
    VectorQuantizedVAE,
    fold_batchnorm,
    reference_reconstruct,
    to_model_input,
    to_uint8,
)
from mmdet_deploy.model.vqvae_io import init_vqvae_demo_weights, load_vqvae, write_vqvae_demo  # noqa: E402

BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def issue_keys() -> dict[str, tuple[int, ...]]:
    """The state dict of ``VectorQuantizedVAE(3, 256, K=512)`` as issue 16 lists it, key by key."""
    keys: dict[str, tuple[int, ...]] = {}

    def conv(name: str, shape: tuple[int, ...], bias: int) -> None:
        keys[f"{name}.weight"], keys[f"{name}.bias"] = shape, (bias,)

    def bn(name: str) -> None:
        for leaf in BN:
            keys[f"{name}.{leaf}"] = () if leaf == "num_batches_tracked" else (256,)

    def resblock(name: str) -> None:
        conv(f"{name}.block.1", (256, 256, 3, 3), 256)
        bn(f"{name}.block.2")
        conv(f"{name}.block.4", (256, 256, 1, 1), 256)
        bn(f"{name}.block.5")

    conv("encoder.0", (256, 3, 4, 4), 256)
    bn("encoder.1")
    conv("encoder.3", (256, 256, 4, 4), 256)
    resblock("encoder.4")
    resblock("encoder.5")
    keys["codebook.embedding.weight"] = (512, 256)
    resblock("decoder.0")
    resblock("decoder.1")
    conv("decoder.3", (256, 256, 4, 4), 256)  # ConvTranspose: (in, out, k, k)
    bn("decoder.4")
    conv("decoder.6", (256, 3, 4, 4), 3)
    return keys


def test_state_dict_is_the_reference_one() -> None:
    state = VectorQuantizedVAE("base").state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == issue_keys()
    assert isinstance(VectorQuantizedVAE("base").decoder[3], nn.ConvTranspose2d)


@pytest.fixture(scope="module")
def tiny() -> VectorQuantizedVAE:
    model = VectorQuantizedVAE("tiny")
    init_vqvae_demo_weights(model, seed=5)
    return model.eval()


def test_resblock_adds_relu_of_its_input_like_the_in_place_reference(tiny: VectorQuantizedVAE) -> None:
    block: ResBlock = tiny.encoder[4]
    x = torch.randn(1, 16, 9, 7, generator=torch.Generator().manual_seed(0))
    # The reference: nn.Sequential(nn.ReLU(True), ...) and `x + self.block(x)`; the in-place ReLU rewrites x.
    literal = nn.Sequential(nn.ReLU(inplace=True), *list(block.block)[1:])
    with torch.inference_mode():
        x_ref = x.clone()
        expected = x_ref + literal(x_ref)
        got = block(x.clone())
        naive = x + literal(torch.relu(x))
    torch.testing.assert_close(got, expected, atol=0, rtol=0)
    assert not torch.allclose(got, naive)  # x + block(x) read literally differs wherever x < 0


def test_output_size_and_quantisation_ties_go_to_the_lowest_index(tiny: VectorQuantizedVAE) -> None:
    x = torch.randn(2, 3, 37, 50, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        out, codes = tiny.forward_with_codes(x)
    assert out.shape == (2, 3, 36, 48) and codes.shape == (2, 9, 12)
    tied = VectorQuantizedVAE("tiny")
    tied.load_state_dict(tiny.state_dict())
    with torch.no_grad():
        tied.codebook.embedding.weight[:] = tiny.codebook.embedding.weight[7]  # every distance ties
    with torch.inference_mode():
        assert int(tied.quantize(tied.encoder(x)).max()) == 0
        assert int(ExportableVQVAE(tied)(x)[1].max()) == 0


def test_folded_export_form_matches_the_reference(tiny: VectorQuantizedVAE) -> None:
    x = torch.randn(1, 3, 64, 80, generator=torch.Generator().manual_seed(2))
    folded = fold_batchnorm(tiny)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    with torch.inference_mode():
        ref, ref_codes = tiny.forward_with_codes(x)
        got, codes = ExportableVQVAE(tiny)(x)
        torch.testing.assert_close(folded(x), ref, atol=2e-5, rtol=0)
    assert float((codes == ref_codes).float().mean()) > 0.99
    agree = (codes == ref_codes)[:, None].repeat_interleave(4, 2).repeat_interleave(4, 3)
    torch.testing.assert_close(got[agree.expand_as(got)], ref[agree.expand_as(ref)], atol=1e-3, rtol=0)


def test_reference_pre_and_post_processing() -> None:
    frames = np.random.default_rng(0).integers(0, 256, (2, 5, 6, 3), dtype=np.uint8)
    x = to_model_input(frames)
    expected = (torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0 - 0.5) / 0.5
    torch.testing.assert_close(x, expected, atol=0, rtol=0)
    y = torch.tensor([-1.0, 0.999, 1.0, 0.0]).reshape(1, 1, 1, 4).repeat(1, 3, 4, 1)
    u8 = to_uint8(y, 4, 4)
    assert u8[0, 0, :, 0].tolist() == [0, 254, 255, 127]  # 0.9995*255 = 254.87 truncates to 254, 127.5 to 127
    assert to_uint8(torch.zeros(1, 3, 4, 4), 6, 5).shape == (1, 6, 5, 3)  # nearest resize back to the input


def test_reference_reconstruct_shapes(tiny: VectorQuantizedVAE) -> None:
    frames = np.random.default_rng(1).integers(0, 256, (3, 251, 333, 3), dtype=np.uint8)
    out = reference_reconstruct(tiny, frames, batch=2)
    assert out.shape == frames.shape and out.dtype == np.uint8


# -- loading ------------------------------------------------------------------------------------------------


@pytest.fixture()
def state(tiny: VectorQuantizedVAE) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in tiny.state_dict().items()}


def _logits(model: VectorQuantizedVAE) -> torch.Tensor:
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        return model(x)


def test_plain_and_wrapped_state_dicts_load_strictly(tmp_path: Path, tiny, state) -> None:
    torch.save(state, tmp_path / "model.pt")  # the reference's file: a plain state dict
    model, info = load_vqvae(tmp_path / "model.pt", "tiny")
    assert not model.training and not info.demo
    torch.testing.assert_close(_logits(model), _logits(tiny), atol=0, rtol=0)
    torch.save({"model_state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 1}, tmp_path / "w.pt")
    torch.testing.assert_close(_logits(load_vqvae(tmp_path / "w.pt", "tiny")[0]), _logits(tiny), atol=0, rtol=0)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda s: s.pop("decoder.4.running_var"), "1 missing: decoder.4.running_var"),
        (lambda s: s.__setitem__("decoder.9.weight", torch.zeros(1)), "1 unexpected: decoder.9.weight"),
        (lambda s: s.__setitem__("codebook.embedding.weight", torch.zeros(65, 16)), "codebook.embedding.weight"),
    ],
)
def test_bad_checkpoints_are_refused_naming_the_key(tmp_path: Path, state, change, named: str) -> None:
    change(state)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(StateDictMismatchError, match=named.replace(".", r"\.")):
        load_vqvae(tmp_path / "bad.pt", "tiny")


def test_real_width_is_the_default_and_a_tiny_file_says_so(tmp_path: Path, state) -> None:
    torch.save(state, tmp_path / "tiny_plain.pt")
    with pytest.raises(StateDictMismatchError, match=r"encoder\.0\.weight \(checkpoint \(16, 3, 4, 4\) vs model"):
        load_vqvae(tmp_path / "tiny_plain.pt")


def test_unsafe_and_foreign_files_are_refused(tmp_path: Path, tiny_checkpoint) -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "evil.pt", "wb") as handle:
        pickle.dump({"x": Evil()}, handle)
    with pytest.raises(UnsafeCheckpointError):
        load_vqvae(tmp_path / "evil.pt")
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="text.pt"):
        load_vqvae(tmp_path / "text.pt")
    with pytest.raises(CheckpointError, match="demo weights of an MM-Det detector"):
        load_vqvae(tiny_checkpoint)


def test_demo_weights_are_deterministic_and_marked(tmp_path: Path) -> None:
    a = write_vqvae_demo(tmp_path / "a.pt", "tiny", seed=4)
    b = write_vqvae_demo(tmp_path / "b.safetensors", "tiny", seed=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model_a, info_a = load_vqvae(a)  # config taken from the demo marker
        model_b, info_b = load_vqvae(b)
    assert info_a.demo and info_b.demo and any("DEMO VQ-VAE" in str(w.message) for w in caught)
    for key, value in model_a.state_dict().items():
        torch.testing.assert_close(value, model_b.state_dict()[key], atol=0, rtol=0)
    with pytest.raises(StateDictMismatchError, match="demo weights of VQ-VAE config 'tiny'"):
        load_vqvae(a, "base")
    frames = np.random.default_rng(2).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    recon = reference_reconstruct(model_a, frames)
    assert 40 < recon.std() and len(np.unique(recon)) > 100  # demo weights give varied, unsaturated output
