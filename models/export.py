"""Exports the demo models and their reference answers.

Run with the full LibTorch set (`scripts/setup --full`):

    .venv/bin/python models/export.py

It writes, for each demo model, `<name>.pt` (TorchScript) and `<name>.reference.json`: a few
input batches with PyTorch's outputs for them, which the tests compare torchwatch's answers
against. Everything is seeded, so a rerun gives the same files. It also writes `picky.pt`, a
model for the fault tests that fails on some inputs (no reference: its answer is twice its
input).
"""

import json
import pathlib
import zipfile

import torch
from torch import nn

HERE = pathlib.Path(__file__).resolve().parent


class Mlp(nn.Module):
    """A 784-512-512-10 classifier: the shape of an MNIST MLP."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Cnn(nn.Module):
    """Three conv+pool stages and a linear head over 3x64x64 images."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Linear(64 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(x), 1))


class Picky(nn.Module):
    """Doubles a [-1, 4] input and raises on any negative value, as a model with a data-dependent
    failure (an out-of-range index, a failed assertion) does: one bad row fails its whole batch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x < 0).any()):
            raise ValueError("negative input: picky takes values >= 0")
        return x * 2


def reference_inputs(feature_shape: list[int], batches: list[int], seed: int) -> list[torch.Tensor]:
    # Multiples of 1/8 are exact in float32 and short in JSON.
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(-16, 17, [b, *feature_shape], generator=gen).float() / 8 for b in batches]


def save_scripted(name: str, model: nn.Module) -> torch.jit.ScriptModule:
    model.eval()
    scripted = torch.jit.script(model)
    path = HERE / f"{name}.pt"
    scripted.save(str(path))
    strip_debug_info(path)
    return scripted


def strip_debug_info(path: pathlib.Path) -> None:
    """Drops the archive's `*.debug_pkl` records: they map TorchScript back to the Python source
    by absolute path (the exporting machine's directories), and loading does not need them."""
    with zipfile.ZipFile(path) as archive:
        records = [(info, archive.read(info)) for info in archive.infolist()
                   if not info.filename.endswith(".debug_pkl")]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for info, data in records:
            archive.writestr(info, data)


def export(name: str, model: nn.Module, feature_shape: list[int], batches: list[int], seed: int) -> None:
    scripted = save_scripted(name, model)
    cases = []
    with torch.inference_mode():
        for x in reference_inputs(feature_shape, batches, seed):
            y = scripted(x)
            cases.append(
                {
                    "input": {"name": "input__0", "datatype": "FP32", "shape": list(x.shape),
                              "data": x.flatten().tolist()},
                    "output": {"name": "output__0", "datatype": "FP32", "shape": list(y.shape),
                               "data": y.flatten().tolist()},
                }
            )
    reference = {"model": name, "torch_version": torch.__version__.split("+")[0], "cases": cases}
    (HERE / f"{name}.reference.json").write_text(json.dumps(reference) + "\n")


def main() -> None:
    torch.manual_seed(20261125)
    export("mlp", Mlp(), [784], [1, 4], seed=1)
    torch.manual_seed(20261126)
    export("cnn", Cnn(), [3, 64, 64], [1, 2], seed=2)
    save_scripted("picky", Picky())


if __name__ == "__main__":
    main()
