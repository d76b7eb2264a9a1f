"""What the tests, the bench and the soak share: stacks, servers, keys, the test codec, checks.

Outside `tests/` so that the bench and the soak never import the tests; the tests may
import this and the bench. A test keeps the folders free of import cycles
(tests/common/test_layout.py).
"""
