"""One GPU per parallel worker (`sweeps.sweeping.devices`): real processes claim slots; a killed one's slot is taken over."""

import os
import signal
import subprocess
import sys

from sweeps.sweeping import devices

CLAIM = ("import sys; from sweeps.sweeping import devices; print(devices.claim(sys.argv[1], int(sys.argv[2])), flush=True); "
         "sys.stdin.read()")  # holds its slot until its stdin closes


def worker(folder, parallel: int, gpus: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-c", CLAIM, str(folder), str(parallel)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": gpus})
    return proc, proc.stdout.readline().strip()


def test_workers_beside_each_other_see_one_gpu_each_and_a_dead_workers_gpu_goes_to_its_successor(tmp_path):
    procs = []
    try:
        a, gpu_a = worker(tmp_path, 3, "4,6,7")
        b, gpu_b = worker(tmp_path, 3, "4,6,7")
        procs += [a, b]
        assert (gpu_a, gpu_b) == ("4", "6")
        a.send_signal(signal.SIGKILL)  # no clean-up of its own: the kernel releases its lock
        a.wait(timeout=30)
        c, gpu_c = worker(tmp_path, 3, "4,6,7")
        procs.append(c)
        assert gpu_c == "4", "the first free slot: the dead worker's"
        d, gpu_d = worker(tmp_path, 3, "4,6,7")
        procs.append(d)
        assert gpu_d == "7"
        for parallel, gpus, why in ((2, "4", "one GPU: nothing to share out"),
                                    (1, "4,6", "a process that runs its jobs alone sees every GPU")):
            proc, gpu = worker(tmp_path, parallel, gpus)
            procs.append(proc)
            assert gpu == "None", why
    finally:
        for p in procs:
            p.kill()
            p.wait(timeout=30)


def test_the_gpus_come_from_the_variable_and_none_means_none(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0, 2,")
    assert devices.visible() == ["0", "2"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert devices.visible() == []
