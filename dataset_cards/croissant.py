"""Croissant 1.0 (JSON-LD) description of a built region: files, file sets and record sets.

* ``FileObject`` per shard (``contentUrl`` on the Hub, ``contentSize``, ``sha256`` from the shard index)
  and per metadata Parquet file (sha256 computed here);
* ``FileSet`` per modality and member kind: the ``*.<field>.npy`` / ``*.json`` members inside that
  modality's tars (``containedIn`` its shards);
* ``RecordSet`` ``chips`` (columns of ``metadata/chips.parquet``) and one per modality whose fields are
  the chip id, the availability flag (from the JSON member) and every array field (``.npy`` content).
"""

from __future__ import annotations

import hashlib
import json

from dataset_cards.about import CITATION, LICENSE_URL, PAPER
from dataset_cards.features import column
from dataset_cards.summary import ModalitySummary, RegionSummary

CONTEXT = {
    "@language": "en", "@vocab": "https://schema.org/", "sc": "https://schema.org/",
    "cr": "http://mlcommons.org/croissant/", "rai": "http://mlcommons.org/croissant/RAI/",
    "dct": "http://purl.org/dc/terms/", "citeAs": "cr:citeAs", "column": "cr:column",
    "conformsTo": "dct:conformsTo", "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"}, "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract", "field": "cr:field", "fileProperty": "cr:fileProperty", "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet", "format": "cr:format", "includes": "cr:includes", "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath", "key": "cr:key", "md5": "cr:md5", "parentField": "cr:parentField", "path": "cr:path",
    "recordSet": "cr:recordSet", "references": "cr:references", "regex": "cr:regex", "repeated": "cr:repeated",
    "replace": "cr:replace", "separator": "cr:separator", "source": "cr:source", "subField": "cr:subField",
    "transform": "cr:transform",
}
CONFORMS_TO = "http://mlcommons.org/croissant/1.0"
TAR, NPY, JSON, PARQUET = "application/x-tar", "application/x-npy", "application/json", "application/x-parquet"
CHIP_COLUMNS = {"chip_id": "sc:Text", "region": "sc:Text", "split": "sc:Text", "lon": "sc:Float", "lat": "sc:Float",
                "west": "sc:Float", "south": "sc:Float", "east": "sc:Float", "north": "sc:Float",
                "area_km2": "sc:Float"}


def croissant(summary: RegionSummary, repo_id: str) -> bytes:
    """The region's ``croissant.json`` (UTF-8, keys in a fixed order)."""
    base = f"https://huggingface.co/datasets/{repo_id}"
    document = {
        "@context": CONTEXT, "@type": "sc:Dataset", "conformsTo": CONFORMS_TO,
        "name": f"M3LEO-{summary.region}",
        "description": (f"M3LEO region {summary.region}: {summary.total_chips} chips, "
                        f"{len(summary.modalities)} modalities as aligned WebDataset shards with Parquet metadata."),
        "url": base, "license": LICENSE_URL, "citeAs": CITATION, "sameAs": PAPER,
        "distribution": _distribution(summary, base),
        "recordSet": [_chips_record_set(summary)] + [_modality_record_set(m) for m in summary.modalities],
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
        files += [_file_set(f"{modality.name}/{f.name}.npy", contained, NPY, f"*.{column(f.name)}")
                  for f in modality.fields]
        files.append(_file_set(f"{modality.name}/json", contained, JSON, "*.json"))
    return files


def _file_object(path: str, base: str, size: int, sha256: str, encoding: str) -> dict:
    return {"@type": "cr:FileObject", "@id": path, "name": path, "contentUrl": f"{base}/resolve/main/{path}",
            "contentSize": f"{size} B", "encodingFormat": encoding, "sha256": sha256}


def _file_set(set_id: str, contained: list[dict], encoding: str, includes: str) -> dict:
    return {"@type": "cr:FileSet", "@id": set_id, "name": set_id, "containedIn": contained,
            "encodingFormat": encoding, "includes": includes}


def _chips_record_set(summary: RegionSummary) -> dict:
    columns = dict(CHIP_COLUMNS) | {f"has_{m.name}": "sc:Boolean" for m in summary.modalities}
    fields = [{"@type": "cr:Field", "@id": f"chips/{name}", "name": name, "dataType": kind,
               "source": {"fileObject": {"@id": "metadata/chips.parquet"}, "extract": {"column": name}}}
              for name, kind in columns.items()]
    return {"@type": "cr:RecordSet", "@id": "chips", "name": "chips", "key": {"@id": "chips/chip_id"},
            "description": "One record per chip: geometry (EPSG:4326), split and per-modality availability.",
            "field": fields}


def _modality_record_set(modality: ModalitySummary) -> dict:
    name = modality.name
    json_source = {"fileSet": {"@id": f"{name}/json"}}
    fields = [
        {"@type": "cr:Field", "@id": f"{name}/chip_id", "name": "chip_id", "dataType": "sc:Text",
         "references": {"field": {"@id": "chips/chip_id"}},
         "source": {**json_source, "extract": {"jsonPath": "$.chip_id"}}},
        {"@type": "cr:Field", "@id": f"{name}/available", "name": "available", "dataType": "sc:Boolean",
         "source": {**json_source, "extract": {"jsonPath": "$.available"}}},
    ]
    for field in modality.fields:
        dims = ", ".join(field.description.get("dims", [])) or "no named dims"
        fields.append({
            "@type": "cr:Field", "@id": f"{name}/{field.name}", "name": field.name,
            "description": (f".npy array, dtype {field.dtype}, dims ({dims}), shape from {list(field.min_shape)} "
                            f"to {list(field.max_shape)}; absent when available is false."),
            "dataType": "sc:Float" if field.dtype.startswith("float") else
                        "sc:Boolean" if field.dtype == "bool" else "sc:Integer",
            "repeated": True,
            "source": {"fileSet": {"@id": f"{name}/{field.name}.npy"}, "extract": {"fileProperty": "content"}},
        })
    return {"@type": "cr:RecordSet", "@id": name, "name": name, "key": {"@id": f"{name}/chip_id"},
            "description": modality.modality.description, "field": fields}
