# the classification input tests' photographs, shared with the GPU checks
from tests.classification.conftest import photos  # noqa: F401
