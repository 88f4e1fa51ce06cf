"""fedge: federated learning for fleets of edge devices.

Raw data stays on the device; devices train the global model locally and send only clipped,
masked, optionally noised updates; edge gateways sum their site's updates; a cloud coordinator
aggregates them into new signed model versions. ``fedge.simulation`` runs the same maths over
thousands of virtual devices in one process.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
