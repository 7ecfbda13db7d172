"""Facts about M3LEO shared by the card and the Croissant file: licence, citation, version, date."""

LICENSE = "cc-by-4.0"
LICENSE_URL = "https://creativecommons.org/licenses/by/4.0/"
PAPER = "https://arxiv.org/abs/2406.04230"
CITATION = """@inproceedings{allen2024m3leo,
  title     = {{M3LEO}: A Multi-Modal, Multi-Label Earth Observation Dataset Integrating Interferometric {SAR} and Multispectral Data},
  author    = {Allen, Matt and Dorr, Francisco and Gallego-Mejia, Joseph A. and Mart{\\'\\i}nez-Ferrer, Laura and Jungbluth, Anna and Kalaitzis, Freddie and Ramos-Poll{\\'a}n, Ra{\\'u}l},
  booktitle = {Advances in Neural Information Processing Systems 37 (NeurIPS 2024), Datasets and Benchmarks Track},
  year      = {2024},
  eprint    = {2406.04230},
  archivePrefix = {arXiv}
}"""
VERSION = "1.0.0"  # this WebDataset release of the data
DATE_PUBLISHED = "2024-09-26"  # the paper's publication at NeurIPS 2024 (OpenReview li3iFfkwRL)
