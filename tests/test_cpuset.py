"""vllm.cpuset: vLLM's busy-polling workers kept off the cores others need — as a process (affinity set
before exec, inherited by its children), as a container (cpuset_cpus) and in the compose file."""

import os
import sys
import time

import pytest

from migrator.app import api
from migrator.adapters import vllm as vllm_launch
from migrator.adapters import process
from migrator.core.errors import ConfigError


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_a_process_and_its_children_run_on_the_cpus_given(tmp_path):
    first = min(os.sched_getaffinity(0))
    script = "import os, subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']); time.sleep(30)"
    handle = process.start_detached([sys.executable, "-c", script], tmp_path / "log", cpuset=str(first))
    try:
        time.sleep(0.5)
        assert os.sched_getaffinity(handle.pid) == {first}
        children = open(f"/proc/{handle.pid}/task/{handle.pid}/children").read().split()
        assert children and os.sched_getaffinity(int(children[0])) == {first}
    finally:
        process.stop(handle, 2)


def test_the_container_and_the_compose_service_get_the_cpuset(sandbox, cli):
    settings = api.settings_for(sandbox, overrides={"vllm.cpuset": "0-2,5", "vllm.runtime": "docker"})
    assert vllm_launch.container_spec(settings, sandbox)["cpuset_cpus"] == "0-2,5"
    assert process.parse_cpuset("0-2,5") == {0, 1, 2, 5}
    result = cli("--project", str(sandbox), "--set", "vllm.cpuset=0-2,5", "--set",
                 "vllm.runtime=docker", "phase3", "--dry-run")
    assert 'cpuset: "0-2,5"' in result.stdout + result.stderr
    with pytest.raises(ConfigError, match="vllm.cpuset"):
        api.settings_for(sandbox, overrides={"vllm.cpuset": "all"})
