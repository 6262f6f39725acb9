"""Declarative base with a naming convention, and the reusable column types."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

from sqlalchemy import BigInteger, DateTime, Identity, MetaData, func, text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import DeclarativeBase, mapped_column

# Stable constraint names, so Alembic migrations can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


uuid_pk = Annotated[
    uuid.UUID,
    mapped_column(UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")),
]
bigint_pk = Annotated[int, mapped_column(BigInteger, Identity(), primary_key=True)]
created_at = Annotated[dt.datetime, mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())]
updated_at = Annotated[
    dt.datetime,
    mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now(), onupdate=func.now()),
]
tz_datetime = Annotated[dt.datetime, mapped_column(DateTime(timezone=True))]
