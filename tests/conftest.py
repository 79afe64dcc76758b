import os

import torch

# Without a GPU, Triton kernels run on the CPU interpreter; set before triton is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
