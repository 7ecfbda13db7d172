"""Croissant 1.0 (JSON-LD) description of a built region: files, file sets and record sets.

* ``FileObject`` per shard (``contentUrl`` on the Hub, ``contentSize``, ``sha256`` from the shard index)
  and per metadata Parquet file (sha256 computed here);
* ``FileSet`` per modality and member kind: the ``*.<field>.npy`` / ``*.json`` members inside that
  modality's tars (``containedIn`` its shards);
* ``RecordSet`` ``chips`` (``metadata/chips.parquet``); per modality ``<modality>`` (its index
  ``metadata/<modality>.parquet``: split, availability, shard) and one record set per member kind,
  ``<modality>/<field>.npy`` and ``<modality>/json``: the chip id (from the member's file name) and the
  member's bytes. Each record set reads one source; chip ids reference the record set above
  (member -> modality -> chips), the joins a reader makes to assemble a sample.
"""

from __future__ import annotations

import hashlib
import json

from builders.chip import CHIP_ID
from dataset_cards.about import CITATION, DATE_PUBLISHED, PAPER, VERSION, license_url
from dataset_cards.features import column
from dataset_cards.summary import ModalitySummary, RegionSummary

# The Croissant 1.0 @context exactly as mlcroissant and the official 1.0 example datasets write it.
CONTEXT = {
    "@language": "en", "@vocab": "https://schema.org/", "citeAs": "cr:citeAs", "column": "cr:column",
    "conformsTo": "dct:conformsTo", "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/", "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"}, "dct": "http://purl.org/dc/terms/",
    "equivalentProperty": "cr:equivalentProperty", "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract", "field": "cr:field", "fileProperty": "cr:fileProperty", "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet", "format": "cr:format", "includes": "cr:includes", "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath", "key": "cr:key", "md5": "cr:md5", "parentField": "cr:parentField", "path": "cr:path",
    "recordSet": "cr:recordSet", "references": "cr:references", "regex": "cr:regex", "repeated": "cr:repeated",
    "replace": "cr:replace", "samplingRate": "cr:samplingRate", "sc": "https://schema.org/",
    "separator": "cr:separator", "source": "cr:source", "subField": "cr:subField", "transform": "cr:transform",
}
CONFORMS_TO = "http://mlcommons.org/croissant/1.0"
TAR, NPY, JSON, PARQUET = "application/x-tar", "application/x-npy", "application/json", "application/x-parquet"
# The chip id at the start of a member's file name (<chipid>.<field>.npy, <chipid>.json); idempotent, as
# mlcroissant applies a join key's transform again when reading the record.
MEMBER_CHIP_ID = rf"^({CHIP_ID.pattern.strip('^$')})(?:\.|$)"
CHIP_COLUMNS = {"chip_id": "sc:Text", "region": "sc:Text", "split": "sc:Text", "lon": "sc:Float", "lat": "sc:Float",
                "west": "sc:Float", "south": "sc:Float", "east": "sc:Float", "north": "sc:Float",
                "area_km2": "sc:Float"}
MODALITY_COLUMNS = {"chip_id": "sc:Text", "split": "sc:Text", "available": "sc:Boolean",
                    "missing_reason": "sc:Text", "shard": "sc:Text"}


def croissant(summary: RegionSummary, repo_id: str, license: str | None = None) -> bytes:
    """The region's ``croissant.json`` (UTF-8, keys in a fixed order); ``license`` only when declared."""
    base = f"https://huggingface.co/datasets/{repo_id}"
    record_sets = [_chips_record_set(summary)]
    for modality in summary.modalities:
        record_sets += _modality_record_sets(modality)
    document = {
        "@context": CONTEXT, "@type": "sc:Dataset", "conformsTo": CONFORMS_TO,
        "name": f"M3LEO-{summary.region}",
        "description": (f"M3LEO region {summary.region}: {summary.total_chips} chips, "
                        f"{len(summary.modalities)} modalities as aligned WebDataset shards with Parquet metadata."),
        "url": base, **({"license": license_url(license)} if license else {}), "citeAs": CITATION, "sameAs": PAPER,
        "datePublished": DATE_PUBLISHED, "version": VERSION,
        "distribution": _distribution(summary, base), "recordSet": record_sets,
    }
    return (json.dumps(document, indent=1, ensure_ascii=False) + "\n").encode()


def _distribution(summary: RegionSummary, base: str) -> list[dict]:
    files = []
    for name in ["chips"] + [m.name for m in summary.modalities]:
        path = f"metadata/{name}.parquet"
        data = (summary.root / path).read_bytes()
        files.append(_file_object(path, base, len(data), hashlib.sha256(data).hexdigest(), PARQUET))
    for modality in summary.modalities:
        shards = [_file_object(s.url, base, s.filesize, s.sha256, TAR) for s in modality.shards]
        contained = [{"@id": s["@id"]} for s in shards]
        files += shards
        files += [_file_set(_members(modality, column(f.name)), contained, NPY) for f in modality.fields]
        files.append(_file_set(_members(modality, "json"), contained, JSON))
    return files


def _members(modality: ModalitySummary, suffix: str) -> str:
    """Id of the FileSet of ``*.<suffix>`` members in the modality's shards."""
    return f"{modality.name}/*.{suffix}"


def _file_object(path: str, base: str, size: int, sha256: str, encoding: str) -> dict:
    return {"@type": "cr:FileObject", "@id": path, "name": path, "contentUrl": f"{base}/resolve/main/{path}",
            "contentSize": f"{size} B", "encodingFormat": encoding, "sha256": sha256}


def _file_set(set_id: str, contained: list[dict], encoding: str) -> dict:
    return {"@type": "cr:FileSet", "@id": set_id, "name": set_id, "containedIn": contained,
            "encodingFormat": encoding, "includes": set_id.split("/", 1)[1]}


def _field(record_set: str, name: str, data_type: str, source: dict, references: str | None = None,
           description: str | None = None) -> dict:
    field = {"@type": "cr:Field", "@id": f"{record_set}/{name}", "name": name}
    if description:
        field["description"] = description
    if references:
        field["references"] = {"field": {"@id": references}}
    return field | {"dataType": data_type, "source": source}


def _parquet_record_set(name: str, columns: dict[str, str], description: str, references: str | None) -> dict:
    """Record set over ``metadata/<name>.parquet``, keyed by ``chip_id`` (referencing ``references``)."""
    fields = [_field(name, column_name, kind,
                     {"fileObject": {"@id": f"metadata/{name}.parquet"}, "extract": {"column": column_name}},
                     references if column_name == "chip_id" else None)
              for column_name, kind in columns.items()]
    return {"@type": "cr:RecordSet", "@id": name, "name": name, "description": description,
            "key": {"@id": f"{name}/chip_id"}, "field": fields}


def _chips_record_set(summary: RegionSummary) -> dict:
    columns = dict(CHIP_COLUMNS) | {f"has_{m.name}": "sc:Boolean" for m in summary.modalities}
    return _parquet_record_set("chips", columns, "One record per chip: geometry (EPSG:4326), split and "
                               "per-modality availability.", references=None)


def _modality_record_sets(modality: ModalitySummary) -> list[dict]:
    """The modality's index record set, then one per member kind (``<field>.npy`` ..., ``json``)."""
    name = modality.name
    record_sets = [_parquet_record_set(
        name, MODALITY_COLUMNS, f"{modality.modality.description}. One record per chip of the region: split, "
        "whether the chip has data, why not, and the shard holding its sample.", references="chips/chip_id")]
    for field in modality.fields:
        dims = ", ".join(field.description.get("dims", [])) or "no named dims"
        record_sets.append(_member_record_set(
            modality, column(field.name), NPY,
            f"The {field.name} array of each available chip: a .npy file (numpy.load) of dtype {field.dtype}, "
            f"dims ({dims}), shape from {list(field.min_shape)} to {list(field.max_shape)}."))
    record_sets.append(_member_record_set(
        modality, "json", JSON, "Each chip's sample metadata (availability, bounds, CRS, affine transform, "
        "field descriptions, labels, source file): a UTF-8 JSON document."))
    return record_sets


def _member_record_set(modality: ModalitySummary, suffix: str, encoding: str, description: str) -> dict:
    """Record set over the ``*.<suffix>`` members: chip id (file name) and the member's bytes."""
    record_set, file_set = f"{modality.name}/{suffix}", {"fileSet": {"@id": _members(modality, suffix)}}
    fields = [
        _field(record_set, "chip_id", "sc:Text",
               {**file_set, "extract": {"fileProperty": "filename"}, "transform": {"regex": MEMBER_CHIP_ID}},
               references=f"{modality.name}/chip_id"),
        _field(record_set, "content", "sc:Text", {**file_set, "extract": {"fileProperty": "content"}},
               description=f"Bytes of the member ({encoding})."),
    ]
    return {"@type": "cr:RecordSet", "@id": record_set, "name": record_set, "description": description,
            "key": {"@id": f"{record_set}/chip_id"}, "field": fields}
