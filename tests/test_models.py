import hashlib
import sys
import textwrap

import pytest
import torch

from steerbench.errors import SteerbenchError
from steerbench.model import loading
from steerbench.model import weights as models
from steerbench.model.device import resolve_dtype
from steerbench.model.loading import load_model
from steerbench.model.weights import BuiltinModel, assemble_gguf
from steerbench.testing import save_tiny_model


def test_loads_a_local_directory_like_from_pretrained(tmp_path):
    save_tiny_model(tmp_path / "tiny", "llama")
    loaded = load_model(str(tmp_path / "tiny"), device="cpu", dtype="float32")
    assert loaded.source == "directory"
    assert loaded.model.dtype == torch.float32
    assert loaded.tokenizer.padding_side == "left"
    bf16 = load_model(str(tmp_path / "tiny"), device="cpu", dtype="bfloat16")
    assert bf16.model.dtype == torch.bfloat16


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no-such-model", "unknown model 'no-such-model'.*qwen2.5-coder-1.5b-instruct"),
        ("missing/file.gguf", "GGUF file .* does not exist"),
    ],
)
def test_bad_model_specs_give_one_line_errors(spec, message):
    with pytest.raises(SteerbenchError, match=message) as err:
        load_model(spec, device="cpu")
    assert "\n" not in str(err.value)


def test_directory_without_config_is_refused(tmp_path):
    with pytest.raises(SteerbenchError, match=r"no config.json"):
        load_model(str(tmp_path), device="cpu")


def test_unreachable_hub_id_says_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SteerbenchError, match=r"could not load 'nobody/nothing'.*built-in"):
        load_model("nobody/nothing", device="cpu")


def _fake_builtin(tmp_path, monkeypatch, payload: bytes, sha: str) -> BuiltinModel:
    """Two importable 'part packages' that split ``payload`` like the real wheels do."""
    for i, chunk in enumerate((payload[:5], payload[5:]), 1):
        package = tmp_path / f"fakepart{i}"
        (package / "data").mkdir(parents=True)
        (package / "data" / "part.bin").write_bytes(chunk)
        (package / "__init__.py").write_text(
            textwrap.dedent("""
            import os
            def get_part_path():
                return os.path.join(os.path.dirname(__file__), "data", "part.bin")
        """)
        )
    monkeypatch.syspath_prepend(str(tmp_path))
    for i in (1, 2):
        sys.modules.pop(f"fakepart{i}", None)
    return BuiltinModel("fake", "", "fakepart", 2, len(payload), sha, "MIT", "fake", "")


def test_assemble_gguf_concatenates_parts_and_checks_sha256(tmp_path, monkeypatch):
    payload = b"GGUF-fake-weights"
    builtin = _fake_builtin(tmp_path, monkeypatch, payload, hashlib.sha256(payload).hexdigest())
    out = assemble_gguf(builtin, tmp_path / "out" / "m.gguf")
    assert out.read_bytes() == payload
    assert models.is_installed(builtin)


def test_assemble_gguf_rejects_corrupt_parts(tmp_path, monkeypatch):
    builtin = _fake_builtin(tmp_path, monkeypatch, b"GGUF-fake-weights", "0" * 64)
    with pytest.raises(SteerbenchError, match=r"do not match the expected sha256.*reinstall"):
        assemble_gguf(builtin, tmp_path / "out" / "m.gguf")
    assert not list((tmp_path / "out").iterdir())  # nothing half-written is left behind


def test_missing_builtin_packages_say_how_to_install(monkeypatch):
    missing = BuiltinModel(
        "ghost", "", "no_such_module_part", 1, 1, "0" * 64, "MIT", "ghost-extra", ""
    )
    monkeypatch.setitem(models.BUILTIN_MODELS, "ghost", missing)
    with pytest.raises(SteerbenchError, match=r"not installed.*pip install 'steerbench\[ghost"):
        load_model("ghost", device="cpu")


def test_dtype_resolution(monkeypatch):
    cpu = torch.device("cpu")
    assert resolve_dtype("float32", cpu) == torch.float32
    assert resolve_dtype("bf16", cpu) == torch.bfloat16
    monkeypatch.setattr("steerbench.model.device.cpu_has_fast_bf16", lambda: False)
    assert resolve_dtype("auto", cpu) == torch.float32
    monkeypatch.setattr("steerbench.model.device.cpu_has_fast_bf16", lambda: True)
    assert resolve_dtype("auto", cpu) == torch.bfloat16
    with pytest.raises(SteerbenchError, match="unknown --dtype 'int3'"):
        resolve_dtype("int3", cpu)


def test_cache_dir_honours_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("STEERBENCH_CACHE", str(tmp_path))
    assert models.cache_dir() == tmp_path


def test_the_weight_store_stays_importable_from_the_loader_and_the_old_path():
    """Plugins written for 0.1 import the store's names from ``steerbench.models``."""
    import importlib

    old = importlib.import_module("steerbench.models")
    assert old is loading
    for name in ("BUILTIN_MODELS", "BuiltinModel", "assemble_gguf", "cache_dir", "is_installed"):
        assert getattr(old, name) is getattr(models, name), name
    assert set(loading.__all__) >= {"load_model", "LoadedModel", "DEFAULT_MODEL", "QUICK_MODEL"}
