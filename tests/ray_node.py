"""One Ray node for the tests, bound to 127.0.0.1: `python ray_node.py head PORT | worker HEAD:PORT CPUS`.

`ray start` cannot do this: it replaces 127.0.0.1 by the machine's outward address (and its
processes then listen there). Ray's own test clusters (`ray.cluster_utils.Cluster`) start
nodes with `ray._private.node.Node` and an explicit node address, as this script does, one
node per process so that a test can kill a node on its own. Prints `ready` when the node is up
and stops its processes on SIGTERM.
"""
import signal
import sys
import time

from ray._private.node import Node
from ray._private.parameter import RayParams


def main() -> None:
    role, where = sys.argv[1], sys.argv[2]
    cpus = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    kw = {"node_ip_address": "127.0.0.1", "num_cpus": cpus, "num_gpus": 0, "object_store_memory": 80 * 2**20,
          "include_dashboard": False, "dashboard_host": "127.0.0.1", "min_worker_port": 0, "max_worker_port": 0}
    if role == "head":
        kw.update(gcs_server_port=int(where))
    else:
        kw.update(gcs_address=where, include_log_monitor=False, node_manager_port=0)
    node = Node(RayParams(**kw), head=role == "head", shutdown_at_exit=True, spawn_reaper=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # exit runs Ray's atexit: the node's processes stop
    print("ready", node.unique_id, flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
