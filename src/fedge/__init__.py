"""fedge: federated learning for fleets of edge devices."""
