"""Pipelines: a function over a DuckDB relation, with a typed input model and params.

Operators write::

    class Row(BaseModel):
        user_id: int = Field(alias="userId")
        amount: float

    @pipeline("billing_rollup", input=Row, description="...")
    def billing_rollup(ctx: Context, frame: duckdb.DuckDBPyRelation) -> duckdb.DuckDBPyRelation:
        return frame.aggregate("user_id, sum(amount) AS total, count(*) AS n", "user_id")

The decorator returns a :class:`Pipeline`; :func:`load_registry` collects them from the
built-in modules and from the modules named in ``FRAMEJOBS_PIPELINES``.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Protocol, TypeAlias

import duckdb
import pyarrow as pa
from pydantic import BaseModel, ValidationError

from service.config import Settings
from service.errors import InvalidInput, NotFound, StartupError, first_line
from service.frames import FrameSchema, Mode, schema_of

log = logging.getLogger("framejobs.pipelines")


class Context(Protocol):
    """What a running pipeline can see and do."""

    job_id: str
    attempt: int
    params: Any

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        """The job's own DuckDB cursor (the input is the view ``input``)."""

    def progress(self, done: float, total: float | None = None, message: str | None = None) -> None:
        """Report progress: ``done`` of ``total`` (percent when ``total`` is None)."""

    def check_cancelled(self) -> None:
        """Raise if the job was cancelled or timed out; call it between long steps."""


Result: TypeAlias = duckdb.DuckDBPyRelation | pa.Table | pa.RecordBatchReader
PipelineFunc = Callable[[Context, duckdb.DuckDBPyRelation], Result]
ParamsCheck = Callable[[Any, duckdb.DuckDBPyConnection], None]


@dataclass(frozen=True)
class Pipeline:
    name: str
    func: PipelineFunc
    input: type[BaseModel] | None = None
    params: type[BaseModel] | None = None
    description: str = ""
    max_attempts: int | None = None
    timeout_s: float | None = None
    validation: Mode = "coerce"
    sandboxed: bool = False
    check_params: ParamsCheck | None = None
    frame_schema: FrameSchema | None = field(default=None, compare=False)
    # JSON Schemas for GET /pipelines, made once; None for a model that has none
    input_schema: dict[str, Any] | None = field(default=None, compare=False)
    params_schema: dict[str, Any] | None = field(default=None, compare=False)

    def __call__(self, ctx: Context, frame: duckdb.DuckDBPyRelation) -> Result:
        return self.func(ctx, frame)

    def parse_params(self, raw: Mapping[str, Any] | None) -> Any:
        if self.params is None:
            if raw:
                raise InvalidInput(f"pipeline {self.name!r} takes no params")
            return None
        try:
            return self.params.model_validate(raw or {})
        except ValidationError as exc:
            errors = [
                {"field": ".".join(str(p) for p in e["loc"]), "reason": e["msg"]}
                for e in exc.errors()
            ]
            raise InvalidInput(f"invalid params for pipeline {self.name!r}", errors=errors) from exc
        except Exception as exc:  # a validator's KeyError, TypeError…: pydantic lets them by
            log.warning("pipeline %r: its params model raised", self.name, exc_info=exc)
            raise InvalidInput(
                f"pipeline {self.name!r} refused the params: {type(exc).__name__}: "
                f"{first_line(exc)}"
            ) from exc


def pipeline(
    name: str,
    *,
    input: type[BaseModel] | None = None,
    params: type[BaseModel] | None = None,
    description: str = "",
    max_attempts: int | None = None,
    timeout_s: float | None = None,
    validation: Mode = "coerce",
    sandboxed: bool = False,
    check_params: ParamsCheck | None = None,
) -> Callable[[PipelineFunc], Pipeline]:
    """Declare a pipeline. The function receives a context and the input relation."""
    _check_options(name, max_attempts, timeout_s, validation)

    def wrap(func: PipelineFunc) -> Pipeline:
        frame_schema = _frame_schema(name, input)
        input_schema = _json_schema(name, input)
        if frame_schema is not None and input_schema is not None and frame_schema.extra == "forbid":
            # pydantic's default is to ignore extra keys; submit refuses extra columns
            input_schema.setdefault("additionalProperties", False)
        return Pipeline(
            name=name,
            func=func,
            input=input,
            params=params,
            description=description or (func.__doc__ or "").strip(),
            max_attempts=max_attempts,
            timeout_s=timeout_s,
            validation=validation,
            sandboxed=sandboxed,
            check_params=check_params,
            frame_schema=frame_schema,
            input_schema=input_schema,
            params_schema=_json_schema(name, params),
        )

    return wrap


# A submit's own bounds (schemas.JobSpec): a pipeline's defaults stand in for them.
_MAX_NAME, _MAX_ATTEMPTS, _MAX_TIMEOUT_S = 200, 100, 7 * 24 * 3600


def _check_options(
    name: object, max_attempts: object, timeout_s: object, validation: object
) -> None:
    """Refuse at import what a submit could not send: taken as given, 'Strict' was
    strict yet shown as no mode a client knows, and a timeout of -1 s timed out."""
    if not isinstance(name, str) or not 1 <= len(name) <= _MAX_NAME:
        raise ValueError(f"a pipeline name is text of 1 to {_MAX_NAME} characters, not {name!r}")
    where = f"pipeline {name!r}"
    if max_attempts is not None and (
        type(max_attempts) is not int or not 1 <= max_attempts <= _MAX_ATTEMPTS
    ):
        raise ValueError(f"{where}: max_attempts is an int from 1 to {_MAX_ATTEMPTS}")
    if timeout_s is not None and (
        isinstance(timeout_s, bool)
        or not isinstance(timeout_s, int | float)
        or not 0 < timeout_s <= _MAX_TIMEOUT_S  # NaN fails this too
    ):
        raise ValueError(f"{where}: timeout_s is seconds, above 0 and at most {_MAX_TIMEOUT_S}")
    if validation not in ("coerce", "strict"):
        raise ValueError(f"{where}: validation is 'coerce' or 'strict', not {validation!r}")


def _frame_schema(name: str, model: type[BaseModel] | None) -> FrameSchema | None:
    if model is None:
        return None
    try:
        return schema_of(model)
    except TypeError as exc:  # the start shows one line: it must say where to look
        raise TypeError(f"pipeline {name!r}, input model {model.__name__}: {exc}") from exc


def _json_schema(name: str, model: type[BaseModel] | None) -> dict[str, Any] | None:
    """The model's JSON Schema, by alias (the names clients send)."""
    if model is None:
        return None
    try:
        return model.model_json_schema(by_alias=True)
    except Exception as exc:  # e.g. a field of an arbitrary type: the model still works
        log.warning("pipeline %r: %s has no JSON Schema: %s", name, model.__name__, exc)
        return None


class Registry:
    def __init__(self, pipelines: Iterable[Pipeline]) -> None:
        self._by_name: dict[str, Pipeline] = {}
        for p in pipelines:
            seen = self._by_name.get(p.name)
            if seen is p:
                continue  # one pipeline found twice: imported into another module
            if seen is not None:
                raise ValueError(
                    f"two pipelines are named {p.name!r}: {_where(seen)} and {_where(p)}"
                )
            self._by_name[p.name] = p

    def get(self, name: str) -> Pipeline:
        try:
            return self._by_name[name]
        except KeyError:
            known = ", ".join(sorted(self._by_name)) or "none"
            raise NotFound(f"no pipeline named {name!r} (known: {known})") from None

    def __iter__(self) -> Any:
        return iter(sorted(self._by_name.values(), key=lambda p: p.name))

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._by_name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name


def _where(p: Pipeline) -> str:
    return f"{getattr(p.func, '__module__', '?')}.{getattr(p.func, '__qualname__', '?')}"


def pipelines_in(module: ModuleType) -> list[Pipeline]:
    return [value for value in vars(module).values() if isinstance(value, Pipeline)]


def load_registry(settings: Settings) -> Registry:
    names = ["service.pipelines.examples", *settings.pipelines]
    if settings.sql_pipeline_enabled:
        names.insert(0, "service.pipelines.sql")
    found: list[Pipeline] = []
    for module_name in dict.fromkeys(names):  # a module named twice is loaded once
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # the error alone rarely says which module it was
            raise StartupError(
                f"cannot load the pipeline module {module_name!r}: "
                f"{type(exc).__name__}: {first_line(exc)}"
            ) from exc
        found.extend(pipelines_in(module))
    return Registry(found)
