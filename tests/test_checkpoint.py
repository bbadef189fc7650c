"""Checkpoint loading: every format the reference writes, strictness, and refusal of unsafe pickles."""

from __future__ import annotations

import os
import pickle
import time
import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from mmdet_deploy.errors import CheckpointError, StateDictMismatchError, UnsafeCheckpointError  # noqa: E402
from mmdet_deploy.model import build_model, load_model, read_checkpoint, write_demo_checkpoint  # noqa: E402
from mmdet_deploy.model.checkpoint import FUSION_PREFIXES  # noqa: E402


@pytest.fixture(scope="module")
def full_state() -> dict[str, torch.Tensor]:
    return build_model("tiny", "fusion", seed=3).state_dict()


@pytest.fixture(scope="module")
def reference_logits(full_state: dict) -> torch.Tensor:
    model = build_model("tiny", "simplified")
    model.load_state_dict({k: v for k, v in full_state.items() if not k.startswith(FUSION_PREFIXES)})
    with torch.inference_mode():
        return model(X, X)


X = torch.randn(1, 10, 3, 224, 224, generator=torch.Generator().manual_seed(0))


def logits_of(path: Path, head: str = "simplified") -> torch.Tensor:
    model = load_model(path, head=head, config="tiny")
    assert not model.training
    with torch.inference_mode():
        return model(X, X)


def test_plain_state_dict(tmp_path: Path, full_state: dict, reference_logits: torch.Tensor) -> None:
    torch.save(full_state, tmp_path / "plain.pth")
    torch.testing.assert_close(logits_of(tmp_path / "plain.pth"), reference_logits, atol=1e-5, rtol=1e-5)


def test_wrapped_training_dump_with_module_prefix(tmp_path: Path, full_state: dict, reference_logits) -> None:
    wrapped = {f"module.{k}": v for k, v in full_state.items()}
    dump = {"model_state_dict": wrapped, "optimizer": {"lr": 0.1}, "scheduler": {}, "epoch": 3, "step": 1200}
    torch.save(dump, tmp_path / "dump.pt")
    torch.testing.assert_close(logits_of(tmp_path / "dump.pt"), reference_logits, atol=1e-5, rtol=1e-5)
    state, info = read_checkpoint(tmp_path / "dump.pt")
    assert info.wrapped and info.kind == "full" and not info.demo
    assert not any("module" in k.split(".") for k in state)


def test_nested_module_prefixes_are_all_stripped(tmp_path: Path, full_state: dict, reference_logits) -> None:
    torch.save({f"module.module.{k}": v for k, v in full_state.items()}, tmp_path / "nested.pth")
    torch.testing.assert_close(logits_of(tmp_path / "nested.pth"), reference_logits, atol=1e-5, rtol=1e-5)


def test_legacy_temporal_token(tmp_path: Path, full_state: dict, reference_logits) -> None:
    legacy = {k.replace("fc_token", "temporal_token"): v for k, v in full_state.items()}
    assert "backbone.temporal_token" in legacy
    torch.save(legacy, tmp_path / "legacy.pth")
    torch.testing.assert_close(logits_of(tmp_path / "legacy.pth"), reference_logits, atol=1e-5, rtol=1e-5)


def test_safetensors(tmp_path: Path, full_state: dict, reference_logits) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in full_state.items()}, str(tmp_path / "w.safetensors"))
    torch.testing.assert_close(logits_of(tmp_path / "w.safetensors"), reference_logits, atol=1e-5, rtol=1e-5)


def test_simplified_checkpoint(tmp_path: Path, full_state: dict, reference_logits) -> None:
    simplified = {k: v for k, v in full_state.items() if k.startswith(("backbone.", "head."))}
    torch.save(simplified, tmp_path / "simple.pth")
    torch.testing.assert_close(logits_of(tmp_path / "simple.pth"), reference_logits, atol=1e-5, rtol=1e-5)
    assert logits_of(tmp_path / "simple.pth", head="fc").shape == (1, 2)
    with pytest.raises(StateDictMismatchError, match="head 'fusion' needs the full checkpoint"):
        load_model(tmp_path / "simple.pth", head="fusion", config="tiny")


def test_full_checkpoint_loads_for_every_head(tmp_path: Path, full_state: dict) -> None:
    torch.save(full_state, tmp_path / "full.pth")
    for head in ("simplified", "fc", "fusion"):
        assert load_model(tmp_path / "full.pth", head=head, config="tiny").head_mode == head


def test_missing_key_is_named(tmp_path: Path, full_state: dict) -> None:
    state = dict(full_state)
    del state["backbone.blocks.1.attn.qkv.weight"]
    torch.save(state, tmp_path / "missing.pth")
    with pytest.raises(StateDictMismatchError, match=r"1 missing: backbone\.blocks\.1\.attn\.qkv\.weight"):
        load_model(tmp_path / "missing.pth", config="tiny")


def test_unexpected_key_is_named(tmp_path: Path, full_state: dict) -> None:
    torch.save({**full_state, "backbone.extra_gate.weight": torch.zeros(3)}, tmp_path / "extra.pth")
    with pytest.raises(StateDictMismatchError, match=r"1 unexpected: backbone\.extra_gate\.weight"):
        load_model(tmp_path / "extra.pth", config="tiny")


def test_wrong_shape_is_named(tmp_path: Path, full_state: dict) -> None:
    torch.save({**full_state, "head.weight": torch.zeros(3, 64)}, tmp_path / "shape.pth")
    with pytest.raises(StateDictMismatchError, match=r"head\.weight \(checkpoint \(3, 64\) vs model \(2, 64\)\)"):
        load_model(tmp_path / "shape.pth", config="tiny")


def test_long_key_lists_are_grouped(tmp_path: Path, full_state: dict) -> None:
    state = {k: v for k, v in full_state.items() if ".attn." not in k}
    torch.save(state, tmp_path / "noattn.pth")
    with pytest.raises(StateDictMismatchError) as err:
        load_model(tmp_path / "noattn.pth", config="tiny")
    assert "backbone.blocks.*.attn.qkv.weight (x2)" in str(err.value)


def test_wrong_config_is_refused_with_a_hint(tmp_path: Path) -> None:
    path = write_demo_checkpoint(tmp_path / "tiny_demo.pth", config="tiny")
    with pytest.raises(StateDictMismatchError, match="config='tiny'"):
        load_model(path, config="base")


class _RunsCode:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):  # executed by an unsafe unpickler
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_would_run_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"backbone.fc_token": _RunsCode(str(marker))}, f)
    with pytest.raises(UnsafeCheckpointError, match="could run code"):
        load_model(path, config="tiny")
    time.sleep(0.05)
    assert not marker.exists(), "the malicious payload ran"


def test_torch_save_of_arbitrary_object_is_refused(tmp_path: Path) -> None:
    torch.save({"model_state_dict": {"x": torch.zeros(1)}, "cfg": _RunsCode(str(tmp_path / "m"))}, tmp_path / "o.pth")
    with pytest.raises(UnsafeCheckpointError):
        read_checkpoint(tmp_path / "o.pth")
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "no such checkpoint"), (b"", "empty"), (b"this is not a checkpoint" * 10, "not a readable PyTorch")],
)
def test_unreadable_files(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "weights.pth"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_model(path, config="tiny")


def test_corrupt_safetensors(tmp_path: Path) -> None:
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_model(tmp_path / "bad.safetensors", config="tiny")


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_demo_weights_are_deterministic_and_flagged(tmp_path: Path, suffix: str) -> None:
    a = write_demo_checkpoint(tmp_path / f"a{suffix}", config="tiny", seed=7)
    b = write_demo_checkpoint(tmp_path / f"b{suffix}", config="tiny", seed=7)
    sa, info = read_checkpoint(a)
    sb, _ = read_checkpoint(b)
    assert info.demo and info.demo_config == "tiny" and info.kind == "full"
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_model(a, config="tiny")
    assert any("DEMO WEIGHTS" in str(w.message) for w in caught)


@pytest.mark.slow
def test_base_demo_checkpoint_loads_strictly_and_runs(tmp_path: Path) -> None:
    """Full-size model: 705 keys, strict load, one forward pass (about 10-20 s on 2 cores)."""
    path = write_demo_checkpoint(tmp_path / "base.pth", config="base")
    state, info = read_checkpoint(path)
    assert info.num_tensors == 705 and info.kind == "full"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_model(path, head="simplified", config="base")
    x = torch.randn(1, 10, 3, 224, 224)
    start = time.perf_counter()
    with torch.inference_mode():
        logits = model(x, x)
    print(f"base forward B=1: {time.perf_counter() - start:.2f} s")
    assert logits.shape == (1, 2) and torch.isfinite(logits).all()
