"""Exports the demo models and their reference answers.

Run with the full LibTorch set (`scripts/setup --full`):

    .venv/bin/python models/export.py

It writes, for each model, `<name>.pt` (TorchScript) and `<name>.reference.json`: a few input
batches with PyTorch's outputs for them, which the tests compare torchwatch's answers against.
Everything is seeded, so a rerun gives the same files.
"""

import json
import pathlib

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


def reference_inputs(feature_shape: list[int], batches: list[int], seed: int) -> list[torch.Tensor]:
    # Multiples of 1/8 are exact in float32 and short in JSON.
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(-16, 17, [b, *feature_shape], generator=gen).float() / 8 for b in batches]


def export(name: str, model: nn.Module, feature_shape: list[int], batches: list[int], seed: int) -> None:
    model.eval()
    scripted = torch.jit.script(model)
    scripted.save(str(HERE / f"{name}.pt"))
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


if __name__ == "__main__":
    main()
