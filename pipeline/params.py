"""Typed, frozen views of `params.yaml`.

Every section is a pydantic model with `extra="forbid"` and strict types, so a misspelt key, a
string where a number belongs or an impossible value is an error that names the key
(`train.optimizer.lr`), raised before any stage does work.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.errors import StageError

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


class ModelParams(Section):
    arch: Literal["cnn", "mlp", "rnn", "transformer"] = "cnn"
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


Port = Annotated[int, Field(ge=1, le=65535)]
Seconds = Annotated[float, Field(gt=0.0)]


class ServingParams(Section):
    """The Triton server and the push/rollback commands. Environment variables override the
    connection keys (serving/client.py, serving/server.py); credentials come only from there."""

    repository: str = ".triton/models"
    state_dir: str = ".triton"
    http_port: Port = 8000
    grpc_port: Port = 8001
    metrics_port: Port = 8002
    url: str | None = None
    protocol: Literal["http", "grpc"] = "http"
    start_timeout_s: Seconds = 30.0
    load_timeout_s: Seconds = 60.0
    request_timeout_s: Seconds = 10.0
    retries: Annotated[int, Field(ge=0)] = 3
    backoff_s: Annotated[float, Field(ge=0.0)] = 0.5
    retention: Positive = 5
    candidate_entry: Literal["triton", "gpu", "gpu_torchscript"] = "triton"

    @model_validator(mode="after")
    def _check(self) -> ServingParams:
        if len({self.http_port, self.grpc_port, self.metrics_port}) != 3:
            raise ValueError("http_port, grpc_port and metrics_port must differ")
        # A URL Path() has flattened (s3:/b) would otherwise become a local folder named "s3:".
        scheme = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*):/", self.repository)
        if scheme and not self.repository.startswith("s3://"):
            raise ValueError(
                f"repository {self.repository!r}: use a local path, s3://<bucket>/<prefix> or "
                "s3://http(s)://<host>:<port>/<bucket>/<prefix>"
            )
        return self


class GateParams(Section):
    """Champion vs challenger thresholds for the approval gate (TFX-style): every metric named here
    is one where higher is better, as reported by the evaluate stage."""

    floors: dict[str, Fraction] = {"accuracy": 0.95, "f1_macro": 0.95}
    max_regression: dict[str, Fraction] = {"accuracy": 0.01, "f1_macro": 0.01}
    report: str = "reports/gate.json"
    max_epsilon: Annotated[float, Field(gt=0.0)] | None = None  # None: privacy not required

    @model_validator(mode="after")
    def _check(self) -> GateParams:
        if not self.floors and not self.max_regression:
            raise ValueError("name at least one metric in floors or max_regression")
        return self


class AirflowParams(Section):
    """The retraining DAG: schedule, queues, pools, approval."""

    dag_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")] = "retrain"
    schedule: str | None = "0 3 * * 1"
    data_asset: str | None = "raw_data"
    start_date: str = "2026-01-05"
    catchup: bool = False
    demo_batches: bool = True
    gpu_stages: list[str] = ["train", "crossval", "export"]
    gpu_queue: str = "gpu"
    gpu_pool: str = "gpu"
    gpu_pool_slots: Positive = 1
    evaluate_stage: str = "evaluate"
    drift_stage: str | None = "drift"
    require_approval: bool = False
    approval_timeout_h: Annotated[float, Field(gt=0.0)] = 72.0
    git_remote: str = ".airflow/workspace.git"
    git_branch: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")] = "main"
    worker_root: str = ".airflow/worker"
    worker_keep_runs: Positive = 2
    dvc_remote: str | None = ".dvc-remote"
    dvc_remote_conn_id: str = "dvc_remote_default"
    triton_conn_id: str = "triton_default"
    notify_conn_id: str = "retrain_notify"
    spark_conn_id: str = "spark_default"
    stage_timeout_min: Positive = 120
    infra_retries: Annotated[int, Field(ge=0)] = 3
    infra_retry_delay_s: Annotated[float, Field(gt=0.0)] = 10.0
    tag_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")] = "model-v"
    registry_stage: Annotated[str, Field(pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")] = "prod"
    git_author: str = "retrain-bot <retrain-bot@localhost>"

    @model_validator(mode="after")
    def _check(self) -> AirflowParams:
        try:
            dt.date.fromisoformat(self.start_date)
        except ValueError:
            raise ValueError(f"start_date must be a date YYYY-MM-DD, got {self.start_date!r}") from None
        if not re.fullmatch(r"[^<>]+ <[^<>@\s]+@[^<>\s]+>", self.git_author):
            raise ValueError(f"git_author must look like 'Name <email>', got {self.git_author!r}")
        return self


class Params(Section):
    data: DataParams
    embed: EmbedParams = EmbedParams()
    clean: CleanParams = CleanParams()
    engine: EngineParams = EngineParams()
    drift: DriftParams = DriftParams()
    split: SplitParams = SplitParams()
    train: TrainParams = TrainParams()
    novelty: NoveltyParams = NoveltyParams()
    export: ExportParams = ExportParams()
    explain: ExplainParams = ExplainParams()
    serving: ServingParams = ServingParams()
    gate: GateParams = GateParams()
    airflow: AirflowParams = AirflowParams()

    @model_validator(mode="after")
    def _check(self) -> Params:
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


def _describe(error: ValidationError, source: str) -> str:
    lines = [f"{source}: {error.error_count()} invalid parameter(s):"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            lines.append(f"  - {key}: unknown key (check the spelling; see the comments in params.yaml)")
        else:
            got = "" if item["type"] == "missing" else f" (got {item['input']!r})"
            lines.append(f"  - {key}: {item['msg']}{got}")
    return "\n".join(lines)


def parse_params(raw: Any, source: str = "params") -> Params:
    """Validate an already-parsed mapping; raises ParamsError naming every bad key."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        raise ParamsError(_describe(error, source)) from None


# libyaml's parser when PyYAML has it (its manylinux wheels do), ~10x faster than the pure-Python
# one: params.yaml, dvc.yaml and dvc.lock are read several times by every stage task.
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(text: str) -> Any:
    """What `yaml.safe_load(text)` returns, parsed by libyaml where available."""
    return yaml.load(text, Loader=YAML_LOADER)  # noqa: S506 - a safe loader


def load_params(path: str | Path = DEFAULT_PATH) -> Params:
    """Read and validate params.yaml."""
    path = Path(path)
    try:
        raw = read_yaml(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found; run from the project root or pass --params") from None
    except yaml.YAMLError as error:
        raise ParamsError(f"{path}: not valid YAML: {error}") from None
    return parse_params(raw, str(path))
