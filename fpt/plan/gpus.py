"""The GPUs `fpt plan` knows: dense peaks (no sparsity) per precision, memory, and the device
names torch and nvidia-smi give them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GPU:
    name: str
    bf16_tflops: float
    tf32_tflops: float
    fp32_tflops: float
    memory_gb: float
    # What its device name (torch's `get_device_name`, nvidia-smi's, metrics' `device_name`)
    # contains, upper case: all of these substrings
    device_names: tuple[str, ...]

    def peak(self, precision: str) -> float:
        """FLOP/s of dense matmuls in the run's precision (fpt.precision: fp32 runs with TF32
        switched off, on the CUDA cores)."""
        tflops = {"bf16": self.bf16_tflops, "tf32": self.tf32_tflops}.get(
            precision, self.fp32_tflops
        )
        return tflops * 1e12

    def matches(self, device_name: str) -> bool:
        name = device_name.upper()
        return all(part in name for part in self.device_names)


GPUS: dict[str, GPU] = {
    g.name: g
    for g in (
        GPU("H100 SXM", 989, 494, 67, 80, ("H100",)),
        GPU("H100 PCIe", 756, 378, 51, 80, ("H100", "PCIE")),
        GPU("H200", 989, 494, 67, 141, ("H200",)),
        GPU("A100", 312, 156, 19.5, 80, ("A100",)),
        GPU("L40S", 362, 183, 91.6, 48, ("L40S",)),
        GPU("RTX 4090", 165, 82.6, 82.6, 24, ("4090",)),
    )
}


def gpu_for_device_name(name: str | None) -> str | None:
    """The GPUS entry a device name is, if any: the one whose `device_names` it contains, the
    one naming most of them where several do (an "H100 PCIe" contains an H100 SXM's "H100"
    too), the first in GPUS on a tie."""
    if not name:
        return None
    found = [gpu for gpu in GPUS.values() if gpu.matches(name)]
    return max(found, key=lambda gpu: len(gpu.device_names)).name if found else None
