"""The JSON-LD ``@context`` meetnet serves at ``/ld/context.jsonld``.

Terms map to W3C and OGC vocabularies only: SOSA/SSN (``http://www.w3.org/ns/sosa/``,
``http://www.w3.org/ns/ssn/``), PROV-O, QUDT (``http://qudt.org/schema/qudt/``, units under
``http://qudt.org/vocab/unit/``), OWL-Time, GeoSPARQL, Dublin Core, RDFS and SKOS, plus a few
terms of meetnet's own (``<api>/ld/vocab#``: ``municipality``, ``readingCount``). The modelling
follows the Flemish OSLO work on SSN/SOSA (OSLOthema-SSNSOSA-VL): a measuring point is a
``sosa:Platform`` that is also the ``sosa:FeatureOfInterest`` and a ``sosa:SpatialSample``,
results are ``qudt:numericValue`` + ``qudt:hasUnit``, times are OWL-Time, and derived values
(rollups) are observations with PROV-O provenance. The Dutch term names of the OSLO
application profiles "Sensoren en bemonstering" and "Observaties en metingen" (``Observatie``,
``Observatie.fenomeentijd``, ...) are defined as aliases of the same SOSA IRIs, so documents
written with them expand to the same graph; meetnet does not emit the ISO 19156
``def.isotc211.org`` IRIs of the deprecated OSLO O&M vocabulary, which no longer resolve.
"""

from __future__ import annotations

from typing import Any

SOSA = "http://www.w3.org/ns/sosa/"
SSN = "http://www.w3.org/ns/ssn/"
PROV = "http://www.w3.org/ns/prov#"
QUDT = "http://qudt.org/schema/qudt/"
TIME = "http://www.w3.org/2006/time#"
GEO = "http://www.opengis.net/ont/geosparql#"
XSD = "http://www.w3.org/2001/XMLSchema#"

CONTENT_TYPE = "application/ld+json"


def _id(iri: str) -> dict[str, str]:
    return {"@id": iri, "@type": "@id"}


def context(base: str) -> dict[str, Any]:
    """The context document; ``base`` is the API's URL (meetnet's own terms live under it)."""
    terms: dict[str, Any] = {
        "@version": 1.1,
        "sosa": SOSA,
        "ssn": SSN,
        "prov": PROV,
        "qudt": QUDT,
        "unit": "http://qudt.org/vocab/unit/",
        "time": TIME,
        "geo": GEO,
        "dcterms": "http://purl.org/dc/terms/",
        "rdfs": "http://www.w3.org/2000/01/rdf-schema#",
        "skos": "http://www.w3.org/2004/02/skos/core#",
        "xsd": XSD,
        "meetnet": f"{base}/ld/vocab#",
        "id": "@id",
        "type": "@type",
        # classes
        "Sensor": "sosa:Sensor",
        "Platform": "sosa:Platform",
        "System": "ssn:System",
        "Observation": "sosa:Observation",
        "ObservationCollection": "sosa:ObservationCollection",
        "FeatureOfInterest": "sosa:FeatureOfInterest",
        "SpatialSample": "sosa:SpatialSample",
        "ObservableProperty": "sosa:ObservableProperty",
        "Property": "sosa:Property",
        "Procedure": "sosa:Procedure",
        "Result": "sosa:Result",
        "QuantityValue": "qudt:QuantityValue",
        "Unit": "qudt:Unit",
        "Instant": "time:Instant",
        "Interval": "time:Interval",
        "Geometry": "geo:Geometry",
        "Activity": "prov:Activity",
        "Entity": "prov:Entity",
        "Plan": "prov:Plan",
        "SoftwareAgent": "prov:SoftwareAgent",
        # descriptions
        "label": "rdfs:label",
        "comment": "rdfs:comment",
        "identifier": "dcterms:identifier",
        "seeAlso": _id("rdfs:seeAlso"),
        "exactMatch": _id("skos:exactMatch"),
        # SOSA/SSN relations
        "madeBySensor": _id("sosa:madeBySensor"),
        "observes": _id("sosa:observes"),
        "isHostedBy": _id("sosa:isHostedBy"),
        "hosts": _id("sosa:hosts"),
        "implements": _id("sosa:implements"),
        "usedProcedure": _id("sosa:usedProcedure"),
        "hasOutput": _id("sosa:hasOutput"),
        "observedProperty": _id("sosa:observedProperty"),
        "hasFeatureOfInterest": _id("sosa:hasFeatureOfInterest"),
        "isFeatureOfInterestOf": _id("sosa:isFeatureOfInterestOf"),
        "hasMember": _id("sosa:hasMember"),
        "hasResult": {"@id": "sosa:hasResult"},
        "hasSimpleResult": {"@id": "sosa:hasSimpleResult", "@type": "xsd:double"},
        "resultTime": {"@id": "sosa:resultTime", "@type": "xsd:dateTime"},
        "phenomenonTime": {"@id": "sosa:phenomenonTime"},
        # QUDT
        "numericValue": {"@id": "qudt:numericValue", "@type": "xsd:double"},
        "hasUnit": _id("qudt:hasUnit"),
        "ucumCode": {"@id": "qudt:ucumCode", "@type": "qudt:UCUMcs"},
        "symbol": "qudt:symbol",
        # OWL-Time
        "inXSDDateTimeStamp": {"@id": "time:inXSDDateTimeStamp", "@type": "xsd:dateTimeStamp"},
        "hasBeginning": {"@id": "time:hasBeginning"},
        "hasEnd": {"@id": "time:hasEnd"},
        # GeoSPARQL (WKT in CRS84: lon lat)
        "hasGeometry": {"@id": "geo:hasGeometry"},
        "asWKT": {"@id": "geo:asWKT", "@type": "geo:wktLiteral"},
        # PROV-O
        "wasDerivedFrom": _id("prov:wasDerivedFrom"),
        "wasGeneratedBy": {"@id": "prov:wasGeneratedBy"},
        "wasAssociatedWith": _id("prov:wasAssociatedWith"),
        "used": _id("prov:used"),
        "startedAtTime": {"@id": "prov:startedAtTime", "@type": "xsd:dateTime"},
        # meetnet's own
        "municipality": "meetnet:municipality",
        "readingCount": {"@id": "meetnet:readingCount", "@type": "xsd:integer"},
        "statistic": "meetnet:statistic",
        "nextPage": _id("meetnet:nextPage"),
        # OSLO application-profile names (Dutch) of the same SOSA terms
        "Observatie": "sosa:Observation",
        "Observatie.fenomeentijd": {"@id": "sosa:phenomenonTime"},
        "Observatie.resultaatTijd": {"@id": "sosa:resultTime", "@type": "xsd:dateTime"},
        "Observatie.geobserveerdKenmerk": _id("sosa:observedProperty"),
        "Observatie.geobserveerdObject": _id("sosa:hasFeatureOfInterest"),
        "Observatie.gebruikteProcedure": _id("sosa:usedProcedure"),
        "Observatie.uitgevoerdMetSensor": _id("sosa:madeBySensor"),
        "Observatie.resultaat": {"@id": "sosa:hasResult"},
        "Observatie.simpelResultaat": {"@id": "sosa:hasSimpleResult", "@type": "xsd:double"},
        "Sensor.implementeert": _id("sosa:implements"),
        "Observatieprocedure": "sosa:Procedure",
    }
    return {"@context": terms}
