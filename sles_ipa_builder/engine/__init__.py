"""The engine: the plan of a build, the element tree, and running steps in the target."""
