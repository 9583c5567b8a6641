"""Image classification with a Vision Transformer, on the one engine.

Train: read a standard dataset (MNIST, Fashion-MNIST, CIFAR-10) or an image folder, hold out a
validation slice of the training images (`--valid-size`, 0 = none: train on all and keep the last
weights), normalise with the training images' channel statistics, augment batches on the fly
(random crop with padding, horizontal flip, RandAugment-lite), train a `ViT`, and report test
accuracy. Predict classifies image files from the run directory alone.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from attnkit.data.images import ImageSet, channel_stats, load_vision_dataset, read_image, read_image_folder
from attnkit.data.transforms import (
    normalize,
    rand_augment_lite,
    random_crop,
    random_horizontal_flip,
    random_rotation,
    to_float,
)
from attnkit.engine import Batches, TrainConfig, Trainer, load_weights
from attnkit.errors import DataError, UserError
from attnkit.metrics import classification_report
from attnkit.models.vit import ViT, ViTConfig
from attnkit.options import check_model_options
from attnkit.tasks.classify import ClassifyTask
from attnkit.tasks.runs import open_run, start_run, write_metrics, write_new_run

Augment = Literal["none", "crop", "crop_flip", "randaug"]


@dataclass(frozen=True, kw_only=True)
class VisionOptions:
    """Everything `attnkit train vision` takes besides the engine's TrainConfig."""

    out: str = field(default="runs/vision", metadata={"help": "run directory to write"})
    dataset: str = field(default="mnist", metadata={"help": "mnist, fashion_mnist, cifar10 or folder"})
    data_dir: str | None = field(
        default=None,
        metadata={
            "help": "the dataset's folder (default $ATTNKIT_DATA/<name>); for folder: root with train/ and test/"
        },
    )
    valid_size: int = field(default=5000, metadata={"help": "training images held out for validation (0 = none)"})
    image_size: int | None = field(default=None, metadata={"help": "resize images to this side (default: native)"})
    patch_size: int = field(default=4, metadata={"help": "patch side P"})
    d_model: int = field(default=128, metadata={"help": "model width"})
    n_heads: int = field(default=4, metadata={"help": "attention heads"})
    n_layers: int = field(default=6, metadata={"help": "encoder layers"})
    d_ff: int = field(default=256, metadata={"help": "feed-forward width"})
    dropout: float = field(default=0.1, metadata={"help": "dropout"})
    pooling: Literal["cls", "mean"] = field(default="cls", metadata={"help": "cls token (the paper) or mean"})
    stem: Literal["patch", "conv"] = field(
        default="patch",
        metadata={
            "help": "patch (the paper's linear patch projection) or conv (stride-2 3x3 convolutions with "
            "BatchNorm and ReLU down to the patch grid, Xiao et al. 2021; patch size a power of 2)"
        },
    )
    stem_depth: int = field(
        default=0,
        metadata={
            "help": "with --stem conv: how many scales, from full resolution down, also get a stride-1 3x3 "
            "convolution (0 = none)"
        },
    )
    augment: Augment = field(
        default="crop", metadata={"help": "none, crop (pad + random crop), crop_flip, or randaug (crop_flip + RA)"}
    )
    crop_padding: int = field(default=2, metadata={"help": "zero padding before the random crop"})
    magnitude: float = field(default=0.3, metadata={"help": "RandAugment-lite magnitude in [0, 1]"})
    rotate: float = field(
        default=0.0, metadata={"help": "rotate training images by up to this many degrees either way (0 = never)"}
    )
    label_smoothing: float = field(default=0.0, metadata={"help": "label smoothing"})

    def __post_init__(self) -> None:
        if self.dataset not in ("mnist", "fashion_mnist", "cifar10", "folder"):
            raise UserError(f"--dataset must be mnist, fashion_mnist, cifar10 or folder, got {self.dataset!r}")
        if self.dataset == "folder" and not self.data_dir:
            raise UserError("--dataset folder needs --data-dir ROOT (with ROOT/train/<class>/ and ROOT/test/<class>/)")
        if not 0 <= self.rotate <= 180:
            raise UserError(f"--rotate must be in [0, 180] degrees, got {self.rotate}")
        if self.valid_size < 0:
            raise UserError(f"--valid-size must be >= 0, got {self.valid_size}")
        size = self.image_size or self.patch_size
        check_model_options(lambda: self.model_config(image_size=size, in_channels=1, n_classes=2))

    def model_config(self, image_size: int, in_channels: int, n_classes: int) -> ViTConfig:
        return ViTConfig(
            image_size=image_size,
            patch_size=self.patch_size,
            in_channels=in_channels,
            n_classes=n_classes,
            d_model=self.d_model,
            n_heads=self.n_heads,
            n_layers=self.n_layers,
            d_ff=self.d_ff,
            dropout=self.dropout,
            pooling=self.pooling,
            stem=self.stem,
            stem_depth=self.stem_depth,
        )


TRAIN_DEFAULTS = {
    "metric": "accuracy",
    "metric_mode": "max",
    "lr": 1e-3,
    "weight_decay": 0.05,
    "schedule": "cosine",
    "warmup_steps": 200,
    "batch_size": 128,
    "epochs": 10,
}


class VisionTask(ClassifyTask):
    """Cross-entropy of class logits from images; accuracy and macro-F1 (as `ClassifyTask`)."""

    input_key = "images"

    def count(self, batch: dict[str, Tensor]) -> int:
        """What the engine's throughput counts: images."""
        return batch["label"].numel()


@dataclass
class Pipeline:
    """uint8 images -> model inputs: resize, scale to [0, 1], augment (training only), normalise."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    size: int
    augment: str = "none"
    padding: int = 2
    magnitude: float = 0.3
    rotate: float = 0.0

    def __call__(self, images: Tensor, *, train: bool) -> Tensor:
        x = to_float(images)  # (B, C, H, W) in [0, 1]
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        if train and self.augment != "none":
            x = random_crop(x, self.size, self.padding)
            if self.augment in ("crop_flip", "randaug"):
                x = random_horizontal_flip(x)
            if self.augment == "randaug":
                x = rand_augment_lite(x, magnitude=self.magnitude)
        if train and self.rotate:
            x = random_rotation(x, self.rotate)
        return normalize(x, self.mean, self.std)


def batches(data: ImageSet, pipeline: Pipeline, batch_size: int, *, train: bool, seed: int) -> Batches:
    count = len(data)

    def plan(epoch: int) -> list[list[int]]:
        order = np.random.default_rng([seed, epoch]).permutation(count) if train else np.arange(count)
        return [order[i : i + batch_size].tolist() for i in range(0, count, batch_size)]

    def collate(indices: list[int]) -> dict[str, Tensor]:
        index = torch.tensor(indices)
        return {"images": pipeline(data.images[index], train=train), "label": data.labels[index]}

    return Batches(plan, collate)


def read_splits(options: VisionOptions) -> tuple[ImageSet, ImageSet]:
    if options.dataset == "folder":
        root = Path(options.data_dir)
        size = (options.image_size, options.image_size) if options.image_size else None
        train = read_image_folder(root / "train", size=size)
        test = read_image_folder(root / "test", size=size, classes=train.classes, channels=train.images.shape[1])
        return train, test
    return (
        load_vision_dataset(options.dataset, options.data_dir, "train"),
        load_vision_dataset(options.dataset, options.data_dir, "test"),
    )


def hold_out(data: ImageSet, size: int, seed: int) -> tuple[ImageSet, ImageSet | None]:
    if not size:
        return data, None
    if size >= len(data):
        raise DataError(f"--valid-size {size} leaves no training images (there are {len(data)})")
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(data)))
    valid, train = order[:size].sort().values, order[size:].sort().values

    def take(index: Tensor) -> ImageSet:
        return ImageSet(data.images[index], data.labels[index], data.classes, data.source)

    return take(train), take(valid)


# ---------------------------------------------------------------------------------------- commands


def train(
    options: VisionOptions | None,
    train_config: TrainConfig,
    *,
    resume: bool = False,
    run_dir: str | Path | None = None,
    log: Any = print,
) -> dict[str, float]:
    """`attnkit train vision`: train a ViT; report test accuracy."""
    where, run_dir, options, train_config, _, log = start_run(
        options, VisionOptions, train_config, resume=resume, run_dir=run_dir, log=log
    )
    train_all, test = read_splits(options)
    train_data, valid = hold_out(train_all, options.valid_size, train_config.seed)
    mean, std = channel_stats(train_data.images)
    size = options.image_size or train_data.images.shape[-1]
    model_config = options.model_config(size, train_data.images.shape[1], len(train_data.classes))
    pipeline = Pipeline(mean, std, size, options.augment, options.crop_padding, options.magnitude, options.rotate)
    if not resume:
        config = {
            "task": "vision",
            "options": dataclasses.asdict(options),
            "model": model_config.to_dict(),
            "classes": train_data.classes,
            "normalize": {"mean": list(mean), "std": list(std)},
            "train": train_config.to_dict(),
        }
        write_new_run(run_dir, where, config)
    log(
        f"data: {len(train_data):,} train / {len(valid) if valid else 0:,} validation / {len(test):,} test images "
        f"{tuple(train_data.images.shape[1:])}, {len(train_data.classes)} classes"
    )
    torch.manual_seed(train_config.seed)
    model = ViT(model_config)
    log(f"model: ViT, {sum(p.numel() for p in model.parameters()):,} parameters, {model_config.grid**2} patches")
    bs = train_config.batch_size
    trainer = Trainer(
        model,
        VisionTask(options.label_smoothing),
        train_config,
        run_dir,
        batches(train_data, pipeline, bs, train=True, seed=train_config.seed),
        batches(valid, pipeline, bs, train=False, seed=0) if valid else None,
        where,
        log=log,
    )
    trainer.fit(resume=resume)
    load_weights(model, run_dir / "model.safetensors")
    metrics = trainer.evaluate(batches(test, pipeline, 256, train=False, seed=0))
    if not where.is_main:
        return {}
    result = {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]}
    write_metrics(run_dir, result)
    log(f"test: accuracy {result['accuracy']:.4f}  macro-F1 {result['macro_f1']:.4f}  ({len(test):,} images)")
    return result


class LoadedVision:
    """A trained ViT run, for predict."""

    def __init__(self, run_dir: str | Path, device: str = "cpu") -> None:
        self.run_dir, config = open_run(run_dir)
        if config["task"] != "vision":
            raise UserError(f"{self.run_dir}: is a {config['task']} run, not a vision run")
        self.classes: list[str] = config["classes"]
        self.config = ViTConfig.from_dict(config["model"])
        self.pipeline = Pipeline(
            tuple(config["normalize"]["mean"]), tuple(config["normalize"]["std"]), self.config.image_size
        )
        self.model = ViT(self.config)
        load_weights(self.model, self.run_dir / "model.safetensors")
        self.device = torch.device(device)
        self.model.to(self.device).eval()

    def evaluate(self, log: Any = print) -> dict[str, float]:
        """Accuracy and macro-F1 on the test split of the run's dataset."""
        options = VisionOptions(**open_run(self.run_dir)[1]["options"])
        _, test = read_splits(options)
        rows: dict[str, list[Tensor]] = {"pred": [], "label": []}
        with torch.no_grad():
            for start in range(0, len(test), 256):
                images = self.pipeline(test.images[start : start + 256], train=False).to(self.device)
                rows["pred"].append(self.model(images).argmax(dim=-1).cpu())
                rows["label"].append(test.labels[start : start + 256])
        report = classification_report(torch.cat(rows["pred"]), torch.cat(rows["label"]), len(self.classes))
        result = {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"]}
        write_metrics(self.run_dir, result)
        log(f"test: accuracy {result['accuracy']:.4f}  macro-F1 {result['macro_f1']:.4f}  ({len(test):,} images)")
        return result

    def predict(self, paths: list[str], top_k: int = 1) -> list[list[tuple[str, float]]]:
        """For each image file, the top-k (class, probability)."""
        size = (self.config.image_size, self.config.image_size)
        images = torch.stack([read_image(p, channels=self.config.in_channels, size=size) for p in paths])
        with torch.no_grad():
            probs = self.model(self.pipeline(images, train=False).to(self.device)).float().softmax(dim=-1).cpu()
        k = max(1, min(top_k, len(self.classes)))
        values, indices = probs.topk(k, dim=-1)
        return [
            [(self.classes[int(i)], float(v)) for v, i in zip(vs, ix, strict=True)]
            for vs, ix in zip(values, indices, strict=True)
        ]
