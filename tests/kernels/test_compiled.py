"""CompiledKernel: compiled values, the fallback where compiling fails, and outer compiles."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmark.kernels import compiled as cpu_kernels
from benchmark.kernels.compiled import CompiledKernel


def scaled_exp(t: torch.Tensor, scale: float) -> torch.Tensor:
    return torch.exp(t).mul(scale).sum(-1)


def must_not_run(*args: object) -> torch.Tensor:
    raise AssertionError("this path must not run")


@pytest.fixture
def compiling_works(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_kernels, "_compile_failed", False)


@pytest.fixture
def no_compiler(compiling_works: None) -> Iterator[None]:
    """A machine without a C++ compiler (and no cached kernels)."""
    settings = {"cpp.cxx": ("/nonexistent/g++",), "force_disable_caches": True}
    with torch._inductor.config.patch(settings):
        yield


def test_kernel_gives_the_eager_values_without_a_gradient(compiling_works: None) -> None:
    kernel = CompiledKernel(scaled_exp, "test kernel", fallback=must_not_run)
    t = torch.randn(3, 7, 11, requires_grad=True)
    value = kernel(t, 0.5)
    torch.testing.assert_close(value, scaled_exp(t, 0.5).detach())
    assert not value.requires_grad
    torch.testing.assert_close(kernel(t[:2, :5], 2.0), scaled_exp(t[:2, :5], 2.0).detach())


def test_without_a_compiler_the_fallbacks_run_with_one_warning(
    no_compiler: None, caplog: pytest.LogCaptureFixture
) -> None:
    calls = []

    def fallback(t: torch.Tensor, scale: float) -> torch.Tensor:
        calls.append(t.shape)
        return scaled_exp(t, scale)

    def cubed(t: torch.Tensor, scale: float) -> torch.Tensor:
        return t.pow(3).mul(scale).sum(-1)

    kernels = [
        CompiledKernel(scaled_exp, "test kernel", fallback),
        CompiledKernel(cubed, "test kernel", fallback),
    ]
    t = torch.randn(4, 5)
    with caplog.at_level(logging.WARNING, logger=cpu_kernels.__name__):
        values = [kernels[0](t, 2.0), kernels[0](t, 2.0), kernels[1](t, 3.0)]
    warnings = [r for r in caplog.records if r.name == cpu_kernels.__name__]
    assert len(calls) == 3 and len(warnings) == 1
    assert "No working C++ compiler" in caplog.text and "Install a C++ compiler" in caplog.text
    torch.testing.assert_close(values[2], scaled_exp(t, 3.0))


def test_an_error_of_the_caller_is_raised_and_keeps_compiling_on(compiling_works: None) -> None:
    kernel = CompiledKernel(scaled_exp, "test kernel")
    with pytest.raises(RuntimeError, match="size"):
        kernel(torch.randn(4, 5), torch.randn(3))
    assert not cpu_kernels._compile_failed


def test_inside_an_outer_compile_the_kernel_is_traced_into_its_graph(
    compiling_works: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    kernel = CompiledKernel(scaled_exp, "test kernel")
    monkeypatch.setattr(kernel, "compiled", must_not_run)
    outer = torch.compile(lambda t: kernel(t + 1.0, 2.0), fullgraph=True)
    t = torch.randn(4, 5)
    torch.testing.assert_close(outer(t), scaled_exp(t + 1.0, 2.0))
    assert not cpu_kernels._compile_failed


def test_past_the_recompile_limit_a_call_runs_its_fallback_alone(
    compiling_works: None, caplog: pytest.LogCaptureFixture
) -> None:
    def halved(t: torch.Tensor) -> torch.Tensor:
        return t.mul(0.5).sum(-1)

    fallback_dtypes = []

    def fallback(t: torch.Tensor) -> torch.Tensor:
        fallback_dtypes.append(t.dtype)
        return halved(t)

    kernel = CompiledKernel(halved, "test kernel", fallback)
    config = torch._dynamo.config
    limit = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    with config.patch({limit: 1}), caplog.at_level(logging.WARNING):
        kernel(torch.randn(3, 4))
        second_dtype = kernel(torch.randn(3, 4, dtype=torch.float64))
    assert second_dtype.dtype == torch.float64 and fallback_dtypes == [torch.float64]
    assert not cpu_kernels._compile_failed
    assert not [r for r in caplog.records if r.name == cpu_kernels.__name__]


def test_under_a_dispatch_mode_the_kernel_runs_eagerly(
    compiling_works: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    kernel = CompiledKernel(scaled_exp, "test kernel", fallback=must_not_run)
    monkeypatch.setattr(kernel, "compiled", must_not_run)
    t = torch.randn(4, 5)
    with FlopCounterMode(display=False):
        value = kernel(t, 2.0)
    torch.testing.assert_close(value, scaled_exp(t, 2.0))


def test_the_private_torch_apis_have_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The dispatch-mode check works with the keyword, without it (older releases), and as
    'none active' where torch has no such function; dynamo's errors stay RuntimeErrors."""
    with FlopCounterMode(display=False):
        assert cpu_kernels.in_dispatch_mode()
        monkeypatch.setattr(cpu_kernels, "_in_dispatch_mode", lambda: True)
        assert cpu_kernels.in_dispatch_mode()
        monkeypatch.setattr(cpu_kernels, "_in_dispatch_mode", None)
        assert not cpu_kernels.in_dispatch_mode()
    monkeypatch.undo()
    assert not cpu_kernels.in_dispatch_mode()
    assert issubclass(cpu_kernels.TorchDynamoException, RuntimeError)
    assert issubclass(cpu_kernels.BackendCompilerFailed, cpu_kernels.TorchDynamoException)
