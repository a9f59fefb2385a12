import os
import subprocess
import sys

import pytest

from llmjax import hostenv

SUPPORTED = hostenv.huge_page_tunables({}) is not None


def test_tunable_is_added_once_and_kept_with_others():
  assert hostenv.huge_page_tunables({"GLIBC_TUNABLES": hostenv.TUNABLE}) is None
  assert hostenv.huge_page_tunables({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}) is None
  assert hostenv.huge_page_tunables({hostenv.OPT_OUT: "0"}) is None
  if SUPPORTED:
    assert hostenv.huge_page_tunables({}) == hostenv.TUNABLE
    assert (hostenv.huge_page_tunables({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
            == "glibc.malloc.arena_max=2:" + hostenv.TUNABLE)


SCRIPT = """
import os, sys
from llmjax import hostenv
hostenv.reexec_with_huge_page_malloc()
print(os.environ.get("GLIBC_TUNABLES"), sys.argv[1:], os.getpid())
"""


@pytest.mark.skipif(not SUPPORTED, reason="needs Linux, glibc >= 2.35 and transparent huge "
                    "pages (madvise or always)")
@pytest.mark.parametrize("opt_out", [False, True])
def test_entry_point_runs_again_with_the_tunable_and_same_arguments(opt_out, tmp_path):
  env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", hostenv.OPT_OUT)}
  if opt_out:
    env[hostenv.OPT_OUT] = "0"
  script = tmp_path / "entry.py"
  script.write_text(SCRIPT)
  proc = subprocess.Popen([sys.executable, str(script), "x", "--flag=a b"], env=env,
                          stdout=subprocess.PIPE, text=True,
                          cwd=os.path.dirname(os.path.dirname(hostenv.__file__)))
  out = proc.communicate(timeout=60)[0]
  assert proc.returncode == 0
  expected = "None" if opt_out else hostenv.TUNABLE
  # Same arguments, same process (exec replaces the image, not the pid a launcher waits on).
  assert out.split() == [expected, "['x',", "'--flag=a", "b']", str(proc.pid)], out
