"""Every GPU test ends by checking fusedrnn's kernel timeout reports (docs/integration.md,
"Kernel timeouts"): a launch that timed out fails the test that made it, also where the test
did not ask for checks (an unchecked launch is otherwise reported only at the next launch)."""
import pytest
import torch


@pytest.fixture(autouse=True)
def no_kernel_timed_out():
    yield
    if torch.cuda.is_available():
        from fusedrnn.ops import timeouts
        torch.cuda.synchronize()
        timeouts.check(block=True)
