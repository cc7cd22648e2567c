"""The OGC SensorThings API v1.1 (OGC 18-088) over meetnet's registry and readings."""
