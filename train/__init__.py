"""sonolive training: the CNet detector (sonolive-cnet/1), data, export."""

import os

# Debian's torch links the pthread OpenBLAS, whose own thread pool ignores
# torch.set_num_threads and spins on idle cores. Cap it before numpy/torch
# load it; train.train.set_threads() adjusts it again from --threads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", os.environ.get("SONOLIVE_THREADS", "2"))
