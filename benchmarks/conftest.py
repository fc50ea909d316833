"""pytest-benchmark suites: small, fast versions of `llmscratch bench` (about a minute in all).

pytest benchmarks/ --benchmark-only
"""

from __future__ import annotations

import pytest

from llmscratch.backends import get_backend
from llmscratch.util.errors import BackendError


@pytest.fixture(params=["numpy", "torch"])
def bk(request):
    try:
        return get_backend(request.param)
    except BackendError as e:
        pytest.skip(str(e))
