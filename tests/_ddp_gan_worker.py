"""One rank of tests/test_gan_penalty.py::test_ddp_matches_single_process (run by subprocess).

argv: rank world_size port out_file method. Rank r trains on its half of a fixed batch
with the critic wrapped in DistributedDataParallel (gloo, CPU) and saves its gradients.
"""

import os
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_gan_penalty import critic_step_grads, ddp_setup  # noqa: E402


def main():
    rank, world, port, out, method = sys.argv[1:6]
    rank, world = int(rank), int(world)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        D, real, fake, alpha = ddp_setup()
        shard = slice(rank * real.shape[0] // world, (rank + 1) * real.shape[0] // world)
        ddp = torch.nn.parallel.DistributedDataParallel(D)
        grads = critic_step_grads(ddp, D, real[shard], fake[shard], alpha[shard], method)
        torch.save(grads, out)
        # Neither rank tears gloo down while the other still talks to it: without this a
        # rank could die at exit with "terminate called without an active exception".
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
