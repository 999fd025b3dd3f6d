"""Typed, frozen views of `params.yaml`: the pipeline's sections, and what every owner shares.

Each section's schema lives with its owner: the pipeline's here (what the DVC stages read, and so
what they depend on), `serving:` in serving/params.py, `gate:` in stages/gate.py, `airflow:` in
orchestration/params.py, which also checks the whole file (`ProjectParams`).

Every section is a pydantic model with `extra="forbid"` and strict types, so a misspelt key, a
string where a number belongs or an impossible value is an error that names the key
(`train.optimizer.lr`), raised before any stage does work.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.errors import StageError
from pipeline.families import effective_key, resolve_family

__all__ = ["effective_key"]  # pipeline.families' helper, for what writes values into params.yaml

DEFAULT_PATH = Path("params.yaml")

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
Positive = Annotated[int, Field(gt=0)]


class ParamsError(StageError):
    """params.yaml is missing, unreadable or does not match the schema."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


MissingPolicy = Literal["quarantine", "impute", "indicator"]


class ColumnParams(Section):
    """One feature column's contract (`data.columns.<name>`); what is left out is inferred or
    taken from `data.missing`."""

    type: Literal["numeric", "categorical"] | None = None  # None = inferred: text is categorical
    missing: MissingPolicy | None = None  # None = data.missing
    categories: list[str] | None = None  # allowed values (categorical only); None = any value

    @model_validator(mode="after")
    def _check(self) -> ColumnParams:
        if self.categories is not None and self.type == "numeric":
            raise ValueError("categories are for categorical columns; drop them or set type: categorical")
        if self.categories is not None and len(set(self.categories)) != len(self.categories):
            raise ValueError("categories must be distinct")
        return self


class DataParams(Section):
    source: str
    label: str
    feature_prefix: str = ""
    image_shape: list[Positive] | None = None
    value_range: list[float] | None = None
    classes: list[int | str]
    missing: MissingPolicy = "quarantine"
    columns: dict[str, ColumnParams] = {}

    @model_validator(mode="after")
    def _check(self) -> DataParams:
        if self.image_shape is not None and (
            self.missing != "quarantine" or any(c.type == "categorical" for c in self.columns.values())
        ):
            raise ValueError(
                "image rows are numeric pixels: categorical columns and missing-value policies "
                "need tabular rows (image_shape: null)"
            )
        if self.image_shape is not None and len(self.image_shape) != 2:
            raise ValueError("image_shape must be [height, width] or null")
        if self.value_range is not None and (len(self.value_range) != 2 or self.value_range[0] > self.value_range[1]):
            raise ValueError("value_range must be [min, max] with min <= max, or null")
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            raise ValueError("classes must list at least two distinct labels")
        return self

    @property
    def n_features(self) -> int | None:
        """Feature count implied by the image shape (None for tabular rows)."""
        return None if self.image_shape is None else self.image_shape[0] * self.image_shape[1]


class EmbedParams(Section):
    dataset: Literal["digits", "breast_cancer", "wine", "iris"] = "digits"
    batches: Positive = 1
    first_batch: str = "2026-01-05"
    as_of: str | None = None

    @model_validator(mode="after")
    def _check(self) -> EmbedParams:
        for name in ("first_batch", "as_of"):
            value = getattr(self, name)
            if value is not None:
                try:
                    dt.date.fromisoformat(value)
                except ValueError:
                    raise ValueError(f"{name} must be a date YYYY-MM-DD, got {value!r}") from None
        return self


class CleanParams(Section):
    min_rows: Positive = 100
    max_quarantine_share: Fraction = 0.05
    max_duplicate_share: Fraction = 0.02
    batch_mb: Annotated[float, Field(gt=0.0)] = 16.0


class EngineParams(Section):
    """Where the data stages (clean, split) run. Only they read it: switching engines reruns them
    and gives the same files, so nothing downstream reruns."""

    name: Literal["local", "spark"] = "local"
    unit_mb: Annotated[float, Field(gt=0.0)] = 128.0
    spark_master: str = "local[*]"
    spark_conf: dict[str, str] = {}


class DriftParams(Section):
    """The drift stage: the new clean table against the data the serving model was trained on."""

    bins: Annotated[int, Field(ge=2, le=100)] = 10
    sample_rows: Positive = 20_000
    threshold: Annotated[float, Field(gt=0.0)] = 0.25
    class_threshold: Annotated[float, Field(gt=0.0)] = 0.1
    action: Literal["warn", "fail"] = "warn"
    top_n: Positive = 10


class SplitParams(Section):
    seed: int = 42
    val_fraction: Fraction = 0.15
    test_fraction: Fraction = 0.15
    folds: list[int] = [0, 1, 2, 3, 4]

    @model_validator(mode="after")
    def _check(self) -> SplitParams:
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError("val_fraction + test_fraction must leave rows for training (< 1)")
        if sorted(self.folds) != list(range(len(self.folds))) or len(self.folds) < 2:
            raise ValueError(f"folds must be the ids 0..k-1 with k >= 2, got {self.folds}")
        return self


class RNNParams(Section):
    cell: Literal["lstm", "gru"] = "gru"
    hidden_size: Positive = 64
    layers: Positive = 1


class TransformerParams(Section):
    patch_size: Positive = 2
    dim: Positive = 64
    depth: Positive = 2
    heads: Positive = 4
    mlp_dim: Positive = 128

    @model_validator(mode="after")
    def _check(self) -> TransformerParams:
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} must be a multiple of heads {self.heads}")
        return self


Arch = Literal["cnn", "mlp", "rnn", "transformer"]  # pipeline.families.ARCHES


class ModelParams(Section):
    arch: Arch = "cnn"
    channels: list[Positive] = [32, 64]
    hidden: list[Positive] = [128]
    dropout: Fraction = 0.2
    rnn: RNNParams = RNNParams()
    transformer: TransformerParams = TransformerParams()


class OptimizerParams(Section):
    name: Literal["sgd", "adam", "adamw"] = "adamw"
    lr: Annotated[float, Field(gt=0.0)] = 0.003
    momentum: Fraction = 0.9
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.0001


class ScheduleParams(Section):
    name: Literal["constant", "cosine", "warmup_cosine"] = "warmup_cosine"
    warmup_fraction: Fraction = 0.1

    @field_validator("name", mode="before")
    @classmethod
    def _renamed(cls, name: Any) -> Any:
        if name == "onecycle":
            raise ValueError(
                "'onecycle' was renamed 'warmup_cosine' (linear warm-up, then cosine decay; it never was "
                "PyTorch's OneCycleLR): set train.schedule.name: warmup_cosine"
            )
        return name


class EarlyStoppingParams(Section):
    metric: Literal["val_accuracy", "val_loss"] = "val_accuracy"
    patience: Positive = 5


class AugmentParams(Section):
    enabled: bool = True
    max_shift: Annotated[int, Field(ge=0)] = 1
    max_rotation: Annotated[float, Field(ge=0.0, le=180.0)] = 10.0


class DistributedParams(Section):
    """Data-parallel training under torchrun. The rendezvous endpoint of a multi-node run comes
    from the environment (TRAIN_RDZV_ENDPOINT), never from here."""

    nproc_per_node: Positive = 1
    nnodes: Positive = 1

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes


class PrivacyParams(Section):
    """Differentially private training (DP-SGD through Opacus, `pipeline/privacy.py`). Off by default."""

    enabled: bool = False
    target_epsilon: Annotated[float, Field(gt=0.0)] = 3.0
    delta: Annotated[float, Field(gt=0.0, lt=1.0)] | None = None  # None: 0.1 / training rows
    max_grad_norm: Annotated[float, Field(gt=0.0)] = 1.0


class TrainParams(Section):
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    cpu_threads: Annotated[int, Field(ge=0)] = 1  # torch's intra-op threads while training; 0 = one per core
    mixed_precision: bool = True
    epochs: Positive = 20
    batch_size: Positive = 64
    label_smoothing: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.05
    checkpoint_interval_s: Annotated[float, Field(ge=0.0)] = 30.0
    model: ModelParams = ModelParams()
    optimizer: OptimizerParams = OptimizerParams()
    schedule: ScheduleParams = ScheduleParams()
    early_stopping: EarlyStoppingParams = EarlyStoppingParams()
    augment: AugmentParams = AugmentParams()
    distributed: DistributedParams = DistributedParams()
    privacy: PrivacyParams = PrivacyParams()
    # Each family's partial override of the keys above, as written (pipeline/families.py); the
    # chosen arch's is merged in. Left out of model_dump: model files and checkpoints record the
    # effective params.
    families: dict[Arch, dict[str, Any]] = Field(default={}, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _resolve_family(cls, raw: Any) -> Any:
        return resolve_family(raw, cls) if isinstance(raw, dict) else raw

    @model_validator(mode="after")
    def _check(self) -> TrainParams:
        if self.privacy.enabled and self.distributed.world_size > 1:
            raise ValueError(
                f"privacy.enabled with distributed training ({self.distributed.world_size} processes) is not "
                "supported: DP-SGD's per-row clipping and noise run in one process. Set "
                "train.distributed.nproc_per_node and nnodes to 1, or switch train.privacy off"
            )
        return self


class ExportParams(Section):
    """export stage (ONNX, TorchScript, Triton repository entries)."""

    # Triton uses the name as a folder in the model repository: no separators, dots or spaces.
    model_name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+$", max_length=128)] = "digits"
    opset: Annotated[int, Field(ge=18, le=20)] = 18  # the dynamo exporter writes opset 18 and up
    parity_tolerance: Annotated[float, Field(ge=0.0)] = 1e-4
    golden_samples: Positive = 8
    max_batch_size: Positive = 256
    dynamic_batching: bool = True
    max_queue_delay_microseconds: Annotated[int, Field(ge=0)] = 0
    preferred_batch_sizes: list[Positive] = []
    instance_count: Positive = 1
    intra_op_threads: Annotated[int, Field(ge=0)] = 1
    intra_op_spinning: bool = False
    gpu_instance_count: Positive = 1

    @model_validator(mode="after")
    def _check(self) -> ExportParams:
        too_big = [size for size in self.preferred_batch_sizes if size > self.max_batch_size]
        if too_big:
            raise ValueError(f"preferred_batch_sizes {too_big} exceed max_batch_size {self.max_batch_size}")
        return self


class TuneGridParams(Section):
    """The serving settings the tune stage tries, each a list of values; [] keeps the candidate's."""

    instance_count: list[Positive] = []
    max_batch_size: list[Positive] = []
    max_queue_delay_microseconds: list[Annotated[int, Field(ge=0)]] = []
    intra_op_threads: list[Annotated[int, Field(ge=0)]] = []


class TuneParams(Section):
    """tune stage: the candidate's served config measured on a scratch Triton across `grid`; the
    gate's speed check (gate.max_latency_regression) measures the same way."""

    enabled: bool = False
    grid: TuneGridParams = TuneGridParams()
    concurrency: list[Positive] = [1, 8]
    rows_per_request: Positive = 1
    p99_budget_ms: Annotated[float, Field(gt=0.0)] = 50.0
    rounds: Positive = 3
    seconds_per_cell: Annotated[float, Field(gt=0.0)] = 1.0
    requests_per_cell: Positive = 400
    margin: Fraction = 0.1
    max_settings: Positive = 8

    @model_validator(mode="after")
    def _check(self) -> TuneParams:
        if not self.concurrency:
            raise ValueError("concurrency must name at least one level of concurrent clients")
        return self


class NoveltyParams(Section):
    """novelty stage: an autoencoder whose reconstruction error flags rows unlike the training data."""

    enabled: bool = False
    arch: Literal["dense", "conv"] = "dense"
    hidden: list[Positive] = [32]
    channels: list[Positive] = [8, 16]
    bottleneck: Positive = 4
    loss: Literal["mse", "l1"] = "mse"
    epochs: Positive = 60
    batch_size: Positive = 64
    lr: Annotated[float, Field(gt=0.0)] = 0.003
    seed: int = 0
    quantile: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.99


class ExplainParams(Section):
    """explain stage: integrated-gradients attributions of the torch model (Captum), as a report."""

    enabled: bool = False  # off by default: its process imports torch and Captum (see params.yaml)
    n_steps: Annotated[int, Field(ge=2, le=1000)] = 32
    rows_per_class: Annotated[int, Field(ge=1, le=20)] = 2
    max_rows: Positive = 500
    confused_pairs: Annotated[int, Field(ge=0, le=50)] = 3
    examples_per_pair: Annotated[int, Field(ge=1, le=20)] = 3


class PipelineParams(Section):
    """The sections the DVC stages read, and the checks across them."""

    data: DataParams
    embed: EmbedParams = EmbedParams()
    clean: CleanParams = CleanParams()
    engine: EngineParams = EngineParams()
    drift: DriftParams = DriftParams()
    split: SplitParams = SplitParams()
    train: TrainParams = TrainParams()
    novelty: NoveltyParams = NoveltyParams()
    export: ExportParams = ExportParams()
    tune: TuneParams = TuneParams()
    explain: ExplainParams = ExplainParams()

    @model_validator(mode="after")
    def _check(self) -> PipelineParams:
        model, shape = self.train.model, self.data.image_shape
        if model.arch == "cnn" and shape is None:
            raise ValueError("train.model.arch 'cnn' needs data.image_shape; use 'mlp' for tabular rows")
        if self.novelty.arch == "conv" and shape is None:
            raise ValueError("novelty.arch 'conv' needs data.image_shape; use 'dense' for tabular rows")
        patch = model.transformer.patch_size
        if model.arch == "transformer" and shape is not None and (shape[0] % patch or shape[1] % patch):
            raise ValueError(
                f"train.model.transformer.patch_size {patch} must divide both sides of data.image_shape {shape}"
            )
        return self


# Sections other parts own: a stage reads none of them, so their schemas are not the stages'
# dependencies (a change to the Airflow schema reruns no stage). Their owners check them:
# serving/params.py, serving/rollout/params.py, stages/gate.py, orchestration/sweep/params.py,
# orchestration/params.py (the whole file: ProjectParams).
OTHER_OWNERS = ("serving", "rollout", "gate", "airflow", "sweep")


class Params(PipelineParams):
    """params.yaml as a stage reads it: the pipeline's sections checked, the other owners' sections
    (OTHER_OWNERS) kept as they are, for their owners to check."""

    serving: dict[str, Any] = {}
    rollout: dict[str, Any] = {}
    gate: dict[str, Any] = {}
    airflow: dict[str, Any] = {}
    sweep: dict[str, Any] = {}


S = TypeVar("S", bound=BaseModel)


def _describe(error: ValidationError, source: str, prefix: str = "") -> str:
    lines = [f"{source}: {error.error_count()} invalid parameter(s):"]
    for item in error.errors():
        key = ".".join([prefix, *(str(part) for part in item["loc"])] if prefix else map(str, item["loc"]))
        key = key or "(top level)"
        if item["type"] == "extra_forbidden":
            lines.append(f"  - {key}: unknown key (check the spelling; see the comments in params.yaml)")
        else:
            got = "" if item["type"] == "missing" else f" (got {item['input']!r})"
            lines.append(f"  - {key}: {item['msg']}{got}")
    return "\n".join(lines)


def parse_as(schema: type[S], raw: Any, source: str = "params", section: str = "") -> S:
    """Validate an already-parsed mapping (the whole file, or its `section`) as `schema`; raises
    ParamsError naming every bad key."""
    if not isinstance(raw, dict):
        what = f"the section {section}" if section else "a mapping of sections"
        raise ParamsError(f"{source}: expected {what} as a mapping, got {type(raw).__name__}")
    try:
        return schema.model_validate(raw)
    except ValidationError as error:
        raise ParamsError(_describe(error, source, section)) from None


def parse_params(raw: Any, source: str = "params") -> Params:
    """Validate an already-parsed mapping; raises ParamsError naming every bad key."""
    return parse_as(Params, raw, source)


# libyaml's parser when PyYAML has it (its manylinux wheels do), ~10x faster than the pure-Python
# one: params.yaml, dvc.yaml and dvc.lock are read several times by every stage task.
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(text: str) -> Any:
    """What `yaml.safe_load(text)` returns, parsed by libyaml where available."""
    return yaml.load(text, Loader=YAML_LOADER)  # noqa: S506 - a safe loader


def read_params(path: str | Path = DEFAULT_PATH) -> Any:
    """params.yaml as parsed YAML, unchecked."""
    path = Path(path)
    try:
        return read_yaml(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found; run from the project root or pass --params") from None
    except yaml.YAMLError as error:
        raise ParamsError(f"{path}: not valid YAML: {error}") from None


def load_params(path: str | Path = DEFAULT_PATH) -> Params:
    """Read and validate params.yaml as a stage reads it (the pipeline's sections)."""
    return parse_as(Params, read_params(path), str(path))
