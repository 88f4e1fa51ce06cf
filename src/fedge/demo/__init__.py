"""Running a whole federation on one machine: process supervision and link control."""

from fedge.demo.proxy import TcpProxy
from fedge.demo.supervisor import ManagedProcess, Supervisor, fedge_argv

__all__ = ["ManagedProcess", "Supervisor", "TcpProxy", "fedge_argv"]
