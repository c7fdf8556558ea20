# sockdebug images.  Everything works offline (no container registry): the
# base image comes from Debian packages, the agent's wheels are built on the
# host.  See docs/image.md.
#
#   make image        the agent image sockdebug-agent:$(VERSION)
#   make images       agent + test images (sockdebug-testapp:$(VERSION))
#   make base-image   (re)build the Debian base sockdebug-base:bookworm
#   make test-image   build the images and run tests/integration/test_image.py
#   make bench-image  image size and docker-run-to-first-record time
#
# BASE_IMAGE=python:3.11-slim-bookworm make image   uses a registry base instead.

SHELL := /bin/bash
PYTHON ?= python3

.PHONY: image images base-image docker test-image bench-image clean-images

docker:
	scripts/ensure-docker

image: docker
	scripts/build-images agent

images: docker
	scripts/build-images all

base-image: docker
	scripts/build-images base

test-image: images
	$(PYTHON) -m pytest -m docker tests/integration/test_image.py -v

bench-image: docker
	$(PYTHON) bench/image_start.py

clean-images:
	-docker image rm sockdebug-agent:$$(scripts/build-images --print-version) \
	  sockdebug-testapp:$$(scripts/build-images --print-version)
