"""The reference model against model-spec.md: shapes, token order, IAFA regrouping, high-pass, SAME, WS."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mmdet_deploy.model import BASE, TINY, build_model  # noqa: E402
from mmdet_deploy.model.layers import HighPass, StdConv2d, same_pad  # noqa: E402
from mmdet_deploy.model.transformer import IAFABlock, group_by_stride, ungroup_by_stride  # noqa: E402

SPEC_KEYS = Path(__file__).resolve().parents[2] / "shared" / "docs" / "mmdet_state_dict_keys.tsv"


def clip(batch: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, TINY.frames, 3, TINY.image_size, TINY.image_size, generator=g)


def fusion_extras(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return torch.randn(batch, TINY.clip_dim, generator=g), torch.randn(batch, TINY.mm_tokens, TINY.mm_dim, generator=g)


@pytest.fixture(scope="module")
def tiny_models() -> dict[str, torch.nn.Module]:
    return {head: build_model("tiny", head, seed=0) for head in ("simplified", "fc", "fusion")}


def run(model: torch.nn.Module, batch: int) -> torch.Tensor:
    x = clip(batch)
    extras = fusion_extras(batch) if model.head_mode == "fusion" else ()
    with torch.inference_mode():
        return model(x, x * 0.5, *extras)


@pytest.mark.parametrize("head", ["simplified", "fc", "fusion"])
@pytest.mark.parametrize("batch", [1, 3])
def test_output_shapes(tiny_models: dict, head: str, batch: int) -> None:
    logits = run(tiny_models[head], batch)
    assert logits.shape == (batch, 2)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


def test_heads_pool_what_the_spec_says(tiny_models: dict) -> None:
    model = tiny_models["simplified"]
    x = clip(2)
    with torch.inference_mode():
        tokens = model.backbone(x, x)
        assert tokens.shape == (2, TINY.tokens, TINY.embed_dim) and TINY.tokens == 10 + 10 * 196
        torch.testing.assert_close(model(x, x), model.head(tokens.mean(1)))
        fc = tiny_models["fc"]
        fc.load_state_dict(model.state_dict())
        torch.testing.assert_close(fc(x, x), fc.head(tokens[:, :10].mean(1)))


def test_base_state_dict_matches_reference_keys() -> None:
    rows = [line.rstrip("\n").split("\t") for line in SPEC_KEYS.read_text().splitlines() if line.strip()]
    spec = {k: tuple(int(d) for d in s.strip("()").replace(" ", "").split(",") if d) for k, s in rows}
    model = build_model("base", "fusion")
    mine = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert len(spec) == 705
    assert mine == spec
    backbone = sum(p.numel() for n, p in model.named_parameters() if n.startswith("backbone."))
    assert round(backbone / 1e6, 1) == 197.9
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == 203.6


def test_group_by_stride_follows_p_mod_10() -> None:
    t, p = 10, 196
    seq = torch.arange(t * p, dtype=torch.float32).reshape(1, t * p, 1)  # value = flat position
    groups = group_by_stride(seq, t, p)
    assert groups.shape == (t, p, 1)
    for w in range(t):
        expected = torch.arange(w, t * p, t, dtype=torch.float32)
        assert torch.equal(groups[w, :, 0], expected), f"group {w} is not p mod 10 == {w}"
    # a group is a strided sample across frames, not one frame: group 0 touches every frame
    frames_in_group0 = {int(v) // p for v in groups[0, :, 0]}
    assert frames_in_group0 == set(range(t))
    assert torch.equal(ungroup_by_stride(groups, t, p), seq)


def test_iafa_frame_token_w_sees_only_group_w() -> None:
    torch.manual_seed(0)
    block = IAFABlock(16, 2, 32, frames=10, patches=196, eps=1e-6).eval()
    with torch.no_grad():  # silence the across-frame sub-block so only the within-group path mixes tokens
        for layer in (block.attn.proj, block.mlp.fc2):
            layer.weight.zero_()
            layer.bias.zero_()
    x = torch.randn(1, 1970, 16)
    y = x.clone()
    positions = torch.arange(3, 1960, 10)  # flat patch positions with p mod 10 == 3
    y[:, 10 + positions] += torch.randn(16)  # not a constant: LayerNorm would remove a constant shift
    with torch.inference_mode():
        a, b = block(x), block(y)
    changed = (a[0, :10] - b[0, :10]).abs().amax(dim=1) > 1e-6
    assert changed.tolist() == [w == 3 for w in range(10)]
    changed_patches = ((a[0, 10:] - b[0, 10:]).abs().amax(dim=1) > 1e-6).nonzero().flatten()
    assert set(changed_patches.tolist()) == set(positions.tolist())


def test_token_order_and_embeddings() -> None:
    model = build_model("tiny", "simplified", seed=1)
    bb = model.backbone
    frame_tokens, patch_add = bb.embeddings()
    for f in range(10):
        torch.testing.assert_close(
            frame_tokens[0, f], bb.fc_token[0, f] + bb.temporal_pos_embed[0, f] + bb.time_embed[0, f]
        )
        for m in (0, 17, 195):
            torch.testing.assert_close(patch_add[0, f * 196 + m], bb.window_pos_embed[0, 1 + m] + bb.time_embed[0, f])
    # frame-major: changing frame 4 of the input changes exactly tokens 10 + 4*196 ... 10 + 5*196 - 1
    bb.blocks = torch.nn.ModuleList()
    x = clip(1)
    y = x.clone()
    y[:, 4] += torch.rand(y[:, 4].shape)
    with torch.inference_mode():
        changed = ((bb(x, x) - bb(y, x)).abs().amax(-1)[0] > 1e-6).nonzero().flatten()
    assert changed.min().item() == 10 + 4 * 196 and changed.max().item() == 10 + 5 * 196 - 1


def test_high_pass_matches_independent_gaussian() -> None:
    scipy_ndimage = pytest.importorskip("scipy.ndimage")
    hp = HighPass(4, TINY.blur_kernels)
    f = torch.randn(1, 4, 20, 20, generator=torch.Generator().manual_seed(3))
    out = hp(f).numpy()
    assert out.shape == (1, 12, 20, 20)
    for i, (k, sigma) in enumerate(((3, 0.8), (5, 1.3), (7, 1.8))):
        x = np.arange(k) - k // 2
        g = np.exp(-(x**2) / (2 * sigma**2))
        g /= g.sum()
        kernel = np.outer(g, g)
        for c in range(4):
            src = f[0, c].double().numpy()
            # scipy "mirror" (d c b | a b c d | c b a) is torch's reflect padding
            blurred = scipy_ndimage.correlate(src, kernel, mode="mirror")
            np.testing.assert_allclose(out[0, i * 4 + c], src - blurred, atol=2e-6)


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "pads"),
    [
        (224, 7, 2, (2, 3)),
        (112, 3, 2, (0, 1)),
        (56, 3, 2, (0, 1)),
        (28, 3, 2, (0, 1)),
        (56, 1, 2, (0, 0)),
        (56, 3, 1, (1, 1)),
        (14, 1, 1, (0, 0)),
    ],
)
def test_same_padding_constants(size: int, kernel: int, stride: int, pads: tuple[int, int]) -> None:
    assert same_pad(size, kernel, stride) == pads


@pytest.mark.parametrize(("size", "kernel", "stride"), [(224, 7, 2), (56, 3, 2), (28, 3, 1), (15, 3, 2)])
def test_std_conv_against_reference(size: int, kernel: int, stride: int) -> None:
    torch.manual_seed(0)
    conv = StdConv2d(3, 5, kernel, stride, input_size=size, eps=1e-8)
    x = torch.randn(2, 3, size, size)
    w = conv.weight.detach().double().numpy()
    # straightforward reference: per output channel, centre and scale over (in, kh, kw)
    w_std = np.stack([(wo - wo.mean()) / np.sqrt(wo.var() + 1e-8) for wo in w])
    # TensorFlow SAME, computed from its definition
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    padded = torch.nn.functional.pad(x.double(), (total // 2, total - total // 2) * 2)
    ref = torch.nn.functional.conv2d(padded, torch.from_numpy(w_std), stride=stride)
    with torch.inference_mode():
        got = conv(x)
        assert got.shape == (2, 5, out, out)
        torch.testing.assert_close(got.double(), ref, atol=1e-5, rtol=1e-5)
        conv.prepare()
        torch.testing.assert_close(conv(x).double(), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("head", ["simplified", "fc", "fusion"])
def test_prepared_equals_unprepared(tiny_models: dict, head: str) -> None:
    model = tiny_models[head]
    assert not model.prepared
    before = run(model, 2)
    keys = set(model.state_dict())
    model.prepare()
    try:
        after = run(model, 2)
        assert set(model.state_dict()) == keys, "prepare() must not change the state-dict keys"
        assert (before - after).abs().max().item() <= 1e-5
    finally:  # restore for the other tests of this module
        for module in model.modules():
            for name in (
                "prepared_weight",
                "folded_weight",
                "folded_bias",
                "prepared_frame_tokens",
                "prepared_patch_add",
            ):
                if hasattr(module, name):
                    setattr(module, name, None)
        model.prepared = False


def test_base_config_is_the_spec() -> None:
    assert (BASE.embed_dim, BASE.depth, BASE.num_heads, BASE.mlp_hidden) == (768, 12, 12, 3072)
    assert (BASE.stage_depths, BASE.stage_channels, BASE.frames, BASE.tokens) == ((3, 4, 9), (256, 512, 1024), 10, 1970)
    assert TINY.frames == 10 and TINY.image_size == 224 and TINY.tokens == BASE.tokens
