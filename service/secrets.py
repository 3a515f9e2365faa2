"""The webhook signing secret: from settings, else one the service generated and
keeps in the database (so every process of a deployment signs alike)."""

from __future__ import annotations

import base64
import logging
import secrets

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from service.config import Settings
from service.db import reading, writing
from service.models import secret_table
from service.store import utcnow

NAME = "webhook_signing"
log = logging.getLogger("framejobs")


def stored_secret(engine: Engine) -> str | None:
    with reading(engine) as conn:
        query = sa.select(secret_table.c.value).where(secret_table.c.name == NAME)
        value: str | None = conn.execute(query).scalar_one_or_none()
    return value


def signing_secrets(engine: Engine, settings: Settings) -> list[str]:
    if settings.webhook_secrets:
        return list(settings.webhook_secrets)
    existing = stored_secret(engine)
    if existing is not None:
        return [existing]
    fresh = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    try:
        with writing(engine) as conn:
            conn.execute(secret_table.insert().values(name=NAME, value=fresh, created_at=utcnow()))
    except IntegrityError:  # another process generated it first
        return [stored_secret(engine) or fresh]
    log.warning(
        "generated a webhook signing secret and stored it in the database; "
        "print it with `framejobs webhook-secret`, or set FRAMEJOBS_WEBHOOK_SECRETS"
    )
    return [fresh]
