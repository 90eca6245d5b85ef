"""Shared fixtures of the Python module's tests (tests/python, CTest `python_api`).

Paths come from the environment CTest sets, with the build tree's defaults for a run by hand
(`PYTHONPATH=build/python python3 -m pytest -q tests/python` from the repository root):
TESSERA_DEMO_MODEL (models/demo-dates), TESSERA_API_MODELS (build/tests/api_models: gpt2/ and
bert/ written by tests/api/make_api_models.py), TESSERA_CLI (build/tools/tessera).
"""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import tessera  # noqa: E402  (PYTHONPATH=<build>/python)

DEMO = os.environ.get("TESSERA_DEMO_MODEL", os.path.join(ROOT, "models", "demo-dates"))
API_MODELS = os.environ.get("TESSERA_API_MODELS", os.path.join(ROOT, "build", "tests", "api_models"))
CLI = os.environ.get("TESSERA_CLI", os.path.join(ROOT, "build", "tools", "tessera"))
GPT2 = os.path.join(API_MODELS, "gpt2")
BERT = os.path.join(API_MODELS, "bert")


def _need(path):
    if not os.path.exists(os.path.join(path, "config.json")):
        pytest.fail(f"{path} has no config.json (CTest's fixture api_models writes it; by hand: "
                    f"tests/api/make_api_models.py {API_MODELS})")
    return path


# One model object per family for the whole run (loading packs the weights); the tests that
# check loading itself make their own.
@pytest.fixture(scope="session")
def demo():
    return tessera.Model(_need(DEMO), threads=2)


@pytest.fixture(scope="session")
def gpt2():
    return tessera.Model(_need(GPT2), threads=2)


@pytest.fixture(scope="session")
def bert():
    return tessera.Model(_need(BERT), threads=2)
