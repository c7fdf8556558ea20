# sockdebug agent image: the agent, psutil and a trimmed Python runtime on an
# empty (scratch) root — no shell, no package manager.
#
#   make image                      # wheels built on the host, then this file
#   docker build .                  # with a registry: python:3.11-slim-bookworm
#   docker build --build-arg BASE_IMAGE=sockdebug-base:bookworm \
#       --build-arg VERSION=0.1.0 .  # offline: base from scripts/build-base-image
#
# Wheels: when the build context has dist/sockdebug-$VERSION-*.whl (plus a
# matching psutil wheel, and optionally a pip wheel for bases without pip) they
# are installed with `pip install --no-index` — no network at all.  Without
# them the agent is built from the sources in the context, which needs PyPI.
# See docs/image.md.

ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ARG VERSION=0.1.0
LABEL sockdebug.stage=build
COPY . /src/

# 1. Install the agent distribution (no plugin extra: no typer, no kubernetes
#    client) and psutil into a staging root, then drop the plugin package.
RUN set -eu; \
    cd /src; \
    if ls dist/sockdebug-"$VERSION"-*.whl >/dev/null 2>&1; then \
      echo "build: installing sockdebug $VERSION from the wheels in dist/ (--no-index)"; \
      set -- --no-index --find-links /src/dist; \
    else \
      echo "build: no dist/sockdebug-$VERSION-*.whl in the context, building from source (needs PyPI)"; \
      python3 -m pip --version >/dev/null 2>&1 || { \
        echo "build: this base has no pip either: run 'make image' (or scripts/build-images wheels) first" >&2; \
        exit 1; }; \
      python3 -m pip wheel --no-deps --no-cache-dir -w /tmp/wheels /src; \
      set -- --find-links /tmp/wheels; \
    fi; \
    pip_whl=$(ls dist/pip-*.whl 2>/dev/null | sort -V | tail -n 1 || true); \
    if [ -n "$pip_whl" ]; then pip="python3 /src/$pip_whl/pip"; else pip="python3 -m pip"; fi; \
    $pip install --root /staging --no-compile --no-warn-script-location --break-system-packages \
        --disable-pip-version-check --no-cache-dir "$@" "sockdebug==$VERSION"; \
    test -x /staging/usr/local/bin/sockdebug-agent; \
    # The distribution also carries the kubectl plugin package: not needed here.
    rm -rf /staging/usr/local/lib/python3*/*-packages/sockdebug_plugin; \
    ls -d /staging/usr/local/lib/python3*/*-packages/sockdebug_agent

# 2. Assemble the runtime root: interpreter, its shared libraries (found with
#    ldd, cached with ldconfig), the standard library minus tests/GUI/build
#    tooling and the modules that drag in big libraries the agent never uses
#    (ssl/_hashlib: OpenSSL; nis: Kerberos; sqlite, dbm, curses, readline;
#    hashlib keeps its built-in algorithms), the staged packages; bytecode
#    compiled ahead of time with unchecked hashes so nothing is ever written
#    or re-validated at start.
RUN set -eu; \
    py=$(python3 -c 'import os, sys; print(os.path.realpath(sys.executable))'); \
    pyver=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
    stdlib=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])'); \
    dynload=$(python3 -c 'import sysconfig; print(sysconfig.get_config_var("DESTSHARED"))'); \
    mkdir -p /rootfs/etc /rootfs/tmp /rootfs/proc /rootfs/dev /rootfs/sys; chmod 1777 /rootfs/tmp; \
    cp -a /staging/. /rootfs/; \
    cp -a --parents "$py" /rootfs/; \
    for l in "$(dirname "$py")/python3" "$(dirname "$py")/python"; do \
      if [ -L "$l" ]; then cp -a --parents "$l" /rootfs/; fi; \
    done; \
    paths="${stdlib#/}"; \
    case "$dynload/" in "$stdlib"/*) ;; *) paths="$paths ${dynload#/}";; esac; \
    if [ -d "/etc/python$pyver" ]; then paths="$paths etc/python$pyver"; fi; \
    tar -C / -cf - \
      --exclude=__pycache__ --exclude='*.pyc' --exclude=site-packages --exclude=dist-packages \
      --exclude=test --exclude=tests --exclude=idle_test --exclude=idlelib --exclude=tkinter \
      --exclude=turtledemo --exclude=turtle.py --exclude=ensurepip --exclude=lib2to3 \
      --exclude=pydoc_data --exclude=distutils --exclude='config-*' --exclude=EXTERNALLY-MANAGED \
      --exclude='_tkinter.*' --exclude='_curses*' --exclude='readline.*' --exclude='_dbm.*' \
      --exclude='_gdbm.*' --exclude='_sqlite3.*' --exclude=sqlite3 --exclude=dbm \
      --exclude='_ssl.*' --exclude='_hashlib.*' --exclude='nis.*' --exclude='_crypt.*' \
      $paths | tar -C /rootfs -xf -; \
    { echo "$py"; find /rootfs -type f \( -name '*.so' -o -name '*.so.*' \); } > /tmp/elves; \
    while read -r f; do ldd "$f"; done < /tmp/elves > /tmp/ldd.txt 2>&1; \
    if grep 'not found' /tmp/ldd.txt; then echo "build: missing shared libraries" >&2; exit 1; fi; \
    awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' /tmp/ldd.txt | sort -u > /tmp/libs; \
    xargs cp -L --parents -t /rootfs < /tmp/libs; \
    xargs -n 1 dirname < /tmp/libs | sort -u > /rootfs/etc/ld.so.conf; \
    ldconfig -r /rootfs; \
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n' \
      > /rootfs/etc/passwd; \
    printf 'root:x:0:\nnogroup:x:65534:\n' > /rootfs/etc/group; \
    sed -i "1s|^#!.*|#!$py -I|" /rootfs/usr/local/bin/sockdebug-agent; \
    python3 -m compileall -q -j 0 --invalidation-mode unchecked-hash -s /rootfs -p / \
      "/rootfs${stdlib}" /rootfs/usr/local/lib >/dev/null; \
    chroot /rootfs "$py" -I -c 'import sockdebug_agent, psutil, ctypes, json, socket, argparse, hashlib, random; hashlib.sha256()'; \
    if chroot /rootfs "$py" -I -c 'import sockdebug_plugin' 2>/dev/null; then echo "build: plugin in image" >&2; exit 1; fi; \
    chroot /rootfs /usr/local/bin/sockdebug-agent --version | tee /tmp/version; \
    grep -qF "$VERSION" /tmp/version || { echo "build: --version does not say $VERSION" >&2; exit 1; }; \
    du -sh /rootfs

FROM scratch
ARG VERSION=0.1.0
COPY --from=build /rootfs/ /
# PATH for `kubectl debug ... -- sockdebug-agent ...` style commands; the
# PYTHON* variables matter only when python3 is run directly: the entrypoint
# runs `python3 -I`, which ignores them and never writes bytecode because every
# module is precompiled.
ENV PATH=/usr/local/bin:/usr/bin:/bin \
    LANG=C.UTF-8 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
LABEL org.opencontainers.image.title="sockdebug-agent" \
      org.opencontainers.image.description="sockdebug agent: ss-grade socket inspection streamed as JSON Lines" \
      org.opencontainers.image.source="https://github.com/sockdebug/sockdebug" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# Root by default: attributing sockets to processes of other users needs
# CAP_SYS_PTRACE (or the same uid).  Any uid works, with owners left out.
USER 0:0
ENTRYPOINT ["/usr/local/bin/sockdebug-agent"]
CMD ["sockets", "-tulp"]
