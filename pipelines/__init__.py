"""Pipeline definitions over the components, their local runs, compilation and submission."""
