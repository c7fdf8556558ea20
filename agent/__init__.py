"""sockdebug agent: ss-grade socket, route and limit inspection streamed as JSON Lines.

Standard library (plus psutil off Linux) only: this package runs inside the
agent image and must never import the plugin or the Kubernetes client.
"""

__version__ = "0.1.0"
