"""Linked data: meetnet's sensors, readings and rollups as JSON-LD in the W3C/OGC SOSA/SSN
vocabulary, as the Flemish OSLO application profiles for sensors and observations apply it."""
