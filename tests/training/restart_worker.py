"""A rank for test_a_restarted_group_never_reads_the_killed_attempts_addresses: attempt 0's
rank 1 dies after joining; in attempt 1, rank 0 comes late, so rank 1 looks for rank 0's
address before rank 0 has written it (as a slow rank on a loaded machine does)."""

import os
import signal
import sys
import time
from pathlib import Path

import torch

from frugalml.training import ddp

restart, rank = int(os.environ["TORCHELASTIC_RESTART_COUNT"]), int(os.environ["RANK"])
if restart == 1 and rank == 0:
    time.sleep(2)  # the fault being tested: this rank is late, not a wait for a condition
dist = ddp.init_process_group()
total = torch.ones(1)
dist.all_reduce(total)
Path(sys.argv[1], f"{restart}-{rank}").write_text(str(total.item()))
if restart == 0 and rank == 1:
    os.kill(os.getpid(), signal.SIGKILL)
dist.barrier()
dist.destroy_process_group()
