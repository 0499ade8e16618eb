"""The project's Avro schemas (``*.avsc``) and the id table of its local registry (``registry.json``)."""
from pathlib import Path

SCHEMA_DIR: Path = Path(__file__).resolve().parent
