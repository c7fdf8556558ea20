"""kubectl-sockdebug: what a pod really listens on, from an ephemeral agent container.

The plugin never parses kernel bytes: it reads the agent's JSON Lines records
(``sockdebug_agent.schema``) and renders them.  Heavy imports (the Kubernetes
client) happen only when a command talks to a cluster.
"""
