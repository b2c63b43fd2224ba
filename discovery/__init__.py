"""arrowmesh control plane: where services are and which endpoint to pick (issue 5 onward)."""

__all__: list[str] = []
