from tasks import ns  # noqa: F401  (fab looks for "fabfile": same collection as inv)
