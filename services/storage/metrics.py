"""Prometheus numbers of the storage service (served on its ``/metrics``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

STORED_BYTES = Gauge(
    "bm_storage_stored_bytes",
    "Bytes of stored copies",
    ["project_id", "database_id", "destination_id"],
)
STORED_COPIES = Gauge(
    "bm_storage_stored_copies",
    "Stored copies (one backup on one destination)",
    ["project_id", "database_id", "destination_id"],
)
FREE_BYTES = Gauge(
    "bm_destination_free_bytes", "Free space of a local destination", ["destination_id"]
)
TOTAL_BYTES = Gauge(
    "bm_destination_total_bytes", "Size of a local destination's device", ["destination_id"]
)
ORPHANS = Gauge(
    "bm_storage_orphans",
    "Our files on a destination that no backup row refers to",
    ["destination_id"],
)
MISSING = Gauge("bm_storage_missing_copies", "Copies whose artifact is gone", ["destination_id"])
UNREADABLE = Gauge(
    "bm_storage_unreadable", "Artifacts the last sweep could not read", ["destination_id"]
)
RETENTION_DELETED = Counter("bm_retention_deleted_total", "Backup rows deleted by retention")
ORPHANS_REMOVED = Counter("bm_storage_orphans_removed_total", "Orphan files removed")
INTEGRITY_BYTES = Counter(
    "bm_integrity_checked_bytes_total", "Bytes re-hashed by the integrity sweep"
)
INTEGRITY_CORRUPT = Counter("bm_integrity_corrupt_total", "Copies found corrupt")
LAST_SWEEP = Gauge(
    "bm_storage_last_sweep_timestamp_seconds", "When a sweep last finished", ["sweep"]
)
