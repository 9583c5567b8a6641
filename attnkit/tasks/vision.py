"""Image classification with a Vision Transformer, on the one engine.

Train: read a standard dataset (MNIST, Fashion-MNIST, CIFAR-10) or an image folder, hold out a
validation slice of the training images (`--valid-size`, 0 = none: train on all and keep the last
weights), normalise with the training images' channel statistics, augment batches on the fly
(random crop with padding, horizontal flip, RandAugment-lite), train a `ViT`, and report test
accuracy. Predict classifies image files from the run directory alone.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

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
from attnkit.engine import Batches, Trainer, load_weights
from attnkit.engine.evaluation import collect
from attnkit.errors import DataError, UserError
from attnkit.models.vit import ViT, ViTConfig
from attnkit.options import bounds, check_model_options, config_from, model_option
from attnkit.tasks.base import Command, Run, TaskSpec, metrics_command
from attnkit.tasks.classify.objective import ClassifyTask
from attnkit.tasks.io import add_top_k_argument, checked_top_k, top_labels
from attnkit.tasks.rundir import RunStart, read_init_run, run_config, write_metrics, write_new_run
from attnkit.viz.command import explain_command

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
    valid_size: int = field(
        default=5000, metadata={**bounds(ge=0), "help": "training images held out for validation (0 = none)"}
    )
    image_size: int | None = field(
        default=None, metadata={**bounds(ge=4), "help": "resize images to this side (default: native)"}
    )
    patch_size: int = model_option(ViTConfig, "patch_size", "patch side P")
    d_model: int = model_option(ViTConfig, "d_model", "model width")
    n_heads: int = model_option(ViTConfig, "n_heads", "attention heads")
    n_layers: int = model_option(ViTConfig, "n_layers", "encoder layers")
    d_ff: int = model_option(ViTConfig, "d_ff", "feed-forward width")
    dropout: float = model_option(ViTConfig, "dropout", "dropout")
    pooling: Literal["cls", "mean"] = model_option(ViTConfig, "pooling", "cls token (the paper) or mean")
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
    crop_padding: int = field(default=2, metadata={**bounds(ge=0), "help": "zero padding before the random crop"})
    magnitude: float = field(
        default=0.3, metadata={**bounds(ge=0, le=1), "help": "RandAugment-lite magnitude in [0, 1]"}
    )
    rotate: float = field(
        default=0.0,
        metadata={**bounds(ge=0), "help": "rotate training images by up to this many degrees either way (0 = never)"},
    )
    label_smoothing: float = field(default=0.0, metadata={"help": "label smoothing"})
    init: str | None = field(
        default=None,
        metadata={
            "help": "fine-tune this vision run (e.g. an imported ViT) on the new classes: its model, image size "
            "and normalisation, a new output layer (the model options are taken from it)"
        },
    )

    def __post_init__(self) -> None:
        if self.dataset not in ("mnist", "fashion_mnist", "cifar10", "folder"):
            raise UserError(f"--dataset must be mnist, fashion_mnist, cifar10 or folder, got {self.dataset!r}")
        if self.dataset == "folder" and not self.data_dir:
            raise UserError("--dataset folder needs --data-dir ROOT (with ROOT/train/<class>/ and ROOT/test/<class>/)")
        if not 0 <= self.rotate <= 180:
            raise UserError(f"--rotate must be in [0, 180] degrees, got {self.rotate}")
        if self.valid_size < 0:
            raise UserError(f"--valid-size must be >= 0, got {self.valid_size}")
        size = self.image_size or max(self.patch_size, 1)  # so that a bad --patch-size is named as such
        check_model_options(lambda: self.model_config(image_size=size, in_channels=1, n_classes=2))

    def model_config(self, image_size: int, in_channels: int, n_classes: int) -> ViTConfig:
        """The ViT these options describe, for the data's image size, channels and classes."""
        return config_from(self, ViTConfig, image_size=image_size, in_channels=in_channels, n_classes=n_classes)


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


def hold_out(data: ImageSet, size: int, seed: int, log: Any = print) -> tuple[ImageSet, ImageSet | None]:
    """`size` training images held out for validation, at most a tenth of them (a small image folder
    keeps nine tenths to train on; MNIST's 60,000 give the presets' 5,000 unchanged)."""
    if not size:
        return data, None
    capped = min(size, len(data) // 10)
    if capped < 1:
        raise DataError(f"{len(data)} training images are too few to hold out validation images; use --valid-size 0")
    if capped < size:
        log(
            f"note: held out {capped} images for validation, a tenth of the {len(data)}, instead of --valid-size {size}"
        )
    size = capped
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(data)))
    valid, train = order[:size].sort().values, order[size:].sort().values

    def take(index: Tensor) -> ImageSet:
        return ImageSet(data.images[index], data.labels[index], data.classes, data.source)

    return take(train), take(valid)


# ---------------------------------------------------------------------------------------- commands


@dataclass(frozen=True)
class InitialRun:
    """The vision run that `--init` fine-tunes: its directory, model configuration and normalisation,
    and the new run's options with the model's fields and image size taken from it."""

    run_dir: Path
    model_config: ViTConfig
    mean: tuple[float, ...]
    std: tuple[float, ...]
    options: VisionOptions

    @classmethod
    def read(cls, options: VisionOptions) -> InitialRun:
        wanted = "a vision run (e.g. an imported ViT)"
        init_dir, config, theirs = read_init_run(options.init, "vision", wanted, VisionOptions)
        model_config = ViTConfig.from_dict(config["model"])
        side = model_config.image_size
        if options.image_size not in (None, side):
            raise UserError(f"--image-size {options.image_size}: the initial model takes {side}x{side} images")
        kept = {f: getattr(theirs, f) for f in _MODEL_FIELDS}
        normalization = config.get("normalize") or {}
        return cls(
            init_dir,
            model_config,
            tuple(normalization.get("mean", ())),
            tuple(normalization.get("std", ())),
            dataclasses.replace(options, image_size=side, **kept),
        )


_MODEL_FIELDS = ("patch_size", "d_model", "n_heads", "n_layers", "d_ff", "dropout", "pooling", "stem", "stem_depth")


def with_channels(data: ImageSet | None, channels: int) -> ImageSet | None:
    """`data` with `channels` channels: grey images repeated for a colour model; others must match."""
    if data is None or data.images.shape[1] == channels:
        return data
    if data.images.shape[1] != 1:
        raise DataError(f"the images have {data.images.shape[1]} channels, the initial model takes {channels}")
    images = data.images.expand(-1, channels, -1, -1).contiguous()
    return ImageSet(images, data.labels, data.classes, data.source)


def train_run(start: RunStart) -> dict[str, float]:
    """`attnkit train vision`: train a ViT; report test accuracy."""
    where, run_dir, options, train_config, saved, log, resume = start
    init = None if resume or not options.init else InitialRun.read(options)
    if init is not None:
        options = init.options
    train_all, test = read_splits(options)
    train_data, valid = hold_out(train_all, options.valid_size, train_config.seed, log)
    if init is not None or saved is not None:  # the model's channels (grey images for a colour --init model)
        channels = init.model_config.in_channels if init is not None else saved["model"]["in_channels"]
        train_data, valid, test = (with_channels(d, channels) for d in (train_data, valid, test))
    if init is not None:
        mean, std = init.mean, init.std  # the pretrained model's own normalisation
    elif saved is not None:
        mean, std = tuple(saved["normalize"]["mean"]), tuple(saved["normalize"]["std"])
    else:
        mean, std = channel_stats(train_data.images)
    size = options.image_size or train_data.images.shape[-1]
    if size % options.patch_size:  # only now is the image side known when --image-size is not given
        divisors = ", ".join(str(d) for d in range(2, size) if size % d == 0) or "none but 1"
        raise UserError(
            f"--patch-size {options.patch_size} does not divide the {size}-pixel images; use one of its divisors"
            f" ({divisors}), or resize the images with --image-size"
        )
    if saved is not None:
        model_config = ViTConfig.from_dict(saved["model"])
    elif init is not None:  # a new output layer for the new classes
        model_config = dataclasses.replace(init.model_config, n_classes=len(train_data.classes))
    else:
        model_config = options.model_config(size, train_data.images.shape[1], len(train_data.classes))
    pipeline = Pipeline(mean, std, size, options.augment, options.crop_padding, options.magnitude, options.rotate)
    if not resume:
        normalization = {"mean": list(mean), "std": list(std)}
        config = run_config(
            "vision", options, model_config, train_config, classes=train_data.classes, normalize=normalization
        )
        write_new_run(run_dir, where, config)
    log(
        f"data: {len(train_data):,} train / {len(valid) if valid else 0:,} validation / {len(test):,} test images "
        f"{tuple(train_data.images.shape[1:])}, {len(train_data.classes)} classes"
    )
    torch.manual_seed(train_config.seed)
    model = ViT(model_config)
    start_from = ""
    if init is not None:
        load_weights(model, init.run_dir / "model.safetensors", skip=("head.",))
        start_from = f", from {init.run_dir} with a new output layer"
    parameters = sum(p.numel() for p in model.parameters())
    log(f"model: ViT, {parameters:,} parameters, {model_config.grid**2} patches{start_from}")
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
    return report(run_dir, metrics, len(test), log) if where.is_main else {}


def report(run_dir: Path, metrics: dict[str, float], images: int, log: Any) -> dict[str, float]:
    """Test accuracy and macro-F1, printed and written to metrics.json."""
    result = {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]}
    write_metrics(run_dir, result)
    log(f"test: accuracy {result['accuracy']:.4f}  macro-F1 {result['macro_f1']:.4f}  ({images:,} images)")
    return result


class VisionRun(Run, task="vision", options=VisionOptions, model=ViT, config=ViTConfig):
    """A trained `ViT` with its classes and input normalisation."""

    extra_keys = ("classes", "normalize")

    options: VisionOptions

    def setup(self) -> None:
        self.classes: list[str] = self.config["classes"]
        normalization = self.config.get("normalize")
        if not (isinstance(normalization, dict) and {"mean", "std"} <= set(normalization)):
            raise UserError(f"{self.run_dir / 'config.json'}: missing or malformed 'normalize' (mean and std)")
        self.pipeline = Pipeline(
            tuple(normalization["mean"]), tuple(normalization["std"]), self.model.config.image_size
        )

    def encode(self, inputs: list[str]) -> dict[str, Tensor]:
        """Image files -> {"images": (B, C, H, W)}, resized to the model's size and normalised."""
        config = self.model.config
        size = (config.image_size, config.image_size)
        images = torch.stack([read_image(p, channels=config.in_channels, size=size) for p in inputs])
        return {"images": self.pipeline(images, train=False).to(self.device, self.dtype)}

    def export_spec(self) -> dict[str, Any]:
        size = self.model.config.image_size
        return {
            "length": size,
            "axes": {"images": None},
            "output": "logits",
            "meaning": f"class logits (batch, classes) of normalised (batch, channels, {size}, {size}) images",
        }

    def example_batch(self, batch_size: int, length: int) -> dict[str, Tensor]:
        config = self.model.config
        generator = torch.Generator().manual_seed(batch_size)
        return {
            "images": torch.randn(
                batch_size, config.in_channels, config.image_size, config.image_size, generator=generator
            )
        }

    record_options: ClassVar[dict[str, type]] = {"top_k": int}

    def records(self, inputs: list[str], top_k: int = 1) -> list[dict[str, Any]]:
        """Per image, given as base64 of a PNG or JPEG file: {"label", "probability", "top_k": [{"label",
        "probability"}]}."""
        if top_k < 1:
            raise UserError("top_k must be at least 1")
        with tempfile.TemporaryDirectory() as folder:
            paths = []
            for number, data in enumerate(inputs):
                try:
                    content = base64.b64decode(data, validate=True)
                except ValueError:
                    raise UserError(f"input {number + 1} is not base64 (an image file's bytes)") from None
                paths.append(Path(folder) / f"{number}.img")
                paths[-1].write_bytes(content)
            ranked = self.predict([str(p) for p in paths], top_k)
        return [
            {
                "label": best[0][0],
                "probability": best[0][1],
                "top_k": [{"label": label, "probability": p} for label, p in best],
            }
            for best in ranked
        ]

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """Class logits (B, C)."""
        with torch.no_grad():
            return self.model(batch["images"])

    def evaluate(self, data_dir: str | None = None, log: Any = print) -> dict[str, float]:
        """Accuracy and macro-F1 on the test split of the run's dataset, or on the images in
        `data_dir`/<class>/ (class folders named as the run's classes)."""
        if data_dir is not None:
            config = self.model.config
            size = (config.image_size, config.image_size)
            test = read_image_folder(Path(data_dir), size=size, classes=self.classes, channels=config.in_channels)
        elif "source" in self.config:
            raise UserError(f"{self.run_dir} was imported, not trained on a dataset: give --data-dir FOLDER/<class>/")
        else:
            _, test = read_splits(self.options)
        data = batches(test, self.pipeline, 256, train=False, seed=0)
        task = VisionTask()
        rows = collect(
            lambda batch: task.eval_step(self.model, {**batch, "images": batch["images"].to(self.dtype)}),
            data.plan(0),
            data.collate,
            self.device,
        )
        return report(self.run_dir, task.metrics(rows), len(test), log)

    def predict(self, inputs: list[str], top_k: int = 1, batch_size: int = 64) -> list[list[tuple[str, float]]]:
        """For each image file, the top-k (class, probability); `batch_size` images at a time, so that a
        folder of thousands of images does not go through the model (and into memory) at once."""
        probs = [
            self.forward(self.encode(inputs[start : start + batch_size])).float().softmax(dim=-1).cpu()
            for start in range(0, len(inputs), batch_size)
        ]
        return top_labels(torch.cat(probs) if probs else torch.empty(0, len(self.classes)), self.classes, top_k)


def _predict_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("texts", nargs="*", metavar="images", help="image files to classify")
    add_top_k_argument(parser, "classes", 1)


def _predict(run: VisionRun, args: argparse.Namespace) -> int:
    top_k = checked_top_k(args) or 1
    if not args.texts:
        raise UserError("give image files to classify: attnkit predict RUN_DIR image.png ...")
    for path, ranked in zip(args.texts, run.predict(args.texts, top_k), strict=True):
        print(path)
        for label, probability in ranked:
            print(f"  {label}\t{probability:.3f}")
    return 0


HELP = "image classification with a Vision Transformer"
DESCRIPTION = (
    "Train a ViT on MNIST, Fashion-MNIST, CIFAR-10 or an image folder (ROOT/train/<class>/, "
    "ROOT/test/<class>/), with augmentation on the fly, and report test accuracy."
)
COMMANDS = {
    "evaluate": metrics_command(
        "vision: on the test split of the run's dataset, or with --data-dir on FOLDER/<class>/*.png.",
        lambda parser: parser.add_argument(
            "--data-dir", help="evaluate on the images in FOLDER/<class>/ (the run's class names) instead"
        ),
        lambda run, args: run.evaluate(args.data_dir),
    ),
    "predict": Command(_predict_arguments, _predict, "vision: the class of image files."),
    "explain": explain_command("vision"),
}
TASK = TaskSpec(
    "vision",
    HELP,
    DESCRIPTION,
    VisionOptions,
    TRAIN_DEFAULTS,
    train_run,
    VisionRun,
    COMMANDS,
    ("accuracy", "macro_f1", "loss"),
)
train = TASK.train
