"""Bulk registration: many sensors from one JSON or CSV upload, all or none."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from api import bulk
from api.auth import Writer
from api.deps import DatabaseDep, SettingsDep
from api.errors import DATABASE_ERRORS
from api.registry_schemas import BulkCreated, SensorPublic
from store import registry

log = logging.getLogger(__name__)
router = APIRouter(prefix="/sensors", tags=["sensors"], responses=DATABASE_ERRORS)

BULK_PATH = "/v1/sensors/bulk"
_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"type": "array", "items": {"$ref": "#/components/schemas/SensorCreate"}}
            },
            "text/csv": {
                "schema": {"type": "string"},
                "example": "sensor_id,type,lat,lon,name,visibility\n"
                "gent-air-001,air-box,51.0543,3.7174,Korenmarkt,public\n",
            },
        },
    }
}


@router.post(
    "/bulk",
    response_model=BulkCreated,
    status_code=status.HTTP_201_CREATED,
    summary="Register many sensors from a JSON array or a CSV file, all or none",
    openapi_extra=_BODY,
)
async def bulk_register(
    request: Request, database: DatabaseDep, settings: SettingsDep, caller: Writer
) -> Any:
    """Every row is checked (form, references, ids taken or repeated) before anything is
    written; one bad row rejects the whole upload with a 422 listing each row's errors
    (`row` is 1-based; `line` is the CSV line). At most MEETNET_API_BULK_MAX_ROWS sensors
    and MEETNET_API_BULK_MAX_BYTES bytes per upload."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in ("application/json", "text/csv"):
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            "send Content-Type: application/json (an array of sensors) or text/csv",
        )
    body = await request.body()
    try:
        parse = bulk.parse_csv if ctype == "text/csv" else bulk.parse_json
        upload = parse(body, settings.api_bulk_max_rows)
    except bulk.UploadRejected as e:
        raise RequestValidationError(
            [{"type": "upload", "loc": ("body",), "msg": str(e), "input": None}]
        ) from None
    checked = bulk.check_rows(upload)
    async with database.write() as conn:
        problems = await registry.check_new_sensors(conn, caller, checked.valid, checked.index)
        errors = checked.errors + [
            bulk.row_error(upload, int(p.loc[0]), p.loc[1:], p.type, p.msg, p.input)
            for p in problems
        ]
        if errors:
            errors.sort(key=lambda e: e["row"])
            bad_rows = len({e["row"] for e in errors})
            return JSONResponse(
                status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
                content={
                    "detail": errors[: bulk.MAX_ERRORS],
                    "rows": len(upload.rows),
                    "invalid_rows": bad_rows,
                    "errors": len(errors),
                    "message": f"{bad_rows} of {len(upload.rows)} rows are invalid; nothing was "
                    "registered: correct them and upload again",
                },
            )
        created = await registry.insert_sensors(conn, checked.valid)
    log.info("sensors registered in bulk", extra={"sensors": len(created), "by_key": caller.key_id})
    return BulkCreated(created=len(created), sensors=[SensorPublic.from_row(r) for r in created])
