"""The compiled parts; everything else is in pyproject.toml.

The scorer's per-token loop, the ASCII text normaliser and the result encoder, each optional at run time
(without them fastText scores, Python normalises and encodes). Plain CPython API, no numpy headers; default
flags and never -ffast-math (float32 addition order is the result). An extension is declared only when its
source is present: each image copies only the packages it runs.
"""

from pathlib import Path

from setuptools import Extension, setup

SOURCES = {
    "sentiment_model._fastlinear": "sentiment_model/_fastlinear.c",
    "sentiment_model._fastnormalize": "sentiment_model/_fastnormalize.c",
    "worker._fastbatch": "worker/_fastbatch.c",
}

setup(ext_modules=[Extension(name, [source]) for name, source in SOURCES.items() if Path(source).is_file()])
