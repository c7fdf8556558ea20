"""Through the user's kubectl, where it is the faster door: a warm query's execs and
completion's name lists.  kubectl is on PATH under ``kubectl sockdebug`` (it runs the
plugin and its completion), speaks every auth plugin the user has, and starts in a
fraction of the Python client's import time.  ``ClientExec`` is the same door through
the Python client, for when kubectl is not on PATH.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from typing import Any, Optional

from . import kube
from .errors import AccessError
from .kube import ExecChannel, Forbidden, Kube, NotFound, deadline_error


def find_kubectl() -> Optional[str]:
    """kubectl on PATH, as the shell finds it (shutil.which, without shutil's imports)."""
    for folder in os.get_exec_path():
        path = os.path.join(folder, "kubectl")
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def kubectl_connection(kubeconfig: Optional[str], context: Optional[str],
                       namespace: Optional[str] = None) -> list[str]:
    """kubectl's flags for the connection the user typed (nothing: kubectl's defaults)."""
    return [f"{flag}={value}" for flag, value in (("--kubeconfig", kubeconfig), ("--context", context),
                                                  ("--namespace", namespace)) if value is not None]


def kubectl_words(kubeconfig: Optional[str], context: Optional[str], namespace: Optional[str], *args: str,
                  timeout: float = 5) -> Optional[list[str]]:
    """The words ``kubectl ARGS`` prints, or None when kubectl is missing, slow or refused."""
    import subprocess

    kubectl = find_kubectl()
    if kubectl is None:
        return None
    try:
        proc = subprocess.run([kubectl, *kubectl_connection(kubeconfig, context, namespace), *args,
                               f"--request-timeout={timeout:g}s"], capture_output=True, text=True,
                              timeout=timeout + 2, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.split() if proc.returncode == 0 else None


class ClientExec:
    """Execs for an offline ``Runner`` through the Python client, when kubectl is not on
    PATH: the client must be imported and connected first, so nothing starts early, but
    no pod is read either."""

    def __init__(self, kubeconfig: Optional[str], context: Optional[str], namespace: Optional[str]):
        self.conn = (kubeconfig, context, namespace)
        self._kube: Optional[Kube] = None
        self._lock = threading.Lock()

    def prestart(self, namespace: str, pod: str, container: str, command: list[str]) -> None:
        pass

    def kube(self) -> Kube:
        """The client, connected on first use (by an exec or the peer lists, whichever comes first)."""
        with self._lock:
            if self._kube is None:
                self._kube = kube.connect(*self.conn)  # looked up now: a test may replace it
            return self._kube

    def exec(self, namespace: str, pod: str, container: str, command: list[str], stdin: bool = False
             ) -> ExecChannel:
        return self.kube().exec(namespace, pod, container, command, stdin)

    def close(self) -> None:
        pass


class KubectlExec:
    """Execs for an offline ``Runner``: one ``kubectl exec`` process each, possibly
    started ahead (``prestart``) and handed out when the runner asks for the same exec."""

    def __init__(self, kubectl: str, kubeconfig: Optional[str] = None, context: Optional[str] = None):
        self.base = [kubectl, *kubectl_connection(kubeconfig, context)]
        self._started: dict[tuple[str, ...], KubectlChannel] = {}
        self._lock = threading.Lock()

    def _spawn(self, namespace: str, pod: str, container: str, command: list[str],
               stdin: bool = False) -> KubectlChannel:
        import subprocess

        # With stdin, kubectl gets a session of its own: the terminal's Ctrl-C is for the
        # plugin, which stops the agent through stdin and reads on to its end.
        return KubectlChannel(subprocess.Popen(
            [*self.base, "-n", namespace, "exec", *(["-i"] if stdin else []), pod, "-c", container, "--", *command],
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=stdin))

    def prestart(self, namespace: str, pod: str, container: str, command: list[str]) -> None:
        self._started[(namespace, pod, container, *command)] = self._spawn(namespace, pod, container, command)

    def exec(self, namespace: str, pod: str, container: str, command: list[str], stdin: bool = False
             ) -> KubectlChannel:
        if stdin:  # never prestarted
            return self._spawn(namespace, pod, container, command, stdin)
        with self._lock:
            started = self._started.pop((namespace, pod, container, *command), None)
        return started or self._spawn(namespace, pod, container, command)

    def close(self) -> None:
        """End the execs nobody asked for (the run took another turn)."""
        with self._lock:
            left, self._started = list(self._started.values()), {}
        for channel in left:
            channel.close()


class KubectlChannel:
    """stdout of ``kubectl exec`` as it arrives; stderr and the exit code after.  A kubectl
    that exits non-zero before any output could not reach the agent: ``NotFound``."""

    def __init__(self, proc: Any):
        self.proc = proc
        self.stderr = b""

    def chunks(self, deadline: float) -> Iterator[bytes]:
        import selectors

        proc, got = self.proc, False
        assert proc.stdout is not None and proc.stderr is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            sel.register(proc.stderr, selectors.EVENT_READ)
            while sel.get_map():
                left = deadline - time.monotonic()
                if left <= 0:
                    self.close()
                    raise deadline_error()
                for ready, _ in sel.select(min(left, 5.0)):
                    data = os.read(ready.fd, 65536)
                    if not data:
                        sel.unregister(ready.fileobj)
                    elif ready.fileobj is proc.stdout:
                        got = True
                        yield data
                    else:
                        self.stderr += data
        proc.wait()
        if proc.returncode and not got:
            last = (self.stderr.decode("utf-8", "replace").strip().splitlines() or ["no output"])[-1]
            raise NotFound(f"kubectl exec failed: {last[:200]}", None)

    @property
    def returncode(self) -> Optional[int]:
        return self.proc.returncode

    def stop(self) -> None:
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.write(b"\n")
                self.proc.stdin.close()
        except OSError:  # kubectl has ended: so has the stream
            pass

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:  # stdin's last byte could not be flushed: kubectl is gone
                    pass


class KubectlGet:
    """One ``kubectl get --raw PATH`` started now and read later: a GET that costs a warm
    query no client import.  ``result()`` is the decoded answer, or raises ``Forbidden``
    (kubectl says "Forbidden") or ``AccessError``; ``cancel()`` ends it unread."""

    def __init__(self, kubectl: str, kubeconfig: Optional[str], context: Optional[str], path: str,
                 timeout: float = 30):
        import subprocess

        self.path = path
        self.proc = subprocess.Popen([kubectl, *kubectl_connection(kubeconfig, context), "get", "--raw", path,
                                      f"--request-timeout={timeout:g}s"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def result(self) -> Any:
        out, err = self.proc.communicate()
        if self.proc.returncode == 0:
            return json.loads(out)
        message = err.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
        if "forbidden" in message[0].lower():
            raise Forbidden("get", self.path, None, message[0][:300])
        raise AccessError(f"kubectl get --raw {self.path} failed: {message[0][:300]}", "")

    def cancel(self) -> None:
        """End it if it still runs (whoever waits in ``result`` reaps it)."""
        if self.proc.poll() is None:
            self.proc.kill()
