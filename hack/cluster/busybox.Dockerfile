# A tiny general-purpose test image, built offline: Debian's static busybox FROM scratch.
# Build context: a directory holding /bin/busybox (hack/local-cluster does this).
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
USER 65534:65534
ENTRYPOINT []
CMD ["/bin/sh"]
