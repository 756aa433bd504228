"""The site policy's ``devices``: what study packages may compute on, passed to their runner."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedcare.errors import ConfigError
from fedcare.models._package_process import RunnerLimits, RunnerProcess
from fedcare.site.policy import SitePolicy


def test_devices_default_to_the_cpu_and_bad_names_are_refused() -> None:
    assert SitePolicy.from_dict({}).devices == ("cpu",)
    assert SitePolicy.from_dict({"devices": ["cpu", "cuda:1"]}).devices == ("cpu", "cuda:1")
    with pytest.raises(ConfigError, match=r"devices must list cpu, cuda or cuda:N; got \['tpu'\]"):
        SitePolicy.from_dict({"devices": ["tpu"]})


@pytest.mark.parametrize(
    ("devices", "torch_device", "visible", "memory"),
    [
        (("cpu",), "cpu", "", 4096),
        (("cpu", "cuda"), "cuda", None, None),  # None: the site's own CUDA_VISIBLE_DEVICES
        (("cuda:1", "cuda:0"), "cuda", "0,1", None),
    ],
)
def test_the_runner_gets_the_device_the_policy_allows(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    devices: tuple[str, ...],
    torch_device: str,
    visible: str | None,
    memory: int | None,
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    limits = RunnerLimits(memory_limit_mb=4096).for_devices(devices)
    assert limits.memory_limit_mb == memory  # CUDA maps more address space than any limit
    env = RunnerProcess(tmp_path, {}, limits, "off")._env(tmp_path)
    assert env["FEDCARE_TORCH_DEVICE"] == torch_device
    assert env["CUDA_VISIBLE_DEVICES"] == ("3" if visible is None else visible)
    if torch_device == "cpu":
        assert limits.devices == ()  # no device file is bound into a CPU-only runner
