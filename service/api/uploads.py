"""Reading submit requests: a size-limited JSON body, or a streamed multipart upload
whose frame part is spooled to disk by Starlette (never held whole in memory)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.types import Message

from service.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from service.formats import detect_format
from service.schemas import JobSpec
from service.submit import FrameFile
from service.text import encodable


@dataclass
class ParsedSubmit:
    spec: JobSpec
    frame_file: FrameFile | None
    form: FormData | None
    digest: hashlib._Hash


def _check_declared_length(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the request body is {declared} bytes; the limit is {limit}")


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the request body is larger than the limit of {limit} bytes")


async def read_json_body(request: Request, limit: int) -> bytes:
    _check_declared_length(request, limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(
                f"a JSON body may be at most {limit} bytes; send large frames as a "
                "multipart upload (CSV, NDJSON, Parquet or Arrow)"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def parse_spec(raw: bytes | str, *, where: str) -> JobSpec:
    if not raw or not str(raw).strip():
        raise InvalidInput(f"the {where} is empty")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise InvalidInput(f"the {where} is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise InvalidInput(f"the {where} nests JSON arrays or objects too deeply") from exc
    if not isinstance(data, dict):
        raise InvalidInput(f"the {where} must be a JSON object")
    _check_text(data, where)
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        errors = [
            {"field": ".".join(str(p) for p in e["loc"]), "reason": e["msg"]} for e in exc.errors()
        ]
        raise InvalidInput(
            f"the {where} is not a valid job: {errors[0]['field']}: {errors[0]['reason']}",
            errors=errors,
        ) from exc


def _check_text(data: dict[str, Any], where: str) -> None:
    """Text no backend can store: lone surrogates (JSON may escape one, ``"\\ud800"``)
    and NUL (PostgreSQL cannot hold it). The frame's own values go to Parquet and
    are checked column by column later."""
    bad = _bad_text({k: v for k, v in data.items() if k != "frame"})
    if bad is not None:
        raise InvalidInput(f"the {where} holds text that cannot be stored: {bad}")


def _bad_text(value: Any) -> str | None:
    strings: list[Any] = [value]
    while strings:
        item = strings.pop()
        if isinstance(item, dict):
            strings.extend(item.keys())
            strings.extend(item.values())
        elif isinstance(item, list):
            strings.extend(item)
        elif isinstance(item, str):
            if "\x00" in item:
                return f"{item[:40]!r} holds a NUL character"
            if not encodable(item):
                return f"{item[:40]!r} is not valid Unicode (a lone surrogate)"
    return None


async def read_json_submit(request: Request, limit: int) -> ParsedSubmit:
    body = await read_json_body(request, limit)
    return ParsedSubmit(parse_spec(body, where="request body"), None, None, hashlib.sha256(body))


def _limited(request: Request, limit: int) -> Request:
    seen = 0
    receive = request.receive

    async def limited_receive() -> Message:
        nonlocal seen
        message = await receive()
        seen += len(message.get("body", b""))
        if seen > limit:
            raise _too_large(limit)
        return message

    return Request(request.scope, limited_receive)


async def read_multipart_submit(request: Request, limit: int) -> ParsedSubmit:
    _check_declared_length(request, limit)
    try:
        form = await _limited(request, limit).form(max_files=1, max_fields=8)
    except MultiPartException as exc:
        raise InvalidInput(f"the multipart body could not be read: {exc.message}") from exc
    except HTTPException as exc:  # Starlette turns MultiPartException into a plain 400
        if exc.status_code != 400:
            raise
        raise InvalidInput(f"the multipart body could not be read: {exc.detail}") from exc
    try:
        return await _from_form(form)
    except BaseException:
        await form.close()
        raise


async def _from_form(form: FormData) -> ParsedSubmit:
    if len(form.getlist("spec")) > 1:
        # Starlette keeps the last; a proxy or filter in front may judge the first.
        raise InvalidInput('a multipart submit has one "spec" part, this one has several')
    spec_part: Any = form.get("spec")
    frame_part = form.get("frame")
    if spec_part is None:
        raise InvalidInput('a multipart submit needs a "spec" part (the job as JSON)')
    if isinstance(spec_part, UploadFile):
        spec_part = await spec_part.read()
    spec = parse_spec(spec_part, where='"spec" part')
    if spec.frame is not None:
        raise InvalidInput('in a multipart submit the frame goes in the "frame" part, not the spec')
    if not isinstance(frame_part, UploadFile):
        raise InvalidInput('a multipart submit needs a "frame" file part')
    fmt = detect_format(frame_part.content_type, frame_part.filename)
    digest = hashlib.sha256(spec_part if isinstance(spec_part, bytes) else spec_part.encode())
    return ParsedSubmit(spec, FrameFile(frame_part.file, fmt), form, digest)


async def read_submit(request: Request, *, json_limit: int, upload_limit: int) -> ParsedSubmit:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        return await read_json_submit(request, json_limit)
    if media == "multipart/form-data":
        return await read_multipart_submit(request, upload_limit)
    raise UnsupportedMediaType(
        f"POST /jobs takes application/json or multipart/form-data, not {media or 'no type'!r}"
    )


def frame_digest(parsed: ParsedSubmit) -> str:
    """The request's fingerprint for Idempotency-Key (spec, plus the frame file)."""
    if parsed.frame_file is not None:
        handle = parsed.frame_file.file
        handle.seek(0)
        while chunk := handle.read(1024 * 1024):
            parsed.digest.update(chunk)
        handle.seek(0)
    return parsed.digest.hexdigest()
